//! The `env.proxy_*` hostcalls of ABI 0.2.1: one thin function per call
//! that reads its arguments from guest memory, acts on [`State`] and writes
//! results back. Every failure is a [`Status`] for the guest, never a trap.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use crate::abi::{self, guest_u32, BufferType, LogLevel, MapType, Status, StreamType};
use crate::foreign;
use crate::headers::{self, HeaderMap};
use crate::http_call::{CallState, HttpCall};
use crate::metrics::MetricKind;
use crate::record::{HeaderEdit, LocalResponse, LogSource};
use crate::state::State;

type Ctx<'a> = Caller<'a, State>;
type Outcome = Result<(), Status>;

/// The status a test forces hostcall `name` to answer (see
/// [`crate::Host::fail_hostcall`]), if any.
fn forced(c: &Ctx, name: &str) -> Option<i32> {
    c.data().failing.get(name).map(|status| status.code())
}

fn code(outcome: Outcome) -> i32 {
    match outcome {
        Ok(()) => Status::Ok.code(),
        Err(status) => status.code(),
    }
}

/// Defines every implemented hostcall in `linker`.
pub(crate) fn define(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    const ENV: &str = "env";
    linker.func_wrap(
        ENV,
        "proxy_log",
        |mut c: Ctx, level: i32, ptr: i32, len: i32| {
            forced(&c, "proxy_log").unwrap_or_else(|| code(log(&mut c, level, ptr, len)))
        },
    )?;
    linker.func_wrap(ENV, "proxy_get_log_level", |mut c: Ctx, out: i32| {
        let level = c.data().options.log_level.code();
        code(abi::write_u32(&mut c, out, level))
    })?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx, out: i32| {
            if let Some(code) = forced(&c, "proxy_get_current_time_nanoseconds") {
                return code;
            }
            let now = c.data().now_nanos();
            code(abi::write(&mut c, out, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx, ms: i32| {
            if let Some(code) = forced(&c, "proxy_set_tick_period_milliseconds") {
                return code;
            }
            let period = Duration::from_millis(u64::from(guest_u32(ms)));
            c.data_mut().tick_period = (!period.is_zero()).then_some(period);
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(ENV, "proxy_get_buffer_bytes", get_buffer_bytes)?;
    linker.func_wrap(ENV, "proxy_set_buffer_bytes", set_buffer_bytes)?;
    linker.func_wrap(ENV, "proxy_get_header_map_pairs", get_header_map_pairs)?;
    linker.func_wrap(ENV, "proxy_set_header_map_pairs", set_header_map_pairs)?;
    linker.func_wrap(ENV, "proxy_get_header_map_value", get_header_map_value)?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        |c: Ctx, map, kp, kl, vp, vl| code(edit_header(c, map, kp, kl, Some((vp, vl)), false)),
    )?;
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        |c: Ctx, map, kp, kl, vp, vl| code(edit_header(c, map, kp, kl, Some((vp, vl)), true)),
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |c: Ctx, map, kp, kl| code(edit_header(c, map, kp, kl, None, true)),
    )?;
    linker.func_wrap(ENV, "proxy_get_property", get_property)?;
    linker.func_wrap(ENV, "proxy_set_property", set_property)?;
    linker.func_wrap(ENV, "proxy_get_shared_data", get_shared_data)?;
    linker.func_wrap(ENV, "proxy_set_shared_data", set_shared_data)?;
    linker.func_wrap(ENV, "proxy_register_shared_queue", register_shared_queue)?;
    linker.func_wrap(ENV, "proxy_resolve_shared_queue", resolve_shared_queue)?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Ctx, id: i32, ptr, len| {
            let outcome = abi::read(&mut c, ptr, len)
                .and_then(|item| c.data().options.shared_data.enqueue(guest_u32(id), &item));
            code(outcome)
        },
    )?;
    linker.func_wrap(ENV, "proxy_dequeue_shared_queue", dequeue_shared_queue)?;
    linker.func_wrap(ENV, "proxy_continue_stream", |mut c: Ctx, stream: i32| {
        let stream = StreamType::from_code(stream).ok_or(Status::BadArgument);
        code(stream.and_then(|stream| c.data_mut().continue_stream(stream)))
    })?;
    linker.func_wrap(ENV, "proxy_close_stream", |mut c: Ctx, stream: i32| {
        let stream = StreamType::from_code(stream).ok_or(Status::BadArgument);
        let outcome =
            stream.and_then(|stream| c.data_mut().http().map(|record| record.closed.push(stream)));
        code(outcome)
    })?;
    linker.func_wrap(ENV, "proxy_send_local_response", send_local_response)?;
    linker.func_wrap(ENV, "proxy_http_call", http_call)?;
    linker.func_wrap(ENV, "proxy_set_effective_context", |mut c: Ctx, id: i32| {
        code(c.data_mut().set_effective_context(guest_u32(id)))
    })?;
    linker.func_wrap(ENV, "proxy_done", || Status::Ok.code())?;
    linker.func_wrap(ENV, "proxy_define_metric", define_metric)?;
    linker.func_wrap(
        ENV,
        "proxy_increment_metric",
        |mut c: Ctx, id: i32, offset: i64| {
            forced(&c, "proxy_increment_metric")
                .unwrap_or_else(|| code(c.data_mut().metrics.increment(guest_u32(id), offset)))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_record_metric",
        |mut c: Ctx, id: i32, value: i64| {
            code(c.data_mut().metrics.record(guest_u32(id), value as u64))
        },
    )?;
    linker.func_wrap(ENV, "proxy_get_metric", |mut c: Ctx, id: i32, out: i32| {
        let outcome = c.data_mut().metrics.get(guest_u32(id));
        code(outcome.and_then(|value| abi::write(&mut c, out, &value.to_le_bytes())))
    })?;
    linker.func_wrap(ENV, "proxy_call_foreign_function", call_foreign_function)?;
    Ok(())
}

fn log(c: &mut Ctx, level: i32, ptr: i32, len: i32) -> Outcome {
    let level = LogLevel::from_code(level).ok_or(Status::BadArgument)?;
    let message = abi::read_string(c, ptr, len)?;
    c.data_mut().log(level, message, LogSource::Plugin);
    Ok(())
}

fn buffer(state: &mut State, buffer: BufferType) -> Result<&mut Vec<u8>, Status> {
    match buffer {
        BufferType::VmConfiguration => Ok(&mut state.options.vm_config),
        BufferType::PluginConfiguration => Ok(&mut state.plugin_config),
        BufferType::HttpCallResponseBody => state
            .call_response
            .as_mut()
            .map(|response| &mut response.body)
            .ok_or(Status::NotFound),
        BufferType::RequestBody => Ok(&mut state.http()?.request.buffer),
        BufferType::ResponseBody => Ok(&mut state.http()?.response.buffer),
    }
}

fn get_buffer_bytes(
    mut c: Ctx,
    kind: i32,
    start: i32,
    max: i32,
    ptr_out: i32,
    size_out: i32,
) -> i32 {
    if let Some(code) = forced(&c, "proxy_get_buffer_bytes") {
        return code;
    }
    let outcome = (|| {
        let kind = BufferType::from_code(kind).ok_or(Status::BadArgument)?;
        let data = buffer(c.data_mut(), kind)?;
        let start = guest_u32(start) as usize;
        if start > data.len() {
            return Err(Status::BadArgument);
        }
        let end = start
            .saturating_add(guest_u32(max) as usize)
            .min(data.len());
        let bytes = data[start..end].to_vec();
        abi::return_bytes(&mut c, &bytes, ptr_out, size_out)
    })();
    code(outcome)
}

/// Envoy's rules: `start == 0` with `size == 0` prepends, with `size` at
/// least the length replaces all; `start` at or past the end appends.
fn set_buffer_bytes(mut c: Ctx, kind: i32, start: i32, size: i32, ptr: i32, len: i32) -> i32 {
    let outcome = (|| {
        let kind = BufferType::from_code(kind).ok_or(Status::BadArgument)?;
        if !matches!(kind, BufferType::RequestBody | BufferType::ResponseBody) {
            return Err(Status::BadArgument);
        }
        let bytes = abi::read(&mut c, ptr, len)?;
        let data = buffer(c.data_mut(), kind)?;
        let (start, size) = (guest_u32(start) as usize, guest_u32(size) as usize);
        if start == 0 && size == 0 {
            data.splice(0..0, bytes);
        } else if start == 0 && size >= data.len() {
            *data = bytes;
        } else if start >= data.len() {
            data.extend_from_slice(&bytes);
        } else {
            return Err(Status::BadArgument);
        }
        Ok(())
    })();
    code(outcome)
}

fn map_type(code: i32) -> Result<MapType, Status> {
    MapType::from_code(code).ok_or(Status::BadArgument)
}

fn get_header_map_pairs(mut c: Ctx, map: i32, ptr_out: i32, size_out: i32) -> i32 {
    if let Some(code) = forced(&c, "proxy_get_header_map_pairs") {
        return code;
    }
    let outcome = map_type(map)
        .and_then(|map| c.data_mut().map(map).map(HeaderMap::serialize))
        .and_then(|bytes| abi::return_bytes(&mut c, &bytes, ptr_out, size_out));
    code(outcome)
}

fn set_header_map_pairs(mut c: Ctx, map: i32, ptr: i32, len: i32) -> i32 {
    let outcome = (|| {
        let map = map_type(map)?;
        let bytes = abi::read(&mut c, ptr, len)?;
        let pairs = headers::deserialize(&bytes).ok_or(Status::ParseFailure)?;
        let new = HeaderMap::from_pairs(&pairs);
        *c.data_mut().map_mut(map)? = new.clone();
        c.data_mut()
            .http()?
            .edits
            .push(HeaderEdit::SetAll(map, new));
        Ok(())
    })();
    code(outcome)
}

fn get_header_map_value(
    mut c: Ctx,
    map: i32,
    kp: i32,
    kl: i32,
    ptr_out: i32,
    size_out: i32,
) -> i32 {
    if let Some(code) = forced(&c, "proxy_get_header_map_value") {
        return code;
    }
    let outcome = (|| {
        let map = map_type(map)?;
        let key = abi::read_string(&mut c, kp, kl)?;
        let value = c
            .data_mut()
            .map(map)?
            .get(&key)
            .ok_or(Status::NotFound)?
            .to_string();
        abi::return_bytes(&mut c, value.as_bytes(), ptr_out, size_out)
    })();
    code(outcome)
}

/// Add (`replace == false`), replace (`value` set) or remove (`value` none).
fn edit_header(
    mut c: Ctx,
    map: i32,
    kp: i32,
    kl: i32,
    value: Option<(i32, i32)>,
    replace: bool,
) -> Outcome {
    let map = map_type(map)?;
    let key = abi::read_string(&mut c, kp, kl)?;
    let value = match value {
        Some((ptr, len)) => Some(abi::read_string(&mut c, ptr, len)?),
        None => None,
    };
    let state = c.data_mut();
    let headers = state.map_mut(map)?;
    let edit = match value {
        Some(value) if replace => {
            headers.replace(&key, &value);
            HeaderEdit::Replace(map, key.to_ascii_lowercase(), value)
        }
        Some(value) => {
            headers.add(&key, &value);
            HeaderEdit::Add(map, key.to_ascii_lowercase(), value)
        }
        None => {
            headers.remove(&key);
            HeaderEdit::Remove(map, key.to_ascii_lowercase())
        }
    };
    state.http()?.edits.push(edit);
    Ok(())
}

/// The ABI separates path segments with NUL; properties are keyed by the
/// dotted path.
fn property_path(c: &mut Ctx, ptr: i32, len: i32) -> Result<String, Status> {
    let path = abi::read_string(c, ptr, len)?;
    Ok(path.trim_end_matches('\0').replace('\0', "."))
}

fn get_property(mut c: Ctx, ptr: i32, len: i32, ptr_out: i32, size_out: i32) -> i32 {
    let outcome = property_path(&mut c, ptr, len).and_then(|path| {
        let value = c.data().options.properties.get(&path).cloned();
        let value = value.ok_or(Status::NotFound)?;
        abi::return_bytes(&mut c, &value, ptr_out, size_out)
    });
    code(outcome)
}

fn set_property(mut c: Ctx, ptr: i32, len: i32, value_ptr: i32, value_len: i32) -> i32 {
    let outcome = property_path(&mut c, ptr, len).and_then(|path| {
        let value = abi::read(&mut c, value_ptr, value_len)?;
        c.data_mut().options.properties.insert(path, value);
        Ok(())
    });
    code(outcome)
}

fn get_shared_data(mut c: Ctx, kp: i32, kl: i32, ptr_out: i32, size_out: i32, cas_out: i32) -> i32 {
    if let Some(code) = forced(&c, "proxy_get_shared_data") {
        return code;
    }
    let outcome = abi::read_string(&mut c, kp, kl).and_then(|key| {
        let (value, cas) = c
            .data()
            .options
            .shared_data
            .get(&key)
            .ok_or(Status::NotFound)?;
        abi::return_bytes(&mut c, &value, ptr_out, size_out)?;
        abi::write_u32(&mut c, cas_out, cas)
    });
    code(outcome)
}

fn set_shared_data(mut c: Ctx, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> i32 {
    if let Some(code) = forced(&c, "proxy_set_shared_data") {
        return code;
    }
    let outcome = (|| {
        let key = abi::read_string(&mut c, kp, kl)?;
        let value = abi::read(&mut c, vp, vl)?;
        c.data()
            .options
            .shared_data
            .set(&key, &value, guest_u32(cas))
    })();
    code(outcome)
}

fn register_shared_queue(mut c: Ctx, np: i32, nl: i32, id_out: i32) -> i32 {
    let outcome = abi::read_string(&mut c, np, nl).and_then(|name| {
        let options = &c.data().options;
        let id = options.shared_data.register_queue(&options.vm_id, &name);
        abi::write_u32(&mut c, id_out, id)
    });
    code(outcome)
}

fn resolve_shared_queue(mut c: Ctx, vp: i32, vl: i32, np: i32, nl: i32, id_out: i32) -> i32 {
    let outcome = (|| {
        let vm_id = abi::read_string(&mut c, vp, vl)?;
        let name = abi::read_string(&mut c, np, nl)?;
        let shared = &c.data().options.shared_data;
        let id = shared
            .resolve_queue(&vm_id, &name)
            .ok_or(Status::NotFound)?;
        abi::write_u32(&mut c, id_out, id)
    })();
    code(outcome)
}

fn dequeue_shared_queue(mut c: Ctx, id: i32, ptr_out: i32, size_out: i32) -> i32 {
    let outcome = c.data().options.shared_data.dequeue(guest_u32(id));
    code(outcome.and_then(|item| abi::return_bytes(&mut c, &item, ptr_out, size_out)))
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn send_local_response(
    mut c: Ctx,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> i32 {
    let outcome = (|| {
        let details = abi::read_string(&mut c, details_ptr, details_len)?;
        let body = abi::read(&mut c, body_ptr, body_len)?;
        let headers = abi::read(&mut c, headers_ptr, headers_len)?;
        let headers = headers::deserialize(&headers).ok_or(Status::ParseFailure)?;
        let record = c.data_mut().http()?;
        record.local_response = Some(LocalResponse {
            status: guest_u32(status),
            details,
            headers: HeaderMap::from_pairs(&headers),
            body,
            grpc_status,
        });
        Ok(())
    })();
    code(outcome)
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn http_call(
    mut c: Ctx,
    cluster_ptr: i32,
    cluster_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_out: i32,
) -> i32 {
    if let Some(code) = forced(&c, "proxy_http_call") {
        return code;
    }
    let outcome = (|| {
        let cluster = abi::read_string(&mut c, cluster_ptr, cluster_len)?;
        let headers = abi::read(&mut c, headers_ptr, headers_len)?;
        let body = abi::read(&mut c, body_ptr, body_len)?;
        let trailers = abi::read(&mut c, trailers_ptr, trailers_len)?;
        let map = |bytes: &[u8]| headers::deserialize(bytes).ok_or(Status::ParseFailure);
        let call = HttpCall {
            token: 0,
            context_id: 0,
            cluster,
            headers: HeaderMap::from_pairs(&map(&headers)?),
            body,
            trailers: HeaderMap::from_pairs(&map(&trailers)?),
            timeout: Duration::from_millis(u64::from(guest_u32(timeout_ms))),
            state: CallState::Pending,
        };
        let token = c.data_mut().dispatch_http_call(call)?;
        abi::write_u32(&mut c, token_out, token)
    })();
    code(outcome)
}

fn define_metric(mut c: Ctx, kind: i32, np: i32, nl: i32, id_out: i32) -> i32 {
    if let Some(code) = forced(&c, "proxy_define_metric") {
        return code;
    }
    let outcome = (|| {
        let kind = MetricKind::from_code(kind).ok_or(Status::BadArgument)?;
        let name = abi::read_string(&mut c, np, nl)?;
        let id = c.data_mut().metrics.define(kind, &name)?;
        abi::write_u32(&mut c, id_out, id)
    })();
    code(outcome)
}

fn call_foreign_function(
    mut c: Ctx,
    np: i32,
    nl: i32,
    ap: i32,
    al: i32,
    ptr_out: i32,
    size_out: i32,
) -> i32 {
    if let Some(code) = forced(&c, "proxy_call_foreign_function") {
        return code;
    }
    let outcome = (|| {
        let name = abi::read_string(&mut c, np, nl)?;
        let arguments = abi::read(&mut c, ap, al)?;
        let enabled = c.data().options.verify_signature;
        let result = foreign::call(&name, &arguments, enabled)?;
        abi::return_bytes(&mut c, &result, ptr_out, size_out)
    })();
    code(outcome)
}
