//! The store's data: what the hostcalls read and write, and the rules
//! Envoy applies to it (which maps are writable when, which contexts exist).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::{LogLevel, MapType, Status, StreamType};
use crate::headers::HeaderMap;
use crate::host::{HostOptions, ROOT_CONTEXT_ID};
use crate::http_call::{HttpCall, HttpCallResponse};
use crate::metrics::Metrics;
use crate::record::{HttpRecord, LogEntry, LogSource};

/// The store's data: everything the hostcalls read and write.
pub(crate) struct State {
    pub(crate) options: HostOptions,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) now: SystemTime,
    pub(crate) effective_context: u32,
    pub(crate) contexts: BTreeMap<u32, HttpRecord>,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) metrics: Metrics,
    pub(crate) tick_period: Option<Duration>,
    pub(crate) calls: Vec<HttpCall>,
    pub(crate) call_response: Option<HttpCallResponse>,
    /// Hostcalls a test made answer a fixed status instead of acting.
    pub(crate) failing: HashMap<String, Status>,
    random: u64,
    stdio: [Vec<u8>; 2],
}

impl State {
    pub(crate) fn new(options: HostOptions) -> Self {
        Self {
            now: options.start_time,
            options,
            plugin_config: Vec::new(),
            effective_context: ROOT_CONTEXT_ID,
            contexts: BTreeMap::new(),
            logs: Vec::new(),
            metrics: Metrics::default(),
            tick_period: None,
            calls: Vec::new(),
            call_response: None,
            failing: HashMap::new(),
            random: RandomState::new().hash_one(SystemTime::now()),
            stdio: [Vec::new(), Vec::new()],
        }
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        let since_epoch = self.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
    }

    /// splitmix64: plenty for a test host's `random_get`.
    pub(crate) fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.random;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String, source: LogSource) {
        self.logs.push(LogEntry {
            level,
            message,
            context_id: self.effective_context,
            source,
        });
    }

    /// Records stdout/stderr line by line.
    pub(crate) fn write_stdio(&mut self, stderr: bool, bytes: &[u8]) {
        self.stdio[usize::from(stderr)].extend_from_slice(bytes);
        while let Some(end) = self.stdio[usize::from(stderr)]
            .iter()
            .position(|b| *b == b'\n')
        {
            let line: Vec<u8> = self.stdio[usize::from(stderr)].drain(..=end).collect();
            self.log_stdio(stderr, &line[..end]);
        }
    }

    pub(crate) fn flush_stdio(&mut self) {
        for stderr in [false, true] {
            let rest = std::mem::take(&mut self.stdio[usize::from(stderr)]);
            if !rest.is_empty() {
                self.log_stdio(stderr, &rest);
            }
        }
    }

    fn log_stdio(&mut self, stderr: bool, line: &[u8]) {
        let (level, source) = if stderr {
            (LogLevel::Error, LogSource::Stderr)
        } else {
            (LogLevel::Info, LogSource::Stdout)
        };
        self.log(level, String::from_utf8_lossy(line).into_owned(), source);
    }

    /// The live HTTP context the plugin is acting on, if any.
    pub(crate) fn http(&mut self) -> Result<&mut HttpRecord, Status> {
        match self.contexts.get_mut(&self.effective_context) {
            Some(record) if !record.finished => Ok(record),
            _ => Err(Status::BadArgument),
        }
    }

    pub(crate) fn map(&mut self, map: MapType) -> Result<&HeaderMap, Status> {
        if let MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers = map {
            let response = self.call_response.as_ref().ok_or(Status::NotFound)?;
            return Ok(if map == MapType::HttpCallResponseHeaders {
                &response.headers
            } else {
                &response.trailers
            });
        }
        let record = self.http()?;
        Ok(match map {
            MapType::RequestHeaders => &record.request_headers,
            MapType::RequestTrailers => &record.request_trailers,
            MapType::ResponseHeaders => &record.response_headers,
            _ => &record.response_trailers,
        })
    }

    /// A map the plugin may change now: headers only while their callback
    /// runs or holds them (Envoy answers `BadArgument` once they passed on).
    pub(crate) fn map_mut(&mut self, map: MapType) -> Result<&mut HeaderMap, Status> {
        let record = self.http()?;
        match map {
            MapType::RequestHeaders if record.request.headers_open => {
                Ok(&mut record.request_headers)
            }
            MapType::ResponseHeaders if record.response.headers_open => {
                Ok(&mut record.response_headers)
            }
            MapType::RequestTrailers => Ok(&mut record.request_trailers),
            MapType::ResponseTrailers => Ok(&mut record.response_trailers),
            _ => Err(Status::BadArgument),
        }
    }

    pub(crate) fn continue_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        let record = self.http()?;
        record.resumed.push(stream);
        record.resume(stream);
        Ok(())
    }

    pub(crate) fn set_effective_context(&mut self, id: u32) -> Result<(), Status> {
        let live = id == ROOT_CONTEXT_ID
            || self
                .contexts
                .get(&id)
                .is_some_and(|record| !record.finished);
        if !live {
            return Err(Status::BadArgument);
        }
        self.effective_context = id;
        Ok(())
    }

    pub(crate) fn dispatch_http_call(&mut self, mut call: HttpCall) -> Result<u32, Status> {
        let clusters = &self.options.clusters;
        if !clusters.is_empty() && !clusters.contains_key(&call.cluster) {
            return Err(Status::BadArgument);
        }
        if [":method", ":path", ":authority"]
            .iter()
            .any(|name| call.headers.get(name).is_none())
        {
            return Err(Status::BadArgument);
        }
        call.token = self.calls.len() as u32 + 1;
        call.context_id = self.effective_context;
        let token = call.token;
        if let Ok(record) = self.http() {
            record.http_calls.push(token);
        }
        self.calls.push(call);
        Ok(token)
    }

    pub(crate) fn call_mut(&mut self, token: u32) -> Option<&mut HttpCall> {
        let index = (token as usize).checked_sub(1)?;
        self.calls.get_mut(index)
    }
}
