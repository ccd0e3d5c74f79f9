//! The policy's JSON Schema against the parser: the shipped schema is the
//! one the types generate, every shipped policy passes both, and broken
//! policies fail both, except the rules across fields that only the parser
//! can check (listed as such below).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::policy::json_schema_text;
use agentward_core::Policy;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("policies/agentward.schema.json")).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    })
}

fn schema_errors(policy: &Value) -> Vec<String> {
    validator()
        .iter_errors(policy)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn parses(policy: &Value) -> Result<Policy, String> {
    Policy::parse(policy.to_string().as_bytes()).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_schema_is_the_one_the_types_generate() {
    let shipped =
        std::fs::read_to_string(root().join("policies/agentward.schema.json")).unwrap_or_default();
    assert!(
        shipped == json_schema_text(),
        "policies/agentward.schema.json is stale: run `cargo xtask schema`"
    );
}

/// The policy documents inside an Envoy config: each
/// `google.protobuf.StringValue`'s `value: |` block.
fn embedded_policies(config: &str) -> Vec<Value> {
    let lines: Vec<&str> = config.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut policies = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "value: |"
            || i == 0
            || !lines[i - 1].contains("google.protobuf.StringValue")
        {
            continue;
        }
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
            .copied()
            .collect();
        policies.push(serde_json::from_str(&block.join("\n")).unwrap());
    }
    policies
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_policy_passes_the_schema_and_the_parser() {
    let mut shipped: Vec<(String, Value)> = Vec::new();
    let mut documents = Vec::new();
    files(&root().join("policies"), "json", &mut documents);
    for path in documents {
        // The schemas, and policy test files written as JSON, are not policies.
        let name = path.to_string_lossy();
        if name.ends_with(".schema.json") || name.ends_with(".tests.json") {
            continue;
        }
        let policy: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            policy["$schema"],
            "./agentward.schema.json",
            "{} points at the schema",
            path.display()
        );
        shipped.push((path.display().to_string(), policy));
    }
    let mut configs = Vec::new();
    files(&root().join("envoy"), "yaml", &mut configs);
    files(&root().join("examples"), "yaml", &mut configs);
    for path in configs {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, policy) in embedded_policies(&text).into_iter().enumerate() {
            shipped.push((format!("{} #{i}", path.display()), policy));
        }
    }
    assert!(shipped.len() >= 9, "{} policies found", shipped.len());
    for (name, policy) in &shipped {
        let errors = schema_errors(policy);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        parses(policy).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn base() -> Value {
    json!({
        "$schema": "./agentward.schema.json",
        "resource": "https://api.example.com",
        "issuers": [{
            "issuer": "https://idp.example.com/",
            "audiences": ["https://api.example.com"],
            "jwks_uri": "https://idp.example.com/jwks.json",
            "jwks_cluster": "idp"
        }],
        "routes": [
            {"match": {"methods": ["GET"], "path": "/orders/{id}"}, "scopes": ["orders:read"]},
            {"match": {"methods": ["POST"], "path": "/mcp"}, "scopes": ["mcp"],
             "mcp": {"tools": {"place_order": {"scopes": ["trade"]}, "get_quote": {}},
                     "unlisted_tools": "deny"}},
            {"match": {"path": "/broker/portfolio"},
             "exchange": {"connection": "stocktrade", "audience": "https://broker", "scopes": ["stocks:read"]}}
        ],
        "vault": {"cluster": "vault", "client_id": "gateway", "client_secret_env": "VAULT_SECRET"}
    })
}

/// `base()` with `value` at the JSON pointer `at` (`None`: removed).
fn with(at: &str, value: Option<Value>) -> Value {
    let mut v = base();
    let (parent, key) = at.rsplit_once('/').unwrap();
    let target = v.pointer_mut(parent).unwrap_or_else(|| panic!("{at}"));
    match (target, value) {
        (Value::Object(o), Some(value)) => {
            o.insert(key.to_string(), value);
        }
        (Value::Object(o), None) => {
            o.remove(key);
        }
        (Value::Array(a), Some(value)) => a[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{at}"),
    }
    v
}

#[test]
fn good_policies_pass_both() {
    let cases = [
        ("base", base()),
        ("no $schema", with("/$schema", None)),
        ("inline jwks", {
            let mut v = with("/issuers/0/jwks_uri", None);
            // The P-256 base point: a valid public key.
            v["issuers"][0]["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "g",
                "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
                "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]});
            v["issuers"][0]
                .as_object_mut()
                .unwrap()
                .remove("jwks_cluster");
            v
        }),
        (
            "unmatched authenticated",
            with("/unmatched", Some(json!("authenticated"))),
        ),
        (
            "algorithms",
            with(
                "/issuers/0/algorithms",
                Some(json!(["PS256", "EdDSA", "ES384"])),
            ),
        ),
        ("root path", with("/routes/0/match/path", Some(json!("/")))),
        (
            "two parameters",
            with(
                "/routes/0/match/path",
                Some(json!("/users/{user}/docs/{doc_1}")),
            ),
        ),
        (
            "unlisted tools allowed",
            with("/routes/1/mcp/unlisted_tools", Some(json!("allow"))),
        ),
        (
            "auth0 dialect",
            with("/vault/dialect", Some(json!("auth0"))),
        ),
    ];
    for (name, policy) in cases {
        let errors = schema_errors(&policy);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        parses(&policy).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn broken_policies_fail_the_schema_and_the_parser() {
    let cases = [
        (
            "unknown top-level field",
            with("/resources", Some(json!("x"))),
        ),
        (
            "unknown issuer field",
            with("/issuers/0/audience", Some(json!("x"))),
        ),
        (
            "unknown route field",
            with("/routes/0/relationships", Some(json!({}))),
        ),
        (
            "an fga rule's unknown principal",
            with("/routes/0/fga", Some(json!({"principal": "nobody"}))),
        ),
        (
            "an fga section without a store",
            with("/fga", Some(json!({"cluster": "vault"}))),
        ),
        (
            "old flat connection",
            with("/routes/2/connection", Some(json!("stocktrade"))),
        ),
        (
            "unknown exchange field",
            with("/routes/2/exchange/upstream_scopes", Some(json!([]))),
        ),
        (
            "unknown mcp field",
            with("/routes/1/mcp/tool", Some(json!({}))),
        ),
        (
            "unknown tool field",
            with("/routes/1/mcp/tools/get_quote/approval", Some(json!({}))),
        ),
        ("wrong type: resource", with("/resource", Some(json!(42)))),
        (
            "wrong type: audiences",
            with("/issuers/0/audiences", Some(json!("https://api"))),
        ),
        (
            "wrong type: public",
            with("/routes/0/public", Some(json!("yes"))),
        ),
        ("wrong type: $schema", with("/$schema", Some(json!(1)))),
        (
            "HS256",
            with("/issuers/0/algorithms", Some(json!(["HS256"]))),
        ),
        ("none", with("/issuers/0/algorithms", Some(json!(["none"])))),
        (
            "no algorithms",
            with("/issuers/0/algorithms", Some(json!([]))),
        ),
        ("missing resource", with("/resource", None)),
        ("missing issuers", with("/issuers", None)),
        ("no issuers", with("/issuers", Some(json!([])))),
        ("missing audiences", with("/issuers/0/audiences", None)),
        (
            "empty audience",
            with("/issuers/0/audiences", Some(json!([""]))),
        ),
        (
            "missing exchange connection",
            with("/routes/2/exchange/connection", None),
        ),
        (
            "empty exchange connection",
            with("/routes/2/exchange/connection", Some(json!(""))),
        ),
        ("missing vault client_id", with("/vault/client_id", None)),
        (
            "relative resource",
            with("/resource", Some(json!("api.example.com"))),
        ),
        (
            "clock skew over 300",
            with("/clock_skew_seconds", Some(json!(301))),
        ),
        (
            "negative clock skew",
            with("/clock_skew_seconds", Some(json!(-1))),
        ),
        (
            "zero jwks timeout",
            with("/issuers/0/jwks_timeout_ms", Some(json!(0))),
        ),
        (
            "zero vault timeout",
            with("/vault/timeout_ms", Some(json!(0))),
        ),
        (
            "tiny max_token_bytes",
            with("/identity", Some(json!({"max_token_bytes": 10}))),
        ),
        (
            "too many held",
            with("/identity", Some(json!({"max_held_requests": 100001}))),
        ),
        (
            "remove_authorization",
            with("/identity", Some(json!({"remove_authorization": true}))),
        ),
        (
            "upper-case token header",
            with("/identity", Some(json!({"token_header": "X-Token"}))),
        ),
        (
            "lower-case method",
            with("/routes/0/match/methods", Some(json!(["get"]))),
        ),
        ("unmatched allow", with("/unmatched", Some(json!("allow")))),
        (
            "unlisted tools maybe",
            with("/routes/1/mcp/unlisted_tools", Some(json!("maybe"))),
        ),
        ("dialect", with("/vault/dialect", Some(json!("oauth")))),
        (
            "relative path",
            with("/routes/0/match/path", Some(json!("orders/{id}"))),
        ),
        (
            "empty parameter",
            with("/routes/0/match/path", Some(json!("/orders/{}"))),
        ),
        (
            "parameter not a whole segment",
            with("/routes/0/match/path", Some(json!("/orders/x{id}"))),
        ),
        (
            "parameter not an identifier",
            with("/routes/0/match/path", Some(json!("/orders/{1d}"))),
        ),
        (
            "unclosed parameter",
            with("/routes/0/match/path", Some(json!("/orders/{id"))),
        ),
        (
            "double slash",
            with("/routes/0/match/path", Some(json!("/orders//{id}"))),
        ),
        (
            "query in path",
            with("/routes/0/match/path", Some(json!("/orders?x=1"))),
        ),
        (
            "parameter in prefix",
            with("/routes/0/match/path_prefix", Some(json!("/orders/{id}"))),
        ),
        (
            "scope with a space",
            with("/routes/0/scopes", Some(json!(["a b"]))),
        ),
        (
            "tool scope with a space",
            with("/routes/1/mcp/tools/get_quote/scopes", Some(json!(["a b"]))),
        ),
        (
            "exchange scope with a quote",
            with("/routes/2/exchange/scopes", Some(json!(["a\"b"]))),
        ),
        (
            "bad tool name",
            with("/routes/1/mcp/tools/place order", Some(json!({}))),
        ),
        (
            "bad secret env name",
            with("/vault/client_secret_env", Some(json!("1SECRET"))),
        ),
        (
            "token path",
            with("/vault/token_path", Some(json!("oauth/token"))),
        ),
        (
            "inline jwks without keys",
            with("/issuers/0/jwks", Some(json!({"kid": "x"}))),
        ),
    ];
    for (name, policy) in cases {
        assert!(
            !schema_errors(&policy).is_empty(),
            "the schema accepts {name}"
        );
        assert!(parses(&policy).is_err(), "the parser accepts {name}");
    }
}

/// Rules across fields (or beyond a pattern) that the schema does not
/// express: the schema accepts these, the parser refuses them.
#[test]
fn parser_only_rules_are_refused_by_the_parser() {
    let cases = [
        (
            "jwks and jwks_uri",
            with("/issuers/0/jwks", Some(json!({"keys": []}))),
        ),
        (
            "an fga rule without the fga section",
            with("/routes/0/fga", Some(json!({}))),
        ),
        (
            "neither jwks nor jwks_uri",
            with("/issuers/0/jwks_uri", None),
        ),
        (
            "jwks_uri without a cluster",
            with("/issuers/0/jwks_cluster", None),
        ),
        ("inline jwks with a bad key", {
            let mut v = with("/issuers/0/jwks_uri", None);
            v["issuers"][0]["jwks"] = json!({"keys": [{"kty": "EC"}]});
            v
        }),
        (
            "max_header_bytes over max_token_bytes",
            with(
                "/identity",
                Some(json!({"max_token_bytes": 100, "max_header_bytes": 200})),
            ),
        ),
        (
            "claim header is x-agentward-*",
            with(
                "/identity",
                Some(json!({"claim_to_headers": [{"claim": "org", "header": "x-agentward-sub"}]})),
            ),
        ),
        (
            "claim header is authorization",
            with(
                "/identity",
                Some(json!({"claim_to_headers": [{"claim": "org", "header": "authorization"}]})),
            ),
        ),
        ("exchange without vault", with("/vault", None)),
        (
            "exchange with forward_token",
            with("/routes/2/forward_token", Some(json!(true))),
        ),
        (
            "scopes on a public route",
            with("/routes/0/public", Some(json!(true))),
        ),
        ("tool scopes on a public route", {
            let mut v = with("/routes/1/public", Some(json!(true)));
            v["routes"][1]["scopes"] = json!([]);
            v
        }),
        (
            "parameter named twice",
            with("/routes/0/match/path", Some(json!("/{id}/x/{id}"))),
        ),
        (
            "dot segment",
            with("/routes/0/match/path", Some(json!("/orders/../{id}"))),
        ),
        (
            "encoded letter",
            with("/routes/0/match/path_prefix", Some(json!("/%61pi"))),
        ),
        (
            "both vault secrets",
            with("/vault/client_secret", Some(json!("s"))),
        ),
        ("no vault secret", with("/vault/client_secret_env", None)),
    ];
    for (name, policy) in cases {
        let errors = schema_errors(&policy);
        assert!(
            errors.is_empty(),
            "{name} is no longer parser-only: {errors:?}"
        );
        assert!(parses(&policy).is_err(), "the parser accepts {name}");
    }
}
