//! Real peers for the integration tests: an ES256 issuer with a JWKS served
//! over HTTP, the oidc-provider upstream (node), and vault processes.
#![allow(dead_code)]

use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jwt_simple::prelude::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, Url};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ISSUER: &str = "https://idp.agentward.test/";
/// A second issuer, trusted beside [`ISSUER`] where a test configures it.
pub const OTHER_ISSUER: &str = "https://other-idp.agentward.test/";
pub const AUDIENCE: &str = "https://api.agentward.test";
pub const GATEWAY_ID: &str = "gateway";
pub const GATEWAY_SECRET: &str = "gateway-secret:with/odd chars";
pub const RESOURCE: &str = "https://api.stocktrade.test";
/// A client listed in `audit_readers`: reads every user's audit rows.
pub const AUDITOR_ID: &str = "auditor";
pub const AUDITOR_SECRET: &str = "auditor-secret";

/// Mints ES256 user tokens; its JWKS is served by a tiny HTTP server.
pub struct TestIssuer {
    key: ES256KeyPair,
    pub jwks_url: String,
    /// The `iss` of its tokens.
    pub issuer: String,
}

impl TestIssuer {
    pub async fn start() -> TestIssuer {
        TestIssuer::start_as(ISSUER).await
    }

    /// An issuer whose tokens carry `iss` = `issuer`, with a key of its own.
    pub async fn start_as(issuer: &str) -> TestIssuer {
        let key = ES256KeyPair::generate().with_key_id("test-key-1");
        let point = key.public_key().public_key().to_bytes_uncompressed();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test-key-1",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]})
        .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/jwks.json", get(move || async move { jwks }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestIssuer {
            key,
            jwks_url: format!("http://127.0.0.1:{port}/jwks.json"),
            issuer: issuer.to_string(),
        }
    }

    /// The vault's `[[issuers]]` entry for this issuer.
    pub fn config(&self) -> String {
        format!(
            "\n[[issuers]]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"ES256\"]\njwks_uri = \"{}\"\n",
            self.issuer, self.jwks_url
        )
    }

    /// A user token for `sub`, issued to agent `azp`, for the API
    /// (`AUDIENCE`): what the gateway passes in a token exchange.
    pub fn token(&self, sub: &str, azp: &str) -> String {
        self.token_for(sub, azp, AUDIENCE)
    }

    /// A user token for `sub`, issued to `azp`, for audience `aud` (the
    /// vault's own URL for its user-facing endpoints).
    pub fn token_for(&self, sub: &str, azp: &str, aud: &str) -> String {
        let mut custom = BTreeMap::new();
        custom.insert("azp".to_string(), azp.to_string());
        let claims =
            Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_mins(10))
                .with_issuer(&self.issuer)
                .with_audience(aud)
                .with_subject(sub);
        self.key.sign(claims).unwrap()
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private CA and a server certificate it signed for `127.0.0.1` and
/// `localhost`, as PEM files in a test folder.
pub struct TestCa {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn generate(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agentward test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca = TestCa {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
        };
        std::fs::write(&ca.ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&ca.cert_file, leaf.pem()).unwrap();
        std::fs::write(&ca.key_file, leaf_key.serialize_pem()).unwrap();
        ca
    }

    /// A test client that trusts this CA.
    pub fn client(&self) -> Client {
        let pem = std::fs::read(&self.ca_file).unwrap();
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }
}

/// The oidc-provider upstream.
pub struct Upstream {
    child: Child,
    pub url: String,
    /// A client that reaches it (trusting its CA when it serves HTTPS).
    http: Client,
}

impl Upstream {
    pub fn start(redirect_uris: &[String], access_token_ttl: u64) -> Upstream {
        Upstream::start_with(redirect_uris, access_token_ttl, None)
    }

    /// The upstream over HTTPS with a certificate from `tls` when given.
    pub fn start_with(
        redirect_uris: &[String],
        access_token_ttl: u64,
        tls: Option<&TestCa>,
    ) -> Upstream {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
        assert!(
            peers.join("node_modules/oidc-provider").exists(),
            "run `npm install` in {} first",
            peers.display()
        );
        let mut config = serde_json::json!({
            "client_id": "vault", "client_secret": "vault-secret",
            "redirect_uris": redirect_uris, "access_token_ttl": access_token_ttl,
        });
        if let Some(ca) = tls {
            config["tls_cert_file"] = ca.cert_file.display().to_string().into();
            config["tls_key_file"] = ca.key_file.display().to_string().into();
        }
        let mut child = Command::new("node")
            .arg("oidc-upstream.mjs")
            .current_dir(&peers)
            .env("PEER_CONFIG", config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .expect("peer did not start")
            .to_string();
        let (scheme, http) = match tls {
            Some(ca) => ("https", ca.client()),
            None => ("http", self::http()),
        };
        Upstream {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            http,
        }
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/_test/stats", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Successful grants of a type (`refresh_token`, `authorization_code`).
    pub async fn grants(&self, grant_type: &str) -> u64 {
        self.stats().await["grants"][grant_type]
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn refused(&self, grant_type: &str) -> u64 {
        self.stats().await["refused"][grant_type]
            .as_u64()
            .unwrap_or(0)
    }

    /// Grants of `account` that still exist at the provider.
    pub async fn live_grants(&self, account: &str) -> u64 {
        let r = self
            .http
            .get(format!("{}/_test/grants?account={account}", self.url))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()["live"]
            .as_u64()
            .unwrap()
    }

    pub async fn revoke(&self, account: &str) {
        let r = self
            .http
            .post(format!("{}/_test/revoke?account={account}", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `agentward-vault` process.
pub struct VaultProcess {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

pub struct VaultSettings<'a> {
    pub port: u16,
    pub database_url: String,
    pub database_schema: Option<String>,
    pub dir: &'a Path,
    pub jwks_url: &'a str,
    pub upstream_url: &'a str,
    pub refresh_margin: u64,
    pub name: &'a str,
    /// The vault's `ca_file`.
    pub ca_file: Option<&'a Path>,
}

pub const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

impl VaultProcess {
    pub async fn start(s: VaultSettings<'_>) -> VaultProcess {
        VaultProcess::start_with(s, "", "").await
    }

    /// Starts a vault whose configuration also has `top` (top-level keys)
    /// and `tables` (e.g. more `[[issuers]]`).
    pub async fn start_with(s: VaultSettings<'_>, top: &str, tables: &str) -> VaultProcess {
        VaultProcess::start_with_env(s, top, tables, &[]).await
    }

    /// As [`VaultProcess::start_with`], with more environment variables
    /// (they win over the defaults, e.g. `AGENTWARD_VAULT_LOG_FORMAT`).
    pub async fn start_with_env(
        s: VaultSettings<'_>,
        top: &str,
        tables: &str,
        env: &[(&str, &str)],
    ) -> VaultProcess {
        let (child, log) = spawn_vault_with_env(&s, top, tables, env);
        let url = format!("http://127.0.0.1:{}", s.port);
        let vault = VaultProcess { child, url, log };
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("{}/healthz", vault.url)).await {
                if r.status().is_success() {
                    return vault;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "vault did not start: {}",
            std::fs::read_to_string(&vault.log).unwrap_or_default()
        );
    }

    /// Runs a vault that is expected to stop by itself (refusing to
    /// start): its exit code and its log.
    pub async fn start_expecting_exit(
        s: VaultSettings<'_>,
        top: &str,
        tables: &str,
    ) -> (Option<i32>, String) {
        let (mut child, log) = spawn_vault(&s, top, tables);
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), std::fs::read_to_string(&log).unwrap());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "vault did not stop: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

fn spawn_vault(s: &VaultSettings<'_>, top: &str, tables: &str) -> (Child, PathBuf) {
    spawn_vault_with_env(s, top, tables, &[])
}

fn spawn_vault_with_env(
    s: &VaultSettings<'_>,
    top: &str,
    tables: &str,
    env: &[(&str, &str)],
) -> (Child, PathBuf) {
    let schema = s
        .database_schema
        .as_deref()
        .map(|x| format!("database_schema = \"{x}\"\n"))
        .unwrap_or_default();
    let ca_file = s
        .ca_file
        .map(|f| format!("ca_file = \"{}\"\n", f.display()))
        .unwrap_or_default();
    let config = format!(
        r#"{top}
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
database_url = "{db}"
{schema}{ca_file}log_format = "json"
refresh_margin_seconds = {margin}
upstream_timeout_seconds = 3
audit_readers = ["{AUDITOR_ID}"]

[[issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
jwks_uri = "{jwks}"

[[clients]]
client_id = "{GATEWAY_ID}"

[[clients]]
client_id = "{AUDITOR_ID}"

[connections.stocktrade]
authorize_url = "{up}/auth"
token_url = "{up}/token"
revocation_url = "{up}/token/revocation"
client_id = "vault"
scopes = ["openid", "offline_access", "stocks:read"]
resources = ["{RESOURCE}"]
token_endpoint_auth = "client_secret_basic"
authorize_params = {{ prompt = "consent" }}
{tables}
"#,
        port = s.port,
        db = s.database_url,
        margin = s.refresh_margin,
        jwks = s.jwks_url,
        up = s.upstream_url,
    );
    let config_path = s.dir.join(format!("{}.toml", s.name));
    std::fs::write(&config_path, config).unwrap();
    let log = s.dir.join(format!("{}.log", s.name));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_agentward-vault"))
        .arg("--config")
        .arg(&config_path)
        .env("AGENTWARD_VAULT_KEY", KEY)
        .env("AGENTWARD_VAULT_CLIENT_GATEWAY_SECRET", GATEWAY_SECRET)
        .env("AGENTWARD_VAULT_CLIENT_AUDITOR_SECRET", AUDITOR_SECRET)
        .env(
            "AGENTWARD_VAULT_CONNECTION_STOCKTRADE_CLIENT_SECRET",
            "vault-secret",
        )
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    (child, log)
}

impl VaultProcess {
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id (to count its open descriptors).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follows a linking flow without a browser: vault → upstream authorize →
/// scripted login and consent as `account` → vault callback. Returns the
/// callback's answer and the callback URL (to try replaying it).
pub async fn link_account(
    http: &Client,
    start: reqwest::RequestBuilder,
    account: &str,
) -> (Response, Url) {
    let mut response = start.send().await.unwrap();
    // One jar for every host, as a browser on 127.0.0.1 has (cookies ignore ports).
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..12 {
        keep_cookies(&mut cookies, &response);
        if response.status() == 200 {
            // The vault's confirmation page: the user reads it and continues.
            let page = Confirmation::read(response, jar(&cookies)).await;
            response = page.submit(http, "allow").send().await.unwrap();
            continue;
        }
        assert!(
            response.status().is_redirection(),
            "expected a redirect, got {}",
            response.status()
        );
        let location = response.headers()[LOCATION].to_str().unwrap().to_string();
        let mut next = response.url().join(&location).unwrap();
        if next.path().starts_with("/interaction/") {
            next.query_pairs_mut().append_pair("account", account);
        }
        let request = http.get(next.clone()).header(COOKIE, jar(&cookies));
        if next.path() == "/connect/callback" {
            return (request.send().await.unwrap(), next);
        }
        response = request.send().await.unwrap();
    }
    panic!("linking did not reach the vault callback");
}

/// Notes the cookies a response sets (an empty value clears one).
fn keep_cookies(cookies: &mut BTreeMap<String, String>, response: &Response) {
    for set in response.headers().get_all(SET_COOKIE) {
        let pair = set.to_str().unwrap().split(';').next().unwrap_or("");
        if let Some((k, v)) = pair.split_once('=') {
            if v.is_empty() {
                cookies.remove(k.trim());
            } else {
                cookies.insert(k.trim().to_string(), v.to_string());
            }
        }
    }
}

/// A `Cookie` header of every cookie in the jar.
fn jar(cookies: &BTreeMap<String, String>) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The vault's page that asks the user to confirm a connect link, as a
/// browser read it: its POST form and the cookie the page set.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub html: String,
    pub action: String,
    pub ticket: String,
    pub csrf_token: String,
    /// The `Cookie` header the browser sends back (earlier cookies too).
    pub cookie: String,
}

impl Confirmation {
    /// Reads the page from a `200` answer; `earlier` is the browser's
    /// cookie header before it (the page's own cookies are added).
    pub async fn read(response: Response, earlier: String) -> Confirmation {
        assert_eq!(response.status(), 200, "expected the confirmation page");
        let mut cookies: BTreeMap<String, String> = BTreeMap::new();
        for pair in earlier.split("; ").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                cookies.insert(k.to_string(), v.to_string());
            }
        }
        keep_cookies(&mut cookies, &response);
        let html = response.text().await.unwrap();
        let action = html_attribute_after(&html, "<form method=\"post\"", "action")
            .unwrap_or_else(|| panic!("no POST form on the page: {html}"));
        Confirmation {
            ticket: form_field(&html, "ticket").expect("ticket field"),
            csrf_token: form_field(&html, "csrf_token").expect("csrf_token field"),
            action,
            cookie: jar(&cookies),
            html,
        }
    }

    /// The form as the browser submits it with the button `decision`
    /// (`allow` or `cancel`).
    pub fn submit(&self, http: &Client, decision: &str) -> reqwest::RequestBuilder {
        self.post(http, &self.csrf_token, Some(&self.cookie), decision)
    }

    /// The form with any CSRF token and cookie header.
    pub fn post(
        &self,
        http: &Client,
        csrf_token: &str,
        cookie: Option<&str>,
        decision: &str,
    ) -> reqwest::RequestBuilder {
        let mut request = http.post(&self.action).form(&[
            ("ticket", self.ticket.as_str()),
            ("csrf_token", csrf_token),
            ("decision", decision),
        ]);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request
    }
}

/// The `value` of the input named `name` on a page, HTML-unescaped.
pub fn form_field(html: &str, name: &str) -> Option<String> {
    html_attribute_after(html, &format!("name=\"{name}\""), "value")
}

/// The first `attribute="…"` after `marker` within the same tag.
fn html_attribute_after(html: &str, marker: &str, attribute: &str) -> Option<String> {
    let start = html.find(marker)?;
    let tag = &html[start..start + html[start..].find('>')?];
    let open = format!("{attribute}=\"");
    let at = tag.find(&open)? + open.len();
    let value = &tag[at..at + tag[at..].find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// An RFC 8693 exchange request by the gateway.
pub fn rfc8693(http: &Client, vault: &str, subject: &str) -> reqwest::RequestBuilder {
    http.post(format!("{vault}/oauth/token"))
        .basic_auth(form(GATEWAY_ID), Some(form(GATEWAY_SECRET)))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", RESOURCE),
            ("scope", "stocks:read"),
        ])
}

/// An Auth0 Token Vault exchange request (client credentials in the form).
pub fn auth0(http: &Client, vault: &str, subject: &str) -> reqwest::RequestBuilder {
    http.post(format!("{vault}/oauth/token")).form(&[
        (
            "grant_type",
            "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token",
        ),
        ("client_id", GATEWAY_ID),
        ("client_secret", GATEWAY_SECRET),
        ("subject_token", subject),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        (
            "requested_token_type",
            "http://auth0.com/oauth/token-type/federated-connection-access-token",
        ),
        ("connection", "stocktrade"),
    ])
}

fn form(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap()
        .trim_start_matches('=')
        .to_string()
}

pub async fn json(r: Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A test's own folder under the system's temporary folder, removed when
/// dropped; kept when the test failed, for its logs.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "agentward-vault-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
