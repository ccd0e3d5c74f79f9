//! Carrying out core's steps over wasi:http 0.2: the request's head as core
//! reads it, callouts through `wasi:http/outgoing-handler`, the edited
//! request sent on to the next hop, local answers. Nothing here decides.
//! Headers are kept as lists, so repeated headers (`cookie`, `set-cookie`)
//! go through as they came.

use agentward_core::response::{self, LocalResponse};
use agentward_core::step::{Answer, Callout, Edits};
use spin_sdk::http::ResponseOutparam;
use spin_sdk::http::{Fields, IncomingRequest, IncomingResponse, OutgoingResponse};

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
    let mut builder = http::Request::builder()
        .method(call.method)
        .uri(format!("{origin}{}", call.path));
    for (name, value) in &call.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let Ok(request) = builder.body(call.body.clone()) else {
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

/// Sends the request on to the next hop (the `next` variable) with the
/// edits made and every header `strip` names removed, and relays the
/// answer. A next hop that cannot be reached is a 502 answer.
pub async fn forward(
    request: IncomingRequest,
    head: Head,
    edits: &Edits,
    strip: impl Fn(&str) -> bool,
    out: ResponseOutparam,
) {
    let Some(next) = crate::config::variable("next") else {
        crate::log("agentward: the `next` variable is not set");
        let answer = response::unavailable("not_configured", "the gateway has no next hop");
        return respond(out, &answer).await;
    };
    let Ok(body) = request.into_body().await else {
        let answer =
            response::invalid_request("body_unreadable", "the request body could not be read");
        return respond(out, &answer).await;
    };
    let path = match &edits.set_one {
        Some((":path", path)) => path.as_str(),
        _ => head.path.as_str(),
    };
    let mut builder = http::Request::builder()
        .method(head.method.as_str())
        .uri(format!("{}{path}", next.trim_end_matches('/')));
    let replaced = |name: &str| {
        edits.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || edits.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            || matches!(&edits.set_one, Some((n, _)) if n.eq_ignore_ascii_case(name))
    };
    for (name, value) in &head.headers {
        if HOP_BY_HOP.contains(&name.as_str()) || strip(name) || replaced(name) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_slice());
    }
    for (name, value) in edits.set.iter() {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some((name, value)) = &edits.set_one {
        if !name.starts_with(':') {
            builder = builder.header(*name, value.as_str());
        }
    }
    let Ok(upstream) = builder.body(body) else {
        let answer = response::unavailable(
            "header_edit_failed",
            "the gateway could not build the request to the next hop",
        );
        return respond(out, &answer).await;
    };
    let response: IncomingResponse = match spin_sdk::http::send(upstream).await {
        Ok(response) => response,
        Err(e) => {
            crate::log(&format!("agentward: the next hop did not answer: {e}"));
            let answer = bad_gateway("upstream_unreachable", "the next hop could not be reached");
            return respond(out, &answer).await;
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
        Ok(body) => send_response(out, status, &headers, body).await,
        Err(_) => {
            let answer = bad_gateway(
                "upstream_unreadable",
                "the next hop's answer could not be read",
            );
            respond(out, &answer).await
        }
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
