//! Requests held (paused) by a plugin and released later from the root
//! context: the root's timer or a callout answer ends the wait, and only the
//! root of the VM that holds a request can release it (DESIGN.md, "Hold and
//! resume from the root works"). A client that went away while held leaves
//! an id that `set_effective_context` refuses (`BadArgument`): that is a
//! normal outcome here, never a panic. The queue of held requests itself is
//! pure: `agentward_core::held::HeldQueue`.

use crate::{hostcall, log, respond};
use agentward_core::response::LocalResponse;
use agentward_core::step::Edits;
use proxy_wasm::types::LogLevel;

/// What became of a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// It went on (resumed) or was answered.
    Done,
    /// Its client went away: there was nothing to release.
    Gone,
    /// The host refused an edit or the resume; the request was answered
    /// 503 instead where that was still possible.
    Failed,
}

/// Runs `f` in the held request `id`'s context, then makes the root `root`
/// current again. `None` when the request is gone.
pub fn within<R>(id: u32, root: u32, f: impl FnOnce() -> R) -> Option<R> {
    if hostcall::set_effective_context(id).is_err() {
        return None;
    }
    let r = f();
    let _ = hostcall::set_effective_context(root);
    Some(r)
}

/// Lets held request `id` go on with `edits` (made in its headers phase,
/// which it is still in), from root context `root`.
pub fn resume(id: u32, root: u32, edits: &Edits) -> Released {
    within(id, root, || resume_current(edits)).unwrap_or(Released::Gone)
}

/// Answers held request `id` with `answer`, from root context `root`.
pub fn answer(id: u32, root: u32, answer: &LocalResponse) -> Released {
    within(id, root, || {
        respond(answer);
        Released::Done
    })
    .unwrap_or(Released::Gone)
}

/// Applies `edits` to the current (held) request and resumes it; a refused
/// edit answers 503 instead (a half-edited request never goes on).
pub fn resume_current(edits: &Edits) -> Released {
    if !crate::step::edit_request(edits) {
        return Released::Failed; // answered 503
    }
    match hostcall::resume_request() {
        Ok(()) => Released::Done,
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("agentward: could not resume a held request ({status:?})"),
            );
            Released::Failed
        }
    }
}
