//! Unexports the proxy-wasm callbacks a plugin does not implement.
//!
//! The Rust SDK exports every `proxy_on_*` callback, and Envoy calls each one
//! it finds: a filter that only looks at request headers still pays a call
//! into the VM for the response headers, the response body, the log and the
//! end of the stream (about 2k instructions each, measured with `cargo xtask
//! bench --instructions`). A callback that is not exported is skipped by the
//! host, which is the behaviour the SDK's no-op default has anyway.
//!
//! Each plugin names the callbacks it implements with
//! `agentward_envoy::callbacks!`, a custom section `agentward.callbacks`;
//! this step keeps those and the ones the SDK always needs, unexports the
//! other `proxy_on_*` exports and drops the section. A module without the
//! section is left as it is.

/// The custom section a plugin lists its callbacks in, one name per line.
pub const SECTION: &str = "agentward.callbacks";

/// Callbacks the SDK needs whatever the plugin implements: its context
/// bookkeeping, its configuration and its allocator.
const ALWAYS: &[&str] = &[
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_delete",
];

const CUSTOM: u8 = 0;
const EXPORT: u8 = 7;

/// A module after [`prune`].
pub struct Pruned {
    /// The rewritten module.
    pub module: Vec<u8>,
    /// The exports it no longer has.
    pub removed: Vec<String>,
}

/// The module with the unneeded callbacks unexported; `None` when the
/// module carries no callbacks section.
pub fn prune(module: &[u8]) -> Result<Option<Pruned>, String> {
    let sections = sections(module)?;
    let mut listed: Option<Vec<String>> = None;
    for s in &sections {
        if s.id == CUSTOM {
            let (name, rest) = name(s.body)?;
            if name == SECTION {
                let text = std::str::from_utf8(rest)
                    .map_err(|_| format!("the {SECTION} section is not UTF-8"))?;
                listed
                    .get_or_insert_with(Vec::new)
                    .extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
        }
    }
    let Some(listed) = listed else {
        return Ok(None);
    };
    let mut keep = |export: &str| {
        !export.starts_with("proxy_on_")
            || ALWAYS.contains(&export)
            || listed.iter().any(|l| l == export)
    };
    let mut out = module[..8].to_vec();
    let mut removed = Vec::new();
    for s in &sections {
        match s.id {
            CUSTOM if name(s.body)?.0 == SECTION => continue,
            EXPORT => {
                let body = exports(s.body, &mut keep, &mut removed)?;
                push_section(&mut out, EXPORT, &body);
            }
            _ => out.extend_from_slice(s.raw),
        }
    }
    Ok(Some(Pruned {
        module: out,
        removed,
    }))
}

pub(super) struct Section<'a> {
    pub(super) id: u8,
    pub(super) body: &'a [u8],
    /// The whole section: id, size and body.
    pub(super) raw: &'a [u8],
}

pub(super) fn sections(module: &[u8]) -> Result<Vec<Section<'_>>, String> {
    if module.len() < 8 || &module[..4] != b"\0asm" {
        return Err("not a WebAssembly module".into());
    }
    let mut sections = Vec::new();
    let mut at = 8;
    while at < module.len() {
        let id = module[at];
        let (size, body_at) = leb128(module, at + 1)?;
        let end = body_at
            .checked_add(size)
            .filter(|end| *end <= module.len())
            .ok_or("a section runs past the end of the module")?;
        sections.push(Section {
            id,
            body: &module[body_at..end],
            raw: &module[at..end],
        });
        at = end;
    }
    Ok(sections)
}

/// The export section with the exports `keep` refuses left out.
fn exports(
    body: &[u8],
    keep: &mut dyn FnMut(&str) -> bool,
    removed: &mut Vec<String>,
) -> Result<Vec<u8>, String> {
    let (count, mut at) = leb128(body, 0)?;
    let mut kept = Vec::new();
    let mut kept_count = 0;
    for _ in 0..count {
        let start = at;
        let (export, after_name) = name(&body[at..])?;
        let export = export.to_string();
        at = body.len() - after_name.len();
        // kind byte, then the index.
        let (_, end) = leb128(body, at + 1)?;
        at = end;
        if keep(&export) {
            kept.extend_from_slice(&body[start..end]);
            kept_count += 1;
        } else {
            removed.push(export);
        }
    }
    let mut out = Vec::new();
    write_leb128(&mut out, kept_count);
    out.extend_from_slice(&kept);
    Ok(out)
}

/// A length-prefixed name and what follows it.
fn name(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let (len, at) = leb128(bytes, 0)?;
    let end = at
        .checked_add(len)
        .filter(|end| *end <= bytes.len())
        .ok_or("a name runs past its section")?;
    let name = std::str::from_utf8(&bytes[at..end]).map_err(|_| "a name is not UTF-8")?;
    Ok((name, &bytes[end..]))
}

fn leb128(bytes: &[u8], mut at: usize) -> Result<(usize, usize), String> {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at).ok_or("a number runs past the end")?;
        at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((value, at));
        }
    }
    Err("a number longer than 32 bits".into())
}

fn write_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(super) fn push_section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    write_leb128(out, body.len());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_bytes(out: &mut Vec<u8>, name: &str) {
        write_leb128(out, name.len());
        out.extend_from_slice(name.as_bytes());
    }

    /// A module with a type section, the given function exports and, when
    /// given, a callbacks section.
    fn module(exports: &[&str], callbacks: Option<&str>) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        push_section(&mut m, 1, &[1, 0x60, 0, 0]);
        let mut body = Vec::new();
        write_leb128(&mut body, exports.len());
        for (i, e) in exports.iter().enumerate() {
            name_bytes(&mut body, e);
            body.push(0);
            write_leb128(&mut body, 200 + i);
        }
        push_section(&mut m, EXPORT, &body);
        if let Some(list) = callbacks {
            let mut body = Vec::new();
            name_bytes(&mut body, SECTION);
            body.extend_from_slice(list.as_bytes());
            push_section(&mut m, CUSTOM, &body);
        }
        m
    }

    #[test]
    fn keeps_listed_and_required_callbacks_and_everything_else() {
        let all = [
            "memory",
            "_initialize",
            "proxy_abi_version_0_2_1",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_log",
            "proxy_on_tick",
        ];
        let m = module(&all, Some("proxy_on_request_headers\nproxy_on_tick\n"));
        let Pruned {
            module: pruned,
            removed,
        } = prune(&m).unwrap().unwrap();
        assert_eq!(removed, ["proxy_on_response_headers", "proxy_on_log"]);
        let names = |m: &[u8]| -> Vec<String> {
            let s = sections(m).unwrap();
            let e = s.iter().find(|s| s.id == EXPORT).unwrap();
            let mut v = Vec::new();
            let mut all = |n: &str| {
                v.push(n.to_string());
                true
            };
            exports(e.body, &mut all, &mut Vec::new()).unwrap();
            v
        };
        let kept: Vec<&str> = all
            .into_iter()
            .filter(|n| !removed.contains(&n.to_string()))
            .collect();
        assert_eq!(names(&pruned), kept);
        assert!(sections(&pruned).unwrap().iter().all(|s| s.id != CUSTOM));
        // Pruning again finds no section: the module is left alone.
        assert!(prune(&pruned).unwrap().is_none());
    }

    #[test]
    fn leaves_a_module_without_the_section_alone() {
        let m = module(&["proxy_on_log"], None);
        assert!(prune(&m).unwrap().is_none());
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        assert!(prune(b"\0asm\x01\0\0\0\x07\x05\x01").is_err());
        assert!(prune(b"ELF").is_err());
    }
}
