"""Real clients against the vault's FGA API, started once per suite by
vault/tests/fga_conformance.rs:

1. conformance: every policies/*.fga.yaml through the real OpenFGA (`fga
   model test`, the CLI's embedded OpenFGA) and through the vault (`fga model
   transform` for the JSON model, then stores, model, tuples, check and
   list-objects over HTTP); the answers must be the same. The test files are
   read as the CLI reads them: `model` or `model_file`, `tuples`,
   `tuple_file(s)` (JSON, YAML, JSON lines, CSV), `user(s)` and `object(s)`
   per check; `list_users` tests are run by the CLI only (the vault has no
   list-users).
2. sdk: the Python `openfga-sdk` writes a model and tuples and runs check,
   batch-check and list-objects against the vault.
3. cli: the `fga` CLI as a client of the vault (`--api-url`, `--api-token`):
   store and model, tuples written and deleted, check with a contextual
   tuple, list-objects (Go clients send `null` for empty lists).

Usage: peer.py VAULT_URL KEY POLICIES_DIR FGA_BIN. Prints one line per
failure and `N passed, M failed` at the end; exits 1 on any failure.
"""

import csv
import glob
import json
import os
import subprocess
import sys
import tempfile

import requests
import yaml

VAULT, KEY, POLICIES, FGA = sys.argv[1:5]
HEADERS = {"Authorization": f"Bearer {KEY}"}
passed = 0
failed = []


def expect(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failed.append(what)
        print(f"FAIL {what}", flush=True)


def api(method, path, body=None):
    r = requests.request(method, VAULT + path, json=body, headers=HEADERS, timeout=30)
    if r.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json() if r.text else {}


def tuple_keys(entries):
    keys = []
    for t in entries or []:
        key = {"user": t["user"], "relation": t["relation"], "object": t["object"]}
        if t.get("condition"):
            key["condition"] = t["condition"]
        keys.append(key)
    return keys


def read_tuple_file(path):
    """The fga CLI's tuple files: JSON or YAML lists, JSON lines, CSV."""
    ext = os.path.splitext(path)[1]
    if ext == ".jsonl":
        return [json.loads(line) for line in open(path) if line.strip()]
    if ext == ".csv":
        out = []
        for r in csv.DictReader(open(path)):
            user = f"{r['user_type']}:{r['user_id']}"
            if r.get("user_relation"):
                user += f"#{r['user_relation']}"
            out.append({"user": user, "relation": r["relation"],
                        "object": f"{r['object_type']}:{r['object_id']}"})
        return out
    return yaml.safe_load(open(path)) or []


def tuples_of(spec, base):
    """`tuples` plus `tuple_file` / `tuple_files`, as the CLI reads them."""
    entries = list(spec.get("tuples") or [])
    files = ([spec["tuple_file"]] if spec.get("tuple_file") else []) + list(spec.get("tuple_files") or [])
    for f in files:
        entries += read_tuple_file(os.path.join(base, f))
    return tuple_keys(entries)


def load_model(spec, base):
    """`model` (inline DSL) or `model_file` (`.fga`, `fga.mod`, `.json`), as JSON."""
    if spec.get("model"):
        with tempfile.NamedTemporaryFile("w", suffix=".fga", delete=False) as f:
            f.write(spec["model"])
        path = f.name
    else:
        path = os.path.join(base, spec["model_file"])
    if path.endswith(".json"):
        return json.load(open(path))
    fmt = "modular" if path.endswith(".mod") else "fga"
    transform = subprocess.run([FGA, "model", "transform", "--input-format", fmt, "--file", path],
                               capture_output=True, text=True, check=True)
    return json.loads(transform.stdout)


def listed(entry, one, many):
    return [entry[one]] if entry.get(one) else list(entry.get(many) or [])


def conformance():
    files = sorted(glob.glob(os.path.join(POLICIES, "**", "*.fga.yaml"), recursive=True))
    expect(len(files) >= 1, f"no .fga.yaml in {POLICIES}")
    for path in files:
        try:
            conformance_of(path)
        except Exception as e:  # one file's error does not hide the others'
            expect(False, f"{os.path.basename(path)}: {e!r}")


def conformance_of(path):
    name = os.path.basename(path)
    base = os.path.dirname(path)
    # 1. The real OpenFGA must agree with the file's assertions.
    run = subprocess.run([FGA, "model", "test", "--tests", path], capture_output=True, text=True)
    expect(run.returncode == 0, f"{name}: fga model test failed:\n{run.stdout}{run.stderr}")
    spec = yaml.safe_load(open(path))
    model = load_model(spec, base)
    # 2. The vault must give the same answers: a store per test, as the CLI does.
    for test in spec.get("tests", []):
        label = f"{name} / {test.get('name', '?')}"
        store = api("POST", "/stores", {"name": f"conformance {test.get('name', '')}"[:64]})["id"]
        api("POST", f"/stores/{store}/authorization-models", model)
        keys = tuples_of(spec, base) + tuples_of(test, base)
        for i in range(0, len(keys), 100):
            api("POST", f"/stores/{store}/write", {"writes": {"tuple_keys": keys[i:i + 100]}})
        for c in test.get("check") or []:
            for user in listed(c, "user", "users"):
                for obj in listed(c, "object", "objects"):
                    for relation, want in c["assertions"].items():
                        body = {"tuple_key": {"user": user, "relation": relation, "object": obj}}
                        got = api("POST", f"/stores/{store}/check", body)["allowed"]
                        expect(got == want, f"{label}: check {user} {relation} {obj}: OpenFGA {want}, vault {got}")
        for lo in test.get("list_objects") or []:
            for relation, want in lo["assertions"].items():
                body = {"type": lo["type"], "relation": relation, "user": lo["user"]}
                got = api("POST", f"/stores/{store}/list-objects", body)["objects"]
                expect(sorted(got) == sorted(want or []),
                       f"{label}: list-objects {lo['user']} {relation} {lo['type']}: OpenFGA {sorted(want or [])}, vault {sorted(got)}")
        api("DELETE", f"/stores/{store}")


def sdk():
    from openfga_sdk.client import ClientConfiguration
    from openfga_sdk.client.models import (ClientBatchCheckItem, ClientBatchCheckRequest,
                                           ClientCheckRequest, ClientListObjectsRequest,
                                           ClientTuple, ClientWriteRequest)
    from openfga_sdk.credentials import CredentialConfiguration, Credentials
    from openfga_sdk.models.create_store_request import CreateStoreRequest
    from openfga_sdk.models.read_request_tuple_key import ReadRequestTupleKey
    from openfga_sdk.sync import OpenFgaClient

    model_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../policies/stock-trade-rag.fga")
    model = json.loads(subprocess.run([FGA, "model", "transform", "--file", model_file],
                                      capture_output=True, text=True, check=True).stdout)
    config = ClientConfiguration(
        api_url=VAULT,
        credentials=Credentials(method="api_token",
                                configuration=CredentialConfiguration(api_token=KEY)))
    with OpenFgaClient(config) as fga:
        store = fga.create_store(CreateStoreRequest(name="openfga-sdk"))
        fga.set_store_id(store.id)
        written = fga.write_authorization_model(model)
        fga.set_authorization_model_id(written.authorization_model_id)
        latest = fga.read_latest_authorization_model()
        expect(latest.authorization_model.id == written.authorization_model_id, "sdk: latest model")
        fga.write(ClientWriteRequest(writes=[
            ClientTuple(user="user:alice", relation="member", object="group:research"),
            ClientTuple(user="group:research#member", relation="viewer", object="folder:notes"),
            ClientTuple(user="folder:notes", relation="parent", object="document:nvda"),
            ClientTuple(user="folder:notes", relation="parent", object="document:amd"),
            ClientTuple(user="user:alice", relation="blocked", object="document:amd"),
            ClientTuple(user="user:bob", relation="viewer", object="document:tsla"),
            ClientTuple(user="organization:acme", relation="organization", object="tool:trade"),
            ClientTuple(user="agent:copilot", relation="allowed_agent", object="tool:trade"),
            ClientTuple(user="agent:copilot", relation="approved_agent", object="organization:acme"),
        ]))
        check = fga.check(ClientCheckRequest(user="user:alice", relation="can_read", object="document:nvda"))
        expect(check.allowed is True, "sdk: check alice can_read nvda")
        check = fga.check(ClientCheckRequest(user="user:alice", relation="can_read", object="document:amd"))
        expect(check.allowed is False, "sdk: check alice can_read amd (blocked)")
        check = fga.check(ClientCheckRequest(
            user="user:carol", relation="can_read", object="document:nvda",
            contextual_tuples=[ClientTuple(user="user:carol", relation="member", object="group:research")]))
        expect(check.allowed is True, "sdk: check with contextual tuples")
        batch = fga.batch_check(ClientBatchCheckRequest(checks=[
            ClientBatchCheckItem(user="user:alice", relation="can_read", object=f"document:{d}", correlation_id=d)
            for d in ["nvda", "amd", "tsla"]
        ] + [ClientBatchCheckItem(user="agent:copilot", relation="can_use", object="tool:trade", correlation_id="tool")]))
        answers = {r.correlation_id: r.allowed for r in batch.result}
        expect(answers == {"nvda": True, "amd": False, "tsla": False, "tool": True}, f"sdk: batch check {answers}")
        listed = fga.list_objects(ClientListObjectsRequest(user="user:alice", relation="can_read", type="document"))
        expect(sorted(listed.objects) == ["document:nvda"], f"sdk: list objects {listed.objects}")
        read = fga.read(ReadRequestTupleKey())
        expect(len(read.tuples) == 9, f"sdk: read {len(read.tuples)} tuples")
        fga.delete_store()


def cli():
    base = [FGA, "--api-url", VAULT, "--api-token", KEY]

    def fga(*args, store=None):
        cmd = base + (["--store-id", store] if store else []) + list(args)
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {run.stdout}{run.stderr}")
        return json.loads(run.stdout) if run.stdout.strip().startswith("{") else run.stdout

    model_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../policies/stock-trade-rag.fga")
    created = fga("store", "create", "--name", "fga-cli", "--model", model_file)
    store = created["store"]["id"]
    expect(len(created["model"]["authorization_model_id"]) == 26, f"cli: store create {created}")
    written = fga("tuple", "write", "user:alice", "viewer", "document:a", store=store)
    expect(len(written.get("successful", [])) == 1, f"cli: tuple write {written}")
    fga("tuple", "write", "user:alice", "blocked", "document:b", store=store)
    fga("tuple", "write", "user:alice", "viewer", "document:b", store=store)
    expect(fga("query", "check", "user:alice", "can_read", "document:a", store=store)["allowed"] is True, "cli: check a")
    expect(fga("query", "check", "user:alice", "can_read", "document:b", store=store)["allowed"] is False, "cli: check b")
    ctx = fga("query", "check", "user:bob", "can_read", "document:c",
              "--contextual-tuple", "user:bob viewer document:c", store=store)
    expect(ctx["allowed"] is True, f"cli: check with a contextual tuple {ctx}")
    listed = fga("query", "list-objects", "user:alice", "can_read", "document", store=store)
    expect(listed["objects"] == ["document:a"], f"cli: list-objects {listed}")
    fga("tuple", "delete", "user:alice", "viewer", "document:a", store=store)
    expect(fga("query", "check", "user:alice", "viewer", "document:a", store=store)["allowed"] is False, "cli: after delete")
    fga("store", "delete", "--force", store=store)


for part in (conformance, sdk, cli):
    try:
        part()
    except Exception as e:  # a client error is a failure, named
        failed.append(f"{part.__name__}: {e!r}")
        print(f"FAIL {part.__name__}: {e!r}", flush=True)
print(f"{passed} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
