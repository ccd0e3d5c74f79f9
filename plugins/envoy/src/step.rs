//! Carrying out core's [`Step`]s in Envoy: header edits on the current
//! request, callouts and their answers. Every call goes through
//! [`crate::hostcall`]; nothing here decides.

use crate::hostcall;
use crate::{log, respond};
use agentward_core::response;
use agentward_core::step::{Answer, Callout, Edits, Step};
use proxy_wasm::types::{Action, BufferType, LogLevel, Status};
use std::time::Duration;

/// Where a step is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In the request's headers callback: its return value lets the
    /// request go on or holds it.
    Headers,
    /// On a request held earlier (a callout's answer, the root's tick): a
    /// request that may go on is resumed.
    Held,
}

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// The request goes on.
    Continue,
    /// The request is held, or was answered.
    Pause,
    /// The step's call was dispatched under this token; the request is held.
    Called(u32),
    /// The step's call could not be dispatched (an unknown cluster): feed
    /// [`Answer::Failed`] to the decision that asked.
    CallFailed(Status),
}

impl Carried {
    /// The action for the headers callback.
    pub fn action(self) -> Action {
        match self {
            Carried::Continue => Action::Continue,
            _ => Action::Pause,
        }
    }
}

/// Carries out `step` on the current request. A [`Step::Hold`] only holds
/// (the plugin keeps the request); [`Step::ReadBody`] makes its edits and
/// lets the headers go on.
pub fn carry_out(step: &Step, phase: Phase) -> Carried {
    match step {
        Step::Continue(edits) | Step::ReadBody { edits, .. } => {
            if !edit_request(edits) {
                return Carried::Pause;
            }
            if phase == Phase::Held && hostcall::resume_request().is_err() {
                log(LogLevel::Warn, "agentward: could not resume a held request");
            }
            Carried::Continue
        }
        Step::Respond(answer) => {
            respond(answer);
            Carried::Pause
        }
        Step::Call(call) => match dispatch(call) {
            Ok(token) => Carried::Called(token),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "agentward: cannot call the cluster `{}`: {status:?}",
                        call.cluster
                    ),
                );
                Carried::CallFailed(status)
            }
        },
        Step::Hold { .. } => Carried::Pause,
    }
}

/// Makes every edit on the current request. When the host refuses one, the
/// request is answered 503 `header_edit_failed` instead of going on
/// half-edited; returns whether it may go on.
pub fn edit_request(edits: &Edits) -> bool {
    let mut ok = true;
    for name in &edits.remove {
        ok &= hostcall::remove_request_header(name).is_ok();
    }
    for (name, value) in edits.set.iter() {
        ok &= hostcall::set_request_header(name, value).is_ok();
    }
    if let Some((name, value)) = &edits.set_one {
        ok &= hostcall::set_request_header(name, value).is_ok();
    }
    if !ok {
        respond(&response::unavailable(
            "header_edit_failed",
            "the gateway could not edit the request's headers",
        ));
    }
    ok
}

/// Dispatches a callout from the current context; its answer comes to that
/// context's `on_http_call_response` under the returned token.
pub fn dispatch(call: &Callout) -> Result<u32, Status> {
    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
    let timeout = Duration::from_millis(call.timeout_ms);
    hostcall::dispatch_http_call(&call.cluster, &call.header_pairs(), body, timeout)
}

/// Reads the answer to the current callout (in `on_http_call_response`,
/// with its `num_headers` and `body_size`): a body over `max_answer_bytes`
/// is not read, and an answer the host cannot give is [`Answer::Failed`].
pub fn read_answer(num_headers: usize, body_size: usize, max_answer_bytes: usize) -> Answer {
    if num_headers == 0 {
        return Answer::Failed; // Envoy's timeout or reset
    }
    let Ok(map) = hostcall::http_call_response_headers() else {
        return Answer::Failed;
    };
    let mut status = None;
    let mut headers = Vec::new();
    for (name, value) in map.pairs() {
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            continue;
        };
        if name == ":status" {
            status = value.parse::<u16>().ok();
        } else if !name.starts_with(':') {
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    let Some(status) = status else {
        return Answer::Failed;
    };
    if body_size > max_answer_bytes {
        return Answer::TooLarge {
            status,
            size: body_size,
        };
    }
    let body = match hostcall::buffer(BufferType::HttpCallResponseBody, 0, body_size) {
        Ok(body) => body.unwrap_or_default(),
        Err(_) => return Answer::Failed,
    };
    Answer::Response {
        status,
        headers,
        body,
    }
}
