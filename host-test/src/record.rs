//! What a plugin did: logs, and per HTTP context the callbacks' actions,
//! header edits, bodies passed on, pauses, resumes and local responses.

use crate::abi::{Action, LogLevel, MapType, StreamType};
use crate::headers::HeaderMap;

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// `proxy_log`.
    Plugin,
    /// WASI stdout (`println!`).
    Stdout,
    /// WASI stderr (`eprintln!`, panic messages).
    Stderr,
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `proxy_log`'s level; `Info` for stdout, `Error` for stderr.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// The effective context when it was logged (1 is the root context).
    pub context_id: u32,
    /// Where it came from.
    pub source: LogSource,
}

/// A stream callback of an HTTP context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
}

/// A header-map edit the plugin made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// `proxy_add_header_map_value`.
    Add(MapType, String, String),
    /// `proxy_replace_header_map_value`.
    Replace(MapType, String, String),
    /// `proxy_remove_header_map_value`.
    Remove(MapType, String),
    /// `proxy_set_header_map_pairs`.
    SetAll(MapType, HeaderMap),
}

/// A response the plugin sent instead of passing the request on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Envoy's "response code details".
    pub details: String,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// gRPC status, -1 for none.
    pub grpc_status: i32,
}

impl LocalResponse {
    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One direction of a stream, from the host's side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Direction {
    /// Headers may still be changed: their callback is running, or it
    /// paused and the stream was not resumed yet.
    pub(crate) headers_open: bool,
    /// The headers callback paused and nothing resumed the stream: Envoy
    /// then withholds the body from the plugin (DESIGN.md, "Trap 1").
    pub(crate) headers_held: bool,
    /// The last callback paused and nothing resumed the stream.
    pub(crate) paused: bool,
    /// End of stream was delivered.
    pub(crate) end_of_stream: bool,
    /// Body bytes held by the host, not passed on yet.
    pub(crate) buffer: Vec<u8>,
}

/// Everything one HTTP context did, as a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRecord {
    /// The context id.
    pub id: u32,
    /// The request headers as they stand (what goes upstream).
    pub request_headers: HeaderMap,
    /// The request trailers as they stand.
    pub request_trailers: HeaderMap,
    /// The response headers as they stand (what goes downstream).
    pub response_headers: HeaderMap,
    /// The response trailers as they stand.
    pub response_trailers: HeaderMap,
    /// Request body bytes passed upstream so far.
    pub request_body: Vec<u8>,
    /// Response body bytes passed downstream so far.
    pub response_body: Vec<u8>,
    /// Each stream callback's action, in order.
    pub actions: Vec<(Callback, Action)>,
    /// Header edits, in order.
    pub edits: Vec<HeaderEdit>,
    /// The local response, if the plugin sent one.
    pub local_response: Option<LocalResponse>,
    /// Each `proxy_continue_stream` on this context (directly, or from the
    /// root after `proxy_set_effective_context`).
    pub resumed: Vec<StreamType>,
    /// Each `proxy_close_stream` on this context.
    pub closed: Vec<StreamType>,
    /// Tokens of the callouts this context made.
    pub http_calls: Vec<u32>,
    /// `proxy_on_done` has run: the context is gone.
    pub finished: bool,
    pub(crate) request: Direction,
    pub(crate) response: Direction,
}

impl HttpRecord {
    /// The request went upstream: it reached end of stream, nothing holds
    /// it, and no local response replaced it.
    pub fn sent_upstream(&self) -> bool {
        self.request.end_of_stream && !self.request.paused && self.local_response.is_none()
    }

    /// The request is held: its last callback paused and nothing resumed it.
    pub fn is_paused(&self) -> bool {
        self.request.paused
    }

    /// This direction is held: its last callback paused and nothing
    /// resumed it.
    pub fn is_held(&self, stream: StreamType) -> bool {
        match stream {
            StreamType::Request => self.request.paused,
            StreamType::Response => self.response.paused,
        }
    }

    /// The action the last run of `callback` returned.
    pub fn last_action(&self, callback: Callback) -> Option<Action> {
        self.actions
            .iter()
            .rev()
            .find(|(which, _)| *which == callback)
            .map(|(_, action)| *action)
    }

    pub(crate) fn direction(&mut self, stream: StreamType) -> &mut Direction {
        match stream {
            StreamType::Request => &mut self.request,
            StreamType::Response => &mut self.response,
        }
    }

    /// Lets a held direction go: headers close, buffered body passes on.
    pub(crate) fn resume(&mut self, stream: StreamType) {
        let direction = self.direction(stream);
        direction.headers_open = false;
        direction.headers_held = false;
        direction.paused = false;
        let buffered = std::mem::take(&mut direction.buffer);
        match stream {
            StreamType::Request => self.request_body.extend(buffered),
            StreamType::Response => self.response_body.extend(buffered),
        }
    }
}
