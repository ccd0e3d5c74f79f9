//! Carrying out core's steps over wasi:http 0.2: the request's head as core
//! reads it, callouts through `wasi:http/outgoing-handler`, the edited
//! request sent on to the next hop, local answers. Nothing here decides.
//! Headers are kept as lists, so repeated headers (`cookie`, `set-cookie`)
//! go through as they came.

use agentward_core::response::{self, LocalResponse};
use agentward_core::step::{Answer, Callout, Edits};
use spin_sdk::http::conversions::TryIntoOutgoingRequest;
use spin_sdk::http::{Fields, IncomingRequest, IncomingResponse, OutgoingResponse};
use spin_sdk::http::{Method, OutgoingRequest, ResponseOutparam, Scheme};

/// Headers that describe one connection, not the request: never copied
/// from one hop to the next (and `wasi:http` refuses most of them).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The request as received: method, path and query, headers in order.
pub struct Head {
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// Every header, names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// Reads the head of an incoming request.
    pub fn of(request: &IncomingRequest) -> Head {
        Head {
            method: request.method().to_string(),
            path: request.path_with_query().unwrap_or_else(|| "/".to_string()),
            headers: request
                .headers()
                .entries()
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    /// The first value of a header (name in lower case), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Sends a local answer.
pub async fn respond(out: ResponseOutparam, answer: &LocalResponse) {
    let headers: Vec<(String, Vec<u8>)> = answer
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect();
    send_response(
        out,
        answer.status as u16,
        &headers,
        answer.body.as_bytes().to_vec(),
    )
    .await;
}

/// Sends a response; a host that refuses the headers gets a bare 502.
async fn send_response(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) {
    let (fields, body) = match Fields::from_list(headers) {
        Ok(fields) => (fields, body),
        Err(_) => (Fields::new(), Vec::new()),
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        let _ = response.set_status_code(502);
    }
    if let Err(e) = out.set_with_body(response, body).await {
        crate::log(&format!(
            "agentward: the response body could not be sent: {e:?}"
        ));
    }
}

/// Makes a callout and reads its answer: a body over the callout's
/// `max_answer_bytes` is [`Answer::TooLarge`], no answer [`Answer::Failed`].
pub async fn call(call: &Callout) -> Answer {
    let origin = crate::config::cluster_origin(&call.cluster, &call.authority);
    let headers: Vec<(String, Vec<u8>)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect();
    let Some(request) = Outgoing::new(
        call.method,
        &origin,
        &call.path,
        &headers,
        call.body.clone(),
    ) else {
        return Answer::Failed;
    };
    let response: IncomingResponse = match spin_sdk::http::send(request).await {
        Ok(response) => response,
        Err(e) => {
            crate::log(&format!(
                "agentward: call to cluster `{}` failed: {e}",
                call.cluster
            ));
            return Answer::Failed;
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), String::from_utf8(v).ok()?)))
        .collect();
    let Ok(body) = response.into_body().await else {
        return Answer::Failed;
    };
    if body.len() > call.max_answer_bytes {
        return Answer::TooLarge {
            status,
            size: body.len(),
        };
    }
    Answer::Response {
        status,
        headers,
        body,
    }
}

/// Reads the request body to its end (buffered whole, as every component
/// sends it on).
pub async fn read_body(request: IncomingRequest) -> Result<Vec<u8>, LocalResponse> {
    request.into_body().await.map_err(|_| {
        response::invalid_request("body_unreadable", "the request body could not be read")
    })
}

impl Head {
    /// Makes `edits` to the request as it will go on: removed and replaced
    /// headers leave, set ones come in; a `:path` edit changes the path.
    pub fn apply(&mut self, edits: &Edits) {
        edits.apply(&mut self.headers, &mut self.path, |v| v.as_bytes().to_vec());
    }

    /// What this request's identity proof is checked against: the binding
    /// jwt-identity left in [`crate::config::BINDING_HEADER`], else the
    /// bearer token of `Authorization` (see `agentward_core::proof::BINDING`).
    pub fn binding(&self) -> Option<String> {
        if let Some(bound) = self.header(crate::config::BINDING_HEADER) {
            if !bound.is_empty() {
                return Some(bound.to_string());
            }
        }
        self.header("authorization")
            .and_then(agentward_core::bearer::token)
            .map(|token| agentward_core::proof::signature_part(token).to_string())
    }
}

/// The next hop's answer, read whole.
pub struct Upstream {
    /// Its status.
    pub status: u16,
    /// Its headers, hop-by-hop ones left out; names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Upstream {
    /// The first value of a header, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Sends the request (`head` as edited, `body`) on to the next hop (the
/// `next` variable) and reads its answer. The binding header goes only to another component of the app,
/// never to the upstream. A next hop that cannot be reached is a 502.
pub async fn send_on(head: &Head, body: Vec<u8>) -> Result<Upstream, LocalResponse> {
    let Some(next) = crate::config::variable("next") else {
        crate::log("agentward: the `next` variable is not set");
        return Err(response::unavailable(
            "not_configured",
            "the gateway has no next hop",
        ));
    };
    let next = next.trim_end_matches('/');
    let internal = crate::config::is_internal(next);
    let headers: Vec<(String, Vec<u8>)> = head
        .headers
        .iter()
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str())
                && (internal || !name.eq_ignore_ascii_case(crate::config::BINDING_HEADER))
        })
        .cloned()
        .collect();
    let Some(request) = Outgoing::new(&head.method, next, &head.path, &headers, body) else {
        return Err(response::unavailable(
            "header_edit_failed",
            "the gateway could not build the request to the next hop",
        ));
    };
    let response: IncomingResponse = match spin_sdk::http::send(request).await {
        Ok(response) => response,
        Err(e) => {
            crate::log(&format!("agentward: the next hop did not answer: {e}"));
            return Err(bad_gateway(
                "upstream_unreachable",
                "the next hop could not be reached",
            ));
        }
    };
    let status = response.status();
    let headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .entries()
        .into_iter()
        .filter(|(n, _)| !HOP_BY_HOP.contains(&n.to_ascii_lowercase().as_str()))
        .collect();
    match response.into_body().await {
        Ok(body) => Ok(Upstream {
            status,
            headers,
            body,
        }),
        Err(_) => Err(bad_gateway(
            "upstream_unreadable",
            "the next hop's answer could not be read",
        )),
    }
}

/// Sends the next hop's answer to the client.
pub async fn relay(out: ResponseOutparam, upstream: Upstream) {
    send_response(out, upstream.status, &upstream.headers, upstream.body).await
}

/// Sends the next hop's answer with another body (its `content-length`
/// dropped: the host counts the new one).
pub async fn relay_replaced(out: ResponseOutparam, mut upstream: Upstream, body: Vec<u8>) {
    upstream
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
    send_response(out, upstream.status, &upstream.headers, body).await
}

/// Sends the request on to the next hop with every inbound header `strip`
/// names removed and the edits made, and relays the answer.
pub async fn forward(
    request: IncomingRequest,
    mut head: Head,
    edits: &Edits,
    strip: impl Fn(&str) -> bool,
    out: ResponseOutparam,
) {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(answer) => return respond(out, &answer).await,
    };
    head.headers.retain(|(name, _)| !strip(name));
    head.apply(edits);
    match send_on(&head, body).await {
        Ok(upstream) => relay(out, upstream).await,
        Err(answer) => respond(out, &answer).await,
    }
}

pub use agentward_core::response::body_too_large;

/// A request to another host with its whole body, as `spin_sdk::http::send`
/// takes it (the SDK streams the body out). Built on the wasi:http types
/// directly: the `http` crate's builder (with its header table, URI parser
/// and, through the SDK's conversions, `anyhow`) cost each component
/// ~70 KiB.
struct Outgoing(OutgoingRequest, Vec<u8>);

impl Outgoing {
    /// `method` to `origin` (`scheme://authority`, optionally with a path
    /// prefix) and `path`; `None` when the origin is not http(s) or the host
    /// refuses a header, the method, the authority or the path.
    fn new(
        method: &str,
        origin: &str,
        path: &str,
        headers: &[(String, Vec<u8>)],
        body: Vec<u8>,
    ) -> Option<Outgoing> {
        let (scheme, rest) = origin.split_once("://")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return None,
        };
        let (authority, prefix) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        let request = OutgoingRequest::new(Fields::from_list(headers).ok()?);
        request.set_method(&method_of(method)).ok()?;
        request.set_scheme(Some(&scheme)).ok()?;
        request.set_authority(Some(authority)).ok()?;
        request
            .set_path_with_query(Some(&format!("{prefix}{path}")))
            .ok()?;
        Some(Outgoing(request, body))
    }
}

impl TryIntoOutgoingRequest for Outgoing {
    type Error = std::convert::Infallible;

    fn try_into_outgoing_request(self) -> Result<(OutgoingRequest, Option<Vec<u8>>), Self::Error> {
        Ok((self.0, Some(self.1)))
    }
}

/// The wasi:http method of a method name (as sent: methods are case-sensitive).
fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

/// 502: the next hop could not be reached or read.
fn bad_gateway(reason: &str, description: &str) -> LocalResponse {
    LocalResponse::json(
        502,
        serde_json::json!({
            "error": "bad_gateway",
            "reason": reason,
            "error_description": description,
        }),
    )
}
