//! The proxy-wasm ABI 0.2.1 vocabulary (status codes, enums) and access to
//! the guest's linear memory.
//!
//! Guest pointers and sizes are 32-bit (`wasm32`); every read or write is
//! bounds-checked and turns into [`Status::InvalidMemoryAccess`] rather than
//! a host panic.

use wasmtime::{Caller, Extern, Memory};

use crate::state::State;

/// A hostcall's result code, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, context, queue, call or function does not exist.
    NotFound = 1,
    /// The call is not valid now (e.g. editing headers already passed on).
    BadArgument = 2,
    /// A value could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// A pointer or size fell outside the guest's memory.
    InvalidMemoryAccess = 6,
    /// The shared queue has no item.
    Empty = 7,
    /// `proxy_set_shared_data` was given a stale CAS.
    CasMismatch = 8,
    /// The host failed.
    InternalFailure = 10,
    /// The host does not implement this call.
    Unimplemented = 12,
}

impl Status {
    /// The code as returned to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// What a stream callback tells the host to do with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pass the data on.
    Continue,
    /// Hold the data until the plugin resumes (or answers) the stream.
    Pause,
}

impl Action {
    pub(crate) fn from_code(code: i32) -> Self {
        if code == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// The header maps a plugin can address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapType {
    /// Headers of the downstream request.
    RequestHeaders,
    /// Trailers of the downstream request.
    RequestTrailers,
    /// Headers of the upstream response.
    ResponseHeaders,
    /// Trailers of the upstream response.
    ResponseTrailers,
    /// Headers of the answer to a `proxy_http_call`.
    HttpCallResponseHeaders,
    /// Trailers of the answer to a `proxy_http_call`.
    HttpCallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// The byte buffers a plugin can address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufferType {
    RequestBody,
    ResponseBody,
    HttpCallResponseBody,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            4 => BufferType::HttpCallResponseBody,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            _ => return None,
        })
    }
}

/// A log level, as in `proxy_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    pub(crate) fn code(self) -> u32 {
        self as u32
    }

    /// Lower-case name, as Envoy prints it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// The two directions of an HTTP stream, as in `proxy_continue_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    /// The downstream request, towards the upstream.
    Request,
    /// The upstream response, towards the downstream.
    Response,
}

impl StreamType {
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(StreamType::Request),
            1 => Some(StreamType::Response),
            _ => None,
        }
    }
}

/// A guest pointer or size: `usize` in a `wasm32` guest, `i32` on the wire.
pub(crate) fn guest_u32(value: i32) -> u32 {
    value as u32
}

fn memory(caller: &mut Caller<'_, State>) -> Result<Memory, Status> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Status::InvalidMemoryAccess),
    }
}

/// Copies `len` bytes at `ptr` out of the guest.
pub(crate) fn read(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let (ptr, len) = (guest_u32(ptr) as usize, guest_u32(len) as usize);
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = memory(caller)?;
    let data = memory.data(&caller);
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    data.get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Like [`read`], as UTF-8 (lossy: header names and keys are text).
pub(crate) fn read_string(
    caller: &mut Caller<'_, State>,
    ptr: i32,
    len: i32,
) -> Result<String, Status> {
    read(caller, ptr, len).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes `bytes` at `ptr` in the guest.
pub(crate) fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let memory = memory(caller)?;
    memory
        .write(caller, guest_u32(ptr) as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)
}

/// Writes a little-endian `u32` (a returned size, id or token).
pub(crate) fn write_u32(
    caller: &mut Caller<'_, State>,
    ptr: i32,
    value: u32,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into a fresh guest allocation and stores its address and
/// size at `ptr_out` / `size_out`, the way every `proxy_get_*` returns data.
/// The guest owns (and frees) the allocation.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, State>,
    bytes: &[u8],
    ptr_out: i32,
    size_out: i32,
) -> Result<(), Status> {
    let address = if bytes.is_empty() {
        0
    } else {
        let address = allocate(caller, bytes.len())?;
        write(caller, address, bytes)?;
        address
    };
    write_u32(caller, ptr_out, guest_u32(address))?;
    write_u32(caller, size_out, bytes.len() as u32)
}

/// Asks the guest for `size` bytes (`proxy_on_memory_allocate`, else `malloc`).
fn allocate(caller: &mut Caller<'_, State>, size: usize) -> Result<i32, Status> {
    let size = i32::try_from(size).map_err(|_| Status::InvalidMemoryAccess)?;
    let allocator = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
        .ok_or(Status::InternalFailure)?;
    let allocator = allocator
        .typed::<i32, i32>(&caller)
        .map_err(|_| Status::InternalFailure)?;
    match allocator.call(caller, size) {
        Ok(0) | Err(_) => Err(Status::InternalFailure),
        Ok(address) => Ok(address),
    }
}
