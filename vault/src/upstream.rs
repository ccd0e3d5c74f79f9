//! Calls to an upstream token endpoint: the authorization-code grant that
//! completes linking, and the refresh-token grant. Responses are classified,
//! never passed through: the upstream's error text does not reach our clients
//! or our logs.

use crate::config::{ConnectionConfig, TokenEndpointAuth};
use serde::Deserialize;
use std::time::Duration;

/// Largest answer read from an upstream token or revocation endpoint.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Tokens from the upstream token endpoint.
#[derive(Deserialize)]
pub struct UpstreamTokens {
    /// The upstream access token.
    pub access_token: String,
    /// A refresh token: on linking, or a rotated one on refresh.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Lifetime of the access token in seconds.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Scope granted.
    #[serde(default)]
    pub scope: Option<String>,
    /// Token type; only `Bearer` is accepted.
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UpstreamTokens {{ expires_in: {:?}, scope: {:?}, .. }}",
            self.expires_in, self.scope
        )
    }
}

/// How an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// `invalid_grant`: the code or refresh token is spent, revoked or expired.
    Refused,
    /// Another OAuth error code (e.g. `invalid_client`: our configuration).
    Rejected(String),
    /// Network failure, timeout, 5xx, or a body that is not a token response.
    Unavailable(&'static str),
}

/// An HTTP client for upstream token endpoints.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl UpstreamClient {
    /// A client with the given per-request timeout. HTTPS trusts the web
    /// PKI roots plus the CA certificates in `extra_roots_pem` (a PEM bundle).
    pub fn new(
        timeout: Duration,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<UpstreamClient, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agentward-vault/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("ca_file: not a PEM bundle of certificates: {e}"))?;
            if roots.is_empty() {
                return Err("ca_file: holds no certificate".into());
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(UpstreamClient { http })
    }

    /// The shared reqwest client (also used for JWKS).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Redeems an authorization code (with its PKCE verifier).
    pub async fn redeem_code(
        &self,
        conn: &ConnectionConfig,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        self.token_request(conn, form).await
    }

    /// Spends a refresh token.
    pub async fn refresh(
        &self,
        conn: &ConnectionConfig,
        refresh_token: &str,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_request(conn, form).await
    }

    /// Revokes a refresh token at the connection's `revocation_url` (RFC
    /// 7009). `Ok(false)` when the connection has none.
    pub async fn revoke(
        &self,
        conn: &ConnectionConfig,
        refresh_token: &str,
    ) -> Result<bool, UpstreamError> {
        let Some(url) = conn.revocation_url.as_deref() else {
            return Ok(false);
        };
        let form = vec![
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ];
        let (status, _) = self.client_post(conn, url, form).await?;
        // RFC 7009 §2.2: 200 whether or not the token was still valid.
        if status.is_success() {
            Ok(true)
        } else if status.is_server_error() {
            Err(UpstreamError::Unavailable(
                "upstream revocation endpoint failed",
            ))
        } else {
            Err(UpstreamError::Rejected(format!("http_{}", status.as_u16())))
        }
    }

    async fn token_request(
        &self,
        conn: &ConnectionConfig,
        form: Vec<(&str, &str)>,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let (status, bytes) = self.client_post(conn, &conn.token_url, form).await?;
        if status.is_success() {
            let tokens: UpstreamTokens = serde_json::from_slice(&bytes).map_err(|_| {
                UpstreamError::Unavailable("upstream token response is not valid JSON")
            })?;
            if let Some(t) = &tokens.token_type {
                if !t.eq_ignore_ascii_case("bearer") {
                    return Err(UpstreamError::Rejected("unsupported_token_type".into()));
                }
            }
            return Ok(tokens);
        }
        if status.is_server_error() {
            return Err(UpstreamError::Unavailable("upstream token endpoint failed"));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) if e.error == "invalid_grant" => Err(UpstreamError::Refused),
            // Keep only a code-shaped value, never free text.
            Ok(e)
                if e.error.len() <= 64
                    && e.error.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
            {
                Err(UpstreamError::Rejected(e.error))
            }
            _ => Err(UpstreamError::Rejected(format!("http_{}", status.as_u16()))),
        }
    }
}

impl UpstreamClient {
    /// POSTs a form to one of the connection's endpoints with the vault's
    /// client authentication; the status and body.
    async fn client_post(
        &self,
        conn: &ConnectionConfig,
        url: &str,
        mut form: Vec<(&str, &str)>,
    ) -> Result<(reqwest::StatusCode, axum::body::Bytes), UpstreamError> {
        let secret = conn
            .client_secret
            .as_ref()
            .map_or("", crate::secret::Secret::expose);
        let mut request = self.http.post(url).header("accept", "application/json");
        match conn.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => {
                request =
                    request.basic_auth(form_encode(&conn.client_id), Some(form_encode(secret)));
            }
            TokenEndpointAuth::ClientSecretPost => {
                form.push(("client_id", &conn.client_id));
                form.push(("client_secret", secret));
            }
        }
        let body = serde_urlencoded::to_string(&form)
            .map_err(|_| UpstreamError::Unavailable("cannot encode request"))?;
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // The cause (refused, timeout, a certificate the vault does not
                // trust) is for the operator; it holds the URL, never the form.
                tracing::warn!(%url, cause = %error_chain(&e), "upstream endpoint unreachable");
                UpstreamError::Unavailable("upstream endpoint unreachable")
            })?;
        let status = response.status();
        let bytes = match read_capped(response, MAX_TOKEN_RESPONSE_BYTES).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                tracing::warn!(%url, limit = MAX_TOKEN_RESPONSE_BYTES, "upstream answer too large; refused");
                return Err(UpstreamError::Unavailable("upstream answer too large"));
            }
            Err(BodyError::Read(_)) => {
                return Err(UpstreamError::Unavailable("upstream endpoint unreachable"))
            }
        };
        Ok((status, bytes.into()))
    }
}

/// Why an answer's body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// It is (or announced it is) larger than the limit.
    TooLarge,
    /// The connection failed or timed out.
    Read(reqwest::Error),
}

/// An answer's body, at most `max` bytes: an announced `Content-Length`
/// over it is refused before reading, and a body that grows past it is
/// refused as soon as it does (nothing beyond `max` is buffered).
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len().saturating_add(chunk.len()) > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its sources, `: `-separated (reqwest's own text stops at
/// "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `application/x-www-form-urlencoded` encoding of a client credential, as
/// RFC 6749 §2.3.1 asks before HTTP Basic.
fn form_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}
