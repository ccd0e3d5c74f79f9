//! Rewriting a response body in Envoy (DESIGN.md, "Body buffering" and
//! "Response rewrite works"), for any plugin whose core decides on a
//! response body with a [`BodyStep`]:
//!
//! 1. `on_http_response_headers` decides whether to rewrite and, if so,
//!    calls [`Rewrite::begin`]: `content-length` goes (the agent then gets
//!    the body chunked) while the headers can still change (trap 2). The
//!    headers go on: a paused headers phase would never see the body (trap 1).
//! 2. `on_http_response_body` feeds [`Rewrite::on_body`]: the body is held
//!    (`Pause`) until its end, up to a bound; then core decides.
//! 3. The decision is carried out by [`carry_out`]: keep, replace, or call
//!    out first (the response stays held; the answer comes to the context's
//!    `on_http_call_response`, which carries out the next step with
//!    [`Phase::Held`] and so resumes the response).
//!
//! **Failing closed after the headers went out.** The status and headers
//! already reached the agent when the body is decided, so an answer cannot
//! be a new status. A body that cannot be cut (not the JSON expected,
//! larger than the bound, the FGA service down) is *replaced* by the
//! refusal's JSON body ([`BodyStep::Respond`]: `{"error": …, "reason": …,
//! "error_description": …}`), nothing of the upstream's body with it; a
//! body over the bound is replaced as soon as the bound is passed and every
//! later chunk is dropped. Only when the host refuses even that is the
//! stream ended by a local reply, which Envoy turns into a reset once
//! headers are out: the agent then gets a truncated answer, never the
//! upstream's body.

use crate::step::{dispatch, Carried, Phase};
use crate::{hostcall, log};
use agentward_core::response::LocalResponse;
use agentward_core::step::BodyStep;
use proxy_wasm::types::{Action, BufferType, LogLevel};

/// One response whose body is being rewritten.
#[derive(Debug, Clone)]
pub struct Rewrite {
    max_bytes: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Held, read to its end.
    Reading,
    /// The whole body was read and handed over.
    Decided,
    /// Over the bound: replaced, every later chunk dropped.
    Dropping,
}

/// What became of a body chunk.
#[derive(Debug)]
pub enum Chunk {
    /// Not the end yet: hold it (return `Pause`).
    Wait,
    /// The whole body, read: decide on it.
    Complete(Vec<u8>),
    /// Over the bound (or unreadable): `too_large` took its place, or the
    /// chunk was dropped; let it go on (`Continue`).
    Replaced,
}

impl Rewrite {
    /// Starts rewriting the current response; call in
    /// `on_http_response_headers`. Removes `content-length` (the body's
    /// length will change). `Err` when the host refuses: the body cannot
    /// be rewritten, so the caller answers instead while headers are held.
    pub fn begin(max_bytes: usize) -> Result<Rewrite, LocalResponse> {
        match hostcall::remove_response_header("content-length") {
            Ok(()) => Ok(Rewrite {
                max_bytes,
                state: State::Reading,
            }),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("agentward: cannot remove the response's content-length ({status:?})"),
                );
                Err(agentward_core::response::unavailable(
                    "response_edit_failed",
                    "the gateway could not prepare the response for filtering",
                ))
            }
        }
    }

    /// Whether the body was handed over or dropped (nothing more to do
    /// but pass later chunks, if any).
    pub fn is_done(&self) -> bool {
        self.state != State::Reading
    }

    /// Feeds `on_http_response_body`'s arguments: `body_size` is what the
    /// host holds of the body so far. Over the bound, the body is replaced
    /// by `too_large` at once.
    pub fn on_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
        too_large: &LocalResponse,
    ) -> Chunk {
        match self.state {
            State::Decided => Chunk::Replaced,
            State::Dropping => {
                replace_or_reset(b"", too_large);
                Chunk::Replaced
            }
            State::Reading if body_size > self.max_bytes => {
                self.state = State::Dropping;
                replace_or_reset(too_large.body.as_bytes(), too_large);
                Chunk::Replaced
            }
            State::Reading if !end_of_stream => Chunk::Wait,
            State::Reading => {
                self.state = State::Decided;
                match hostcall::buffer(BufferType::HttpResponseBody, 0, body_size) {
                    Ok(body) => Chunk::Complete(body.unwrap_or_default()),
                    Err(status) => {
                        log(
                            LogLevel::Warn,
                            &format!("agentward: cannot read the response body ({status:?})"),
                        );
                        replace_or_reset(too_large.body.as_bytes(), too_large);
                        Chunk::Replaced
                    }
                }
            }
        }
    }

    /// The response's trailers came before its body ended (`end_of_stream`
    /// never came with the body): the body cannot be decided on as it is,
    /// so it is replaced by `refusal`'s body. Call in
    /// `on_http_response_trailers`; returns the action.
    pub fn on_trailers(&mut self, refusal: &LocalResponse) -> Action {
        if self.state == State::Reading {
            self.state = State::Dropping;
            replace_or_reset(refusal.body.as_bytes(), refusal);
        }
        Action::Continue
    }
}

/// Carries out a decision on a response body. In the body callback
/// ([`Phase::Headers`]: the callback's return value lets it go on) or on a
/// held response ([`Phase::Held`], from a callout's answer: resumed).
pub fn carry_out(step: &BodyStep, phase: Phase) -> Carried {
    let done = |ok: bool| {
        if !ok {
            return Carried::Pause; // ended by a local reply
        }
        if phase == Phase::Held && hostcall::resume_response().is_err() {
            log(
                LogLevel::Warn,
                "agentward: could not resume a held response",
            );
        }
        Carried::Continue
    };
    match step {
        BodyStep::Keep => done(true),
        BodyStep::Replace(body) => {
            let ok = replace_or_reset(body, &refused_replacement());
            done(ok)
        }
        BodyStep::Respond(answer) => done(replace_or_reset(answer.body.as_bytes(), answer)),
        BodyStep::Call(call) => match dispatch(call) {
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

fn refused_replacement() -> LocalResponse {
    agentward_core::response::unavailable(
        "response_edit_failed",
        "the gateway could not rewrite the response",
    )
}

/// Replaces the held body; when the host refuses, ends the stream with
/// `answer` as a local reply (a reset once headers are out). Whether the
/// replacement was made.
fn replace_or_reset(body: &[u8], answer: &LocalResponse) -> bool {
    match hostcall::replace_response_body(body) {
        Ok(()) => true,
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!(
                    "agentward: cannot replace the response body ({status:?}); ending the stream"
                ),
            );
            crate::respond(answer);
            false
        }
    }
}
