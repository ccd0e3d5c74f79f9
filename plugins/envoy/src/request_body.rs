//! Reading a request's body to its end for a decision: how core's
//! [`Step::ReadBody`] and [`BodyStep`] are carried out in Envoy, for any
//! plugin. Shaped by DESIGN.md's traps:
//!
//! - trap 2: the step's header edits are made in the headers callback,
//!   while the headers are still held ([`start`]);
//! - trap 1: the headers callback then returns `Continue` (a paused header
//!   phase never sees the body), and the body callback returns `Pause`
//!   until `end_of_stream`, so Envoy buffers it ([`BodyRead::on_body`]);
//!   above `max_bytes` the request is answered 413;
//! - a request that ends with its headers is decided at once, on an empty
//!   body, with its headers still held ([`Started::Whole`]).
//!
//! The plugin decides on the whole body and carries out the [`BodyStep`]
//! ([`carry_out`]): keep (go on), replace (Envoy sends the new body; the
//! headers phase must have removed `content-length`), respond (the
//! upstream stream is reset), or call (the request stays paused; the
//! answer comes to the context's `on_http_call_response`, and
//! [`crate::step::carry_out`] with [`crate::step::Phase::Held`] resumes or
//! answers it then). Request trailers end a body too: a plugin that reads
//! bodies implements `on_http_request_trailers` with [`BodyRead::on_trailers`].
//!
//! ```ignore
//! // headers callback, on Step::ReadBody { edits, max_bytes }:
//! match request_body::start(&edits, max_bytes, end_of_stream) {
//!     Started::Read(reader) => { self.reader = Some(reader); Action::Continue }
//!     Started::Whole => self.decide_body(Vec::new(), 0),   // headers still held
//!     Started::Answered => Action::Pause,
//! }
//! // body callback:
//! match reader.on_body(body_size, end_of_stream) {
//!     Chunk::More | Chunk::Answered => Action::Pause,
//!     Chunk::Whole(body) => request_body::carry_out(&core_step(&body), body_size).action(),
//! }
//! ```

use crate::step::{self, Carried};
use crate::{hostcall, log, respond};
use agentward_core::response::LocalResponse;
use agentward_core::step::{BodyStep, Edits};
use proxy_wasm::types::{BufferType, LogLevel};
use serde_json::json;

/// What became of a [`Step::ReadBody`](agentward_core::step::Step::ReadBody)
/// in the headers callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Edits made: return `Continue` from the headers callback and read the
    /// body with this reader.
    Read(BodyRead),
    /// The request ended with its headers: decide now on an empty body;
    /// the headers are still held (edits are still possible).
    Whole,
    /// An edit was refused and the request answered (503): return `Pause`.
    Answered,
}

/// A request body being read to its end, at most `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRead {
    max_bytes: usize,
}

/// What a body callback brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Not the end yet: return `Pause` (Envoy keeps buffering).
    More,
    /// The whole body: decide, then [`carry_out`].
    Whole(Vec<u8>),
    /// Too large, or unreadable: answered (413 or 503); return `Pause`.
    Answered,
}

/// Carries out a `ReadBody` step in the headers callback: makes `edits`
/// now (trap 2) and says how the body is read.
pub fn start(edits: &Edits, max_bytes: usize, end_of_stream: bool) -> Started {
    if !step::edit_request(edits) {
        return Started::Answered; // answered 503
    }
    if end_of_stream {
        Started::Whole
    } else {
        Started::Read(BodyRead { max_bytes })
    }
}

impl BodyRead {
    /// The largest body read.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// In `on_http_request_body` (`body_size`: all buffered so far).
    pub fn on_body(&self, body_size: usize, end_of_stream: bool) -> Chunk {
        if body_size > self.max_bytes {
            respond(&too_large(self.max_bytes));
            return Chunk::Answered;
        }
        if !end_of_stream {
            return Chunk::More;
        }
        self.whole(body_size)
    }

    /// In `on_http_request_trailers`: the body ended before them; the
    /// buffered body is whole.
    pub fn on_trailers(&self) -> Chunk {
        // The buffered body's size is not given here: read up to the bound
        // and one byte more to tell a body over it.
        match hostcall::buffer(BufferType::HttpRequestBody, 0, self.max_bytes + 1) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                if body.len() > self.max_bytes {
                    respond(&too_large(self.max_bytes));
                    return Chunk::Answered;
                }
                Chunk::Whole(body)
            }
            Err(_) => {
                respond(&unreadable());
                Chunk::Answered
            }
        }
    }

    fn whole(&self, body_size: usize) -> Chunk {
        if body_size == 0 {
            return Chunk::Whole(Vec::new());
        }
        match hostcall::buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => Chunk::Whole(body.unwrap_or_default()),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("agentward: could not read a request body ({status:?})"),
                );
                respond(&unreadable());
                Chunk::Answered
            }
        }
    }
}

/// Carries out the decision on a whole body, in the body callback (or in
/// the headers callback after [`Started::Whole`]; `body_size` is then 0):
/// [`Carried::Continue`] lets it go on, [`Carried::Called`] holds it for
/// the answer, [`Carried::CallFailed`] asks the decision again with a
/// failed answer, [`Carried::Pause`] means answered.
pub fn carry_out(step: &BodyStep, body_size: usize) -> Carried {
    match step {
        BodyStep::Keep => Carried::Continue,
        BodyStep::Replace(body) => {
            if replace(body_size, body) {
                Carried::Continue
            } else {
                Carried::Pause
            }
        }
        BodyStep::Respond(answer) => {
            respond(answer);
            Carried::Pause
        }
        BodyStep::Call(call) => match step::dispatch(call) {
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
    }
}

/// Replaces the buffered body (`body_size` bytes) with `body`; a host that
/// refuses answers 503 (the old body never goes on in its place). Returns
/// whether the request may go on.
pub fn replace(body_size: usize, body: &[u8]) -> bool {
    match hostcall::set_buffer(BufferType::HttpRequestBody, 0, body_size, body) {
        Ok(()) => true,
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("agentward: could not replace a request body ({status:?})"),
            );
            respond(&agentward_core::response::unavailable(
                "body_replace_failed",
                "the gateway could not rewrite the request body",
            ));
            false
        }
    }
}

/// 413 for a body over the bound.
pub fn too_large(max_bytes: usize) -> LocalResponse {
    LocalResponse::json(
        413,
        json!({
            "error": "invalid_request",
            "reason": "body_too_large",
            "error_description": format!("the request body is larger than the {max_bytes} bytes this route reads to decide"),
        }),
    )
}

fn unreadable() -> LocalResponse {
    agentward_core::response::unavailable(
        "body_unreadable",
        "the gateway could not read the request body",
    )
}
