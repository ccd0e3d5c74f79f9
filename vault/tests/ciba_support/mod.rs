//! A CIBA-configured vault process, a webhook receiver that plays the
//! user's phone, and the approval page as a browser uses it.
#![allow(dead_code)]

use crate::support::*;
use axum::http::HeaderMap;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const OTHER_ID: &str = "other-client";
pub const OTHER_SECRET: &str = "other-secret";
pub const HOOK_SECRET: &str = "hook-secret-for-tests";
pub const DETAILS_TYPE: &str = "stock_trade";

/// One notification as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub json: serde_json::Value,
}

/// A webhook receiver: answers `fail_first` deliveries with 500, then 200.
#[derive(Clone)]
pub struct Phone {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    pub attempts: Arc<Mutex<u32>>,
}

impl Phone {
    pub async fn start(fail_first: u32) -> Phone {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let attempts: Arc<Mutex<u32>> = Arc::default();
        let (g, a) = (got.clone(), attempts.clone());
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (g, a) = (g.clone(), a.clone());
                async move {
                    let n = {
                        let mut a = a.lock().unwrap();
                        *a += 1;
                        *a
                    };
                    if n <= fail_first {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    g.lock().unwrap().push(Received {
                        signature: headers
                            .get("x-agentward-signature")
                            .map(|v| v.to_str().unwrap().to_string()),
                        json: serde_json::from_slice(&body).unwrap(),
                        body: body.to_vec(),
                    });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Phone {
            url: format!("http://127.0.0.1:{port}/notify"),
            got,
            attempts,
        }
    }

    /// The next notification not yet taken (waits up to 20 s for it).
    pub async fn next(&self) -> Received {
        for _ in 0..200 {
            let taken = {
                let mut got = self.got.lock().unwrap();
                (!got.is_empty()).then(|| got.remove(0))
            };
            if let Some(n) = taken {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no notification arrived");
    }
}

/// A running vault with `[ciba]` and the parts around it.
pub struct CibaVault {
    pub issuer: TestIssuer,
    pub vault: VaultProcess,
    pub phone: Option<Phone>,
    pub http: Client,
    /// Removed with the vault (declared after it: dropped after it).
    pub dir: TempDir,
}

/// The `[ciba]` section the tests use (`extra` appended inside it), with
/// the webhook when `hook` is given.
pub fn ciba_tables(hook: Option<&str>, extra: &str) -> String {
    let webhook = hook
        .map(|url| {
            format!("\n[ciba.webhook]\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\nattempts = 3\n")
        })
        .unwrap_or_default();
    format!(
        r#"
[[clients]]
client_id = "{OTHER_ID}"
client_secret = "{OTHER_SECRET}"

[ciba]
clients = ["{GATEWAY_ID}", "{OTHER_ID}"]
scopes = ["openid", "trade"]
authorization_details_types = ["{DETAILS_TYPE}"]
audiences = ["{RESOURCE}"]
interval_seconds = 1
max_expiry_seconds = 600
max_wait_seconds = 15
{extra}
{webhook}"#
    )
}

impl CibaVault {
    pub async fn start(name: &str) -> CibaVault {
        CibaVault::start_with(name, Some(0), "").await
    }

    /// `fail_first`: `None` for the log notifier, else a phone that fails
    /// that many deliveries first.
    pub async fn start_with(name: &str, fail_first: Option<u32>, extra: &str) -> CibaVault {
        let issuer = TestIssuer::start().await;
        let phone = match fail_first {
            Some(n) => Some(Phone::start(n).await),
            None => None,
        };
        let dir = temp_dir(name);
        let vault = VaultProcess::start_with(
            VaultSettings {
                port: free_port(),
                database_url: format!("sqlite://{}", dir.join("vault.db").display()),
                database_schema: None,
                dir: &dir,
                jwks_url: &issuer.jwks_url,
                upstream_url: "http://127.0.0.1:9",
                refresh_margin: 30,
                name: "vault",
                ca_file: None,
            },
            "",
            &ciba_tables(phone.as_ref().map(|p| p.url.as_str()), extra),
        )
        .await;
        CibaVault {
            issuer,
            vault,
            phone,
            http: http(),
            dir,
        }
    }

    pub fn phone(&self) -> &Phone {
        self.phone.as_ref().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.vault.log).unwrap()
    }
}

/// `POST /bc-authorize` as the gateway with these parameters.
pub fn bc_authorize(
    http: &Client,
    vault: &str,
    params: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    http.post(format!("{vault}/bc-authorize"))
        .basic_auth(
            GATEWAY_ID,
            Some(
                GATEWAY_SECRET
                    .replace(':', "%3A")
                    .replace('/', "%2F")
                    .replace(' ', "+"),
            ),
        )
        .form(params)
}

/// A valid request for alice: the parameters before `extra` overrides.
pub fn alice_params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("scope", "openid trade"),
        ("login_hint", "alice"),
        ("binding_message", "Buy 50 ACME"),
        (
            "authorization_details",
            r#"[{"type":"stock_trade","ticker":"ACME","qty":50,"side":"buy"}]"#,
        ),
        ("request_digest", "sha-256:3q2-7w"),
        ("audience", RESOURCE),
        ("agent_id", "trading-agent"),
    ];
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    params
}

/// Starts a request for alice; answers the `auth_req_id`.
pub async fn start_request(c: &CibaVault, extra: &[(&str, &str)]) -> String {
    let r = bc_authorize(&c.http, &c.vault.url, &alice_params(extra))
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval"], 1, "{body}");
    body["auth_req_id"].as_str().unwrap().to_string()
}

/// The token request of `client` (basic auth) for `auth_req_id`.
pub fn poll_as(
    http: &Client,
    vault: &str,
    client: (&str, &str),
    auth_req_id: &str,
    wait: Option<u64>,
) -> reqwest::RequestBuilder {
    let wait = wait.map(|w| w.to_string());
    let mut form = vec![
        (
            "grant_type",
            "urn:openid:params:grant-type:ciba".to_string(),
        ),
        ("auth_req_id", auth_req_id.to_string()),
    ];
    if let Some(w) = wait {
        form.push(("wait", w));
    }
    http.post(format!("{vault}/oauth/token"))
        .form(&form)
        .basic_auth(
            client.0,
            Some(
                client
                    .1
                    .replace(':', "%3A")
                    .replace('/', "%2F")
                    .replace(' ', "+"),
            ),
        )
}

/// The gateway's token request.
pub async fn poll(c: &CibaVault, auth_req_id: &str, wait: Option<u64>) -> (u16, serde_json::Value) {
    json(
        poll_as(
            &c.http,
            &c.vault.url,
            (GATEWAY_ID, GATEWAY_SECRET),
            auth_req_id,
            wait,
        )
        .send()
        .await
        .unwrap(),
    )
    .await
}

/// The approval page as a browser read it.
#[derive(Debug, Clone)]
pub struct ApprovalPage {
    pub status: u16,
    pub html: String,
    pub action: String,
    pub ticket: String,
    pub csrf_token: String,
    pub cookie: String,
}

impl ApprovalPage {
    pub async fn open(http: &Client, url: &str) -> ApprovalPage {
        let r = http.get(url).send().await.unwrap();
        ApprovalPage::read(r).await
    }

    pub async fn read(r: Response) -> ApprovalPage {
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect::<Vec<_>>()
            .join("; ");
        let html = r.text().await.unwrap();
        let action = html
            .split("<form method=\"post\" action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string();
        ApprovalPage {
            status,
            ticket: form_field(&html, "ticket").unwrap_or_default(),
            csrf_token: form_field(&html, "csrf_token").unwrap_or_default(),
            action,
            cookie,
            html,
        }
    }

    /// Presses `decision` (`approve` or `deny`) as the browser would.
    pub async fn press(&self, http: &Client, decision: &str) -> (u16, String) {
        self.post(http, &self.csrf_token, Some(&self.cookie), decision, None)
            .await
    }

    pub async fn post(
        &self,
        http: &Client,
        csrf_token: &str,
        cookie: Option<&str>,
        decision: &str,
        fetch_site: Option<&str>,
    ) -> (u16, String) {
        let mut request = http.post(&self.action).form(&[
            ("ticket", self.ticket.as_str()),
            ("csrf_token", csrf_token),
            ("decision", decision),
        ]);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(site) = fetch_site {
            request = request.header("sec-fetch-site", site);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// The approval link of the next notification, and the notification.
pub async fn approval_link(c: &CibaVault) -> (String, serde_json::Value) {
    let n = c.phone().next().await;
    (n.json["approval_url"].as_str().unwrap().to_string(), n.json)
}

/// Approves (or denies) the next notified request through the page.
pub async fn decide_next(c: &CibaVault, decision: &str) {
    let (link, _) = approval_link(c).await;
    let page = ApprovalPage::open(&c.http, &link).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let (status, html) = page.press(&c.http, decision).await;
    assert_eq!(status, 200, "{html}");
}
