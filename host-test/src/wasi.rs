//! The few WASI preview1 calls a `wasm32-wasip1` plugin imports, without a
//! filesystem: stdout and stderr go to the host's log, clocks read the
//! test's clock, the environment is
//! [`crate::HostOptions::environment`], and there are no arguments or preopens.

use wasmtime::{Caller, Linker};

use crate::abi::{self, guest_u32};
use crate::state::State;

const MODULE: &str = "wasi_snapshot_preview1";
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ESPIPE: i32 = 70;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;

/// Defines the shim's functions in `linker`.
pub(crate) fn define(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(MODULE, "clock_time_get", clock_time_get)?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut caller: Caller<'_, State>, _id: i32, out: i32| {
            errno(abi::write(&mut caller, out, &1u64.to_le_bytes()))
        },
    )?;
    linker.func_wrap(MODULE, "random_get", random_get)?;
    linker.func_wrap(MODULE, "environ_get", environ_get)?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut caller: Caller<'_, State>, count: i32, size: i32| {
            let entries = environ(caller.data());
            let total: usize = entries.iter().map(Vec::len).sum();
            errno(
                abi::write_u32(&mut caller, count, entries.len() as u32)
                    .and_then(|()| abi::write_u32(&mut caller, size, total as u32)),
            )
        },
    )?;
    linker.func_wrap(MODULE, "args_get", |_: i32, _: i32| SUCCESS)?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut caller: Caller<'_, State>, count: i32, size: i32| {
            errno(
                abi::write_u32(&mut caller, count, 0)
                    .and_then(|()| abi::write_u32(&mut caller, size, 0)),
            )
        },
    )?;
    linker.func_wrap(MODULE, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::format_err!("the plugin called proc_exit({code})"))
    })?;
    linker.func_wrap(MODULE, "sched_yield", || SUCCESS)?;
    linker.func_wrap(MODULE, "fd_close", |fd: i32| stdio_or(fd, SUCCESS))?;
    linker.func_wrap(MODULE, "fd_seek", |fd: i32, _: i64, _: i32, _: i32| {
        stdio_or(fd, ESPIPE)
    })?;
    linker.func_wrap(MODULE, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(MODULE, "fd_prestat_get", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(MODULE, "fd_prestat_dir_name", |_: i32, _: i32, _: i32| {
        EBADF
    })?;
    Ok(())
}

fn errno(result: Result<(), abi::Status>) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

/// `ok` for stdin, stdout and stderr; `EBADF` for every other descriptor.
fn stdio_or(fd: i32, ok: i32) -> i32 {
    if (0..=2).contains(&fd) {
        ok
    } else {
        EBADF
    }
}

fn fd_write(mut caller: Caller<'_, State>, fd: i32, iovs: i32, iovs_len: i32, written: i32) -> i32 {
    if !(1..=2).contains(&fd) {
        return EBADF;
    }
    let mut total = 0u32;
    for index in 0..guest_u32(iovs_len) {
        let Some(at) = guest_u32(iovs).checked_add(index * 8) else {
            return EFAULT;
        };
        let Ok(iov) = abi::read(&mut caller, at as i32, 8) else {
            return EFAULT;
        };
        let word = |offset: usize| {
            u32::from_le_bytes([
                iov[offset],
                iov[offset + 1],
                iov[offset + 2],
                iov[offset + 3],
            ])
        };
        let Ok(bytes) = abi::read(&mut caller, word(0) as i32, word(4) as i32) else {
            return EFAULT;
        };
        total += bytes.len() as u32;
        caller.data_mut().write_stdio(fd == 2, &bytes);
    }
    errno(abi::write_u32(&mut caller, written, total))
}

fn clock_time_get(mut caller: Caller<'_, State>, id: i32, _precision: i64, out: i32) -> i32 {
    // 0 realtime, 1 monotonic, 2 and 3 CPU time: all follow the test's clock.
    if !(0..=3).contains(&id) {
        return EINVAL;
    }
    let now = caller.data().now_nanos();
    errno(abi::write(&mut caller, out, &now.to_le_bytes()))
}

/// The VM's environment as WASI hands it over: `NAME=value\0` each.
fn environ(state: &State) -> Vec<Vec<u8>> {
    state
        .options
        .environment
        .iter()
        .map(|(name, value)| format!("{name}={value}\0").into_bytes())
        .collect()
}

fn environ_get(mut caller: Caller<'_, State>, pointers: i32, buffer: i32) -> i32 {
    let mut at = guest_u32(buffer);
    for (i, entry) in environ(caller.data()).iter().enumerate() {
        let slot = guest_u32(pointers) + 4 * i as u32;
        let written = abi::write_u32(&mut caller, slot as i32, at)
            .and_then(|()| abi::write(&mut caller, at as i32, entry));
        if written.is_err() {
            return EFAULT;
        }
        at += entry.len() as u32;
    }
    SUCCESS
}

fn random_get(mut caller: Caller<'_, State>, buf: i32, len: i32) -> i32 {
    let bytes = caller.data_mut().random_bytes(guest_u32(len) as usize);
    errno(abi::write(&mut caller, buf, &bytes))
}

fn fd_fdstat_get(mut caller: Caller<'_, State>, fd: i32, out: i32) -> i32 {
    if !(0..=2).contains(&fd) {
        return EBADF;
    }
    // fdstat: filetype u8, flags u16 at 2, rights_base u64 at 8, rights_inheriting u64 at 16.
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    errno(abi::write(&mut caller, out, &stat))
}
