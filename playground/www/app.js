// The agentward policy playground. The decisions are the plugins' own
// (agentward-core in WebAssembly: run, validate); this file only reads the
// form, signs test tokens with a key made in this page (WebCrypto, ES256),
// shows what came out and keeps the state in the URL fragment.
import init, { run, validate, example_policy } from "./agentward_playground.js";

const $ = (id) => document.getElementById(id);
const KID = "agentward-playground";
const DEFAULT_CLAIMS = { sub: "alice", azp: "trading-agent", scope: "portfolio:read trade research:read" };
const JSON_HEADERS = { "content-type": "application/json" };

// Requests for the stock-trade policy, each with the answers that make it interesting.
const EXAMPLES = {
  "portfolio": { label: "Read the portfolio", method: "GET", path: "/portfolio" },
  "big-trade": {
    label: "A big trade, held for approval", method: "POST", path: "/trades", headers: JSON_HEADERS,
    body: { ticker: "ACME", qty: 50 }, approval: "approved",
  },
  "deferred-order": {
    label: "A big order, deferred (202)", method: "POST", path: "/orders", headers: JSON_HEADERS,
    body: { ticker: "ACME", qty: 25 }, approval: "approved",
  },
  "broker": { label: "Broker API through the token vault", method: "GET", path: "/broker/portfolio", exchange: "token" },
  "rag": {
    label: "RAG search, cut to what alice may read", method: "POST", path: "/research/search", headers: JSON_HEADERS,
    body: { query: "outlook" }, fga: ["user:alice can_read document:1", "user:alice can_read document:3"],
    upstream: { results: [{ id: "1", title: "Outlook 2027" }, { id: "2", title: "Board minutes" }, { id: "3", title: "Sector notes" }] },
  },
  "tools-list": {
    label: "MCP tools/list for alice's agent", method: "POST", path: "/mcp",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: { jsonrpc: "2.0", id: 1, method: "tools/list" },
    fga: ["user:alice can_use tool:get-quote", "agent:trading-agent can_use tool:get-quote", "user:alice can_use tool:wire-funds"],
    upstream: { jsonrpc: "2.0", id: 1, result: { tools: [{ name: "get-quote" }, { name: "place-trade" }, { name: "wire-funds" }] } },
  },
  "tools-call": {
    label: "MCP tools/call of a tool the agent may not use", method: "POST", path: "/mcp",
    headers: { "content-type": "application/json", "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "wire-funds" },
    body: { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "wire-funds", arguments: { amount: 5000 } } },
    fga: ["user:alice can_use tool:wire-funds"],
  },
};

let key = null; // { privateKey, jwk }
let timer = null;

const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const utf8 = (text) => new TextEncoder().encode(text);

async function makeKey() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  return { privateKey: pair.privateKey, jwk: { kty, crv, x, y, kid: KID, alg: "ES256", use: "sig" } };
}

/** A compact JWS of `claims` with the page's key; iss/aud/iat/exp from the policy's first issuer unless given. */
async function mint(claims, policy) {
  const issuer = (policy.issuers || [])[0] || {};
  const now = Math.floor(Date.now() / 1000);
  const full = { iss: issuer.issuer, aud: (issuer.audiences || [])[0], iat: now, exp: now + 300, ...claims };
  const input = b64url(utf8(JSON.stringify({ alg: "ES256", typ: "JWT", kid: KID }))) + "." + b64url(utf8(JSON.stringify(full)));
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey, utf8(input));
  return input + "." + b64url(signature);
}

const pretty = (text) => {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
};
const asText = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

function state() {
  return {
    policy: $("policy").value,
    plugins: [...document.querySelectorAll("input[name=plugin]:checked")].map((c) => c.value),
    caller: document.querySelector("input[name=caller]:checked").value,
    claims: $("claims").value,
    token: document.querySelector("input[name=caller]:checked").value === "token" ? $("token").value : "",
    method: $("method").value, path: $("path").value, headers: $("headers").value, body: $("body").value,
    fga: $("fga").value, approval: $("approval").value, exchange: $("exchange").value,
    upstreamStatus: $("upstream-status").value, upstreamBody: $("upstream-body").value,
  };
}

function restore(s) {
  $("policy").value = s.policy;
  for (const c of document.querySelectorAll("input[name=plugin]")) c.checked = s.plugins.includes(c.value);
  for (const r of document.querySelectorAll("input[name=caller]")) r.checked = r.value === s.caller;
  $("claims").value = s.claims; $("token").value = s.token || "";
  $("method").value = s.method; $("path").value = s.path; $("headers").value = s.headers; $("body").value = s.body;
  $("fga").value = s.fga; $("approval").value = s.approval; $("exchange").value = s.exchange;
  $("upstream-status").value = s.upstreamStatus; $("upstream-body").value = s.upstreamBody;
}

function example(name) {
  const e = EXAMPLES[name];
  $("method").value = e.method; $("path").value = e.path;
  $("headers").value = e.headers ? JSON.stringify(e.headers) : "{}";
  $("body").value = e.body ? JSON.stringify(e.body) : "";
  $("fga").value = (e.fga || []).join("\n");
  $("approval").value = e.approval || "";
  $("exchange").value = e.exchange || "token";
  $("upstream-status").value = "200";
  $("upstream-body").value = JSON.stringify(e.upstream || { ok: true });
}

// The state in the fragment: deflated JSON, base64url ("z."), or plain ("j.").
async function encode(s) {
  const json = JSON.stringify(s);
  if (typeof CompressionStream === "undefined") return "j." + b64url(utf8(json));
  const stream = new Blob([json]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  return "z." + b64url(await new Response(stream).arrayBuffer());
}

async function decode(fragment) {
  const [kind, data] = [fragment.slice(0, 2), fragment.slice(2)];
  const bytes = Uint8Array.from(atob(data.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  if (kind === "j.") return JSON.parse(new TextDecoder().decode(bytes));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return JSON.parse(await new Response(stream).text());
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function list(items, cls) {
  const ul = el("ul", undefined, cls);
  for (const item of items) ul.append(el("li", item));
  return ul;
}

/**
 * Where each value of a JSON text starts and ends, by its path as the
 * plugins name fields (`routes[1].scopes`): a small scanner over text that
 * JSON.parse has already accepted.
 */
function locate(text) {
  const spans = new Map();
  let i = 0;
  const ws = () => { while (/\s/.test(text[i])) i++; };
  const string = () => { const start = i++; while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1; i++; return JSON.parse(text.slice(start, i)); };
  const value = (path) => {
    ws();
    const start = i;
    if (text[i] === "{") {
      i++; ws();
      while (text[i] !== "}") {
        ws(); const key = string(); ws(); i++; // the colon
        value(path ? `${path}.${key}` : key); ws();
        if (text[i] === ",") i++; ws();
      }
      i++;
    } else if (text[i] === "[") {
      i++; ws();
      for (let n = 0; text[i] !== "]"; n++) {
        value(`${path}[${n}]`); ws();
        if (text[i] === ",") i++; ws();
      }
      i++;
    } else if (text[i] === '"') {
      string();
    } else {
      while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
    }
    spans.set(path, [start, i]);
  };
  value("");
  return spans;
}

/** The text span of `field` (or of the nearest enclosing field that exists). */
function spanOf(spans, field) {
  for (let path = field; path; path = path.replace(/(\.[^.[\]]*|\[\d+\])$/, "")) {
    if (spans.has(path)) return spans.get(path);
    if (!/[.[]/.test(path)) break;
  }
  return spans.get(field.split(/[.[]/)[0]) || null;
}

function showProblems(problems) {
  const ul = $("policy-errors");
  ul.replaceChildren();
  const text = $("policy").value;
  let spans = new Map();
  try { spans = locate(text); } catch { /* the errors still show, unplaced */ }
  for (const p of problems) {
    const li = el("li");
    const span = p.field ? spanOf(spans, p.field) : null;
    if (span) {
      const line = text.slice(0, span[0]).split("\n").length;
      const link = el("a", `line ${line}`);
      link.href = "#";
      link.addEventListener("click", (e) => {
        e.preventDefault();
        $("policy").focus();
        $("policy").setSelectionRange(span[0], span[1]);
      });
      li.append(link, " ");
    }
    if (p.field) li.append(el("code", p.field), ": ");
    li.append(`${p.message} (${p.by})`);
    ul.append(li);
  }
  $("policy").setAttribute("aria-invalid", problems.length ? "true" : "false");
}

function showOutput(out) {
  const response = out.response;
  const answer = $("answer");
  if (!response) {
    answer.textContent = "No decision: the policy has errors.";
    answer.className = "answer refused";
    $("answer-body").textContent = "";
  } else {
    const by = response.by === "upstream" ? "the upstream" : response.by;
    answer.textContent = `${response.status} from ${by}`;
    answer.className = "answer " + (response.status === 202 ? "waiting" : response.status < 400 ? "ok" : "refused");
    const headers = response.headers.filter(([n]) => n !== "content-type").map(([n, v]) => `${n}: ${v}`);
    $("answer-body").textContent = (headers.length ? headers.join("\n") + "\n\n" : "") + pretty(response.body);
  }
  const rows = $("decisions").tBodies[0];
  rows.replaceChildren();
  const ran = new Set(out.plugins.map((p) => p.plugin));
  for (const p of out.plugins) {
    const tr = el("tr", undefined, p.outcome);
    tr.dataset.plugin = p.plugin;
    const edits = [...p.set.map(([n, v]) => `+ ${n}: ${v}`), ...p.removed.map((n) => `− ${n}`)];
    if (p.response) edits.push(`answer: ${p.response}`);
    tr.append(el("td", p.plugin), el("td", p.verdict), el("td", p.outcome));
    const h = el("td"); h.append(list(edits)); tr.append(h);
    const c = el("td"); c.append(list(p.callouts)); tr.append(c);
    rows.append(tr);
  }
  for (const name of state().plugins.filter((n) => !ran.has(n))) {
    const tr = el("tr", undefined, "skipped");
    tr.append(el("td", name), el("td", "—"), el("td", "not reached"), el("td"), el("td"));
    rows.append(tr);
  }
  $("binding-message").textContent = out.binding_message || "(no approval asked)";
  const up = out.upstream;
  $("upstream-request").textContent = up
    ? `${up.method} ${up.path}\n${Object.entries(up.headers).map(([n, v]) => `${n}: ${v}`).join("\n")}\n\n${up.body}`
    : "(the request did not reach the upstream)";
  $("callouts").replaceChildren(...out.callouts.map((c) => el("li", c)));
  $("unanswered").replaceChildren(...out.unanswered.map((u) => el("li", `no answer (reset): ${u}`)));
}

function parseJson(text, what, fallback) {
  if (!text.trim()) return fallback;
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not JSON: ${e.message}`); }
}

async function update() {
  const s = state();
  let policy;
  try {
    policy = JSON.parse(s.policy);
  } catch (e) {
    showProblems([{ field: "", message: `not JSON: ${e.message}`, by: "json" }]);
    $("status").textContent = "The policy is not JSON.";
    return;
  }
  const problems = JSON.parse(validate(s.policy, JSON.stringify(s.plugins)));
  showProblems(problems);
  try {
    const headers = parseJson(s.headers, "Headers", {});
    let token = null;
    if (s.caller === "claims") {
      token = await mint(parseJson(s.claims, "Claims", {}), policy);
      $("token").value = token;
    } else if (s.caller === "token") {
      token = s.token.trim();
    }
    if (token) headers.authorization = `Bearer ${token}`;
    const sub = s.caller === "claims" ? parseJson(s.claims, "Claims", {}).sub : "user";
    const input = {
      policy, plugins: s.plugins,
      request: { method: s.method, path: s.path, headers, body: s.body },
      jwks: { keys: [key.jwk] },
      fga: s.fga.split("\n").map((l) => l.trim()).filter(Boolean),
      approval: s.approval || null,
      exchange: s.exchange === "token" ? { access_token: `upstream-token-of-${sub}` }
        : s.exchange ? { error: s.exchange } : null,
      upstream: { status: Number(s.upstreamStatus) || 200, headers: JSON_HEADERS, body: s.upstreamBody },
      now_ms: Date.now(),
      proof_key: b64hex(crypto.getRandomValues(new Uint8Array(16))),
    };
    const out = JSON.parse(run(JSON.stringify(input)));
    if (out.errors.length && !problems.length) showProblems(out.errors);
    showOutput(out);
    $("status").textContent = problems.length ? "The policy has errors: no plugin would start." : "Decided.";
  } catch (e) {
    $("status").textContent = e.message;
  }
  const fragment = await encode(s);
  history.replaceState(null, "", "#" + fragment);
  $("share").href = "#" + fragment;
}

function b64hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(update, 120);
}

async function main() {
  await init();
  key = await makeKey();
  const select = $("example");
  for (const [name, e] of Object.entries(EXAMPLES)) select.append(new Option(e.label, name));
  let restored = false;
  if (location.hash.length > 3) {
    try {
      restore(await decode(location.hash.slice(1)));
      restored = true;
    } catch {
      $("status").textContent = "The link's state could not be read; starting from the example.";
    }
  }
  if (!restored) {
    $("policy").value = JSON.stringify(JSON.parse(example_policy()), null, 2);
    $("claims").value = JSON.stringify(DEFAULT_CLAIMS, null, 1);
    example("portfolio");
  }
  select.addEventListener("change", () => { example(select.value); schedule(); });
  document.querySelector("#inputs").addEventListener("input", schedule);
  document.querySelector("#inputs").addEventListener("change", schedule);
  await update();
  document.body.dataset.ready = "true";
}

main().catch((e) => { $("status").textContent = `The playground could not start: ${e.message}`; });
