//! `wasm-opt -Oz` (binaryen) for the Spin components. binaryen reads core
//! modules, not components, so the component's main core module (the
//! largest core-module section, id 1: the Rust code; the others are the
//! few-byte shims `wasm-component-ld` adds) is optimised on its own and put
//! back in its place; the rest of the component (types, imports, canonical
//! functions, exports) stays byte for byte. wasm-opt keeps a module's
//! exports, which is all the component refers to.

use super::callbacks::{push_section, sections};
use std::path::Path;
use std::process::Command;

/// The core-module section id in a component.
const CORE_MODULE: u8 = 1;

/// What `wasm-opt` is run with: size first, and the features rustc's
/// wasm32-wasip2 output uses (binaryen 108 detects none without them).
pub const WASM_OPT_ARGS: &[&str] = &[
    "-Oz",
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Whether `wasm-opt` is on the PATH.
pub fn available() -> bool {
    Command::new("wasm-opt").arg("--version").output().is_ok()
}

/// Rewrites the component at `path` with its main core module run through
/// `wasm-opt`; returns its size before and after.
pub fn component(path: &Path) -> Result<(u64, u64), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rewritten = rewrite(&bytes, |module| {
        let input = path.with_extension("core.wasm");
        let output = path.with_extension("core.opt.wasm");
        std::fs::write(&input, module).map_err(|e| format!("{}: {e}", input.display()))?;
        let out = Command::new("wasm-opt")
            .args(WASM_OPT_ARGS)
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .output()
            .map_err(|e| format!("cannot run wasm-opt: {e}"))?;
        let _ = std::fs::remove_file(&input);
        if !out.status.success() {
            return Err(format!(
                "wasm-opt failed on {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let optimised = std::fs::read(&output).map_err(|e| format!("{}: {e}", output.display()))?;
        let _ = std::fs::remove_file(&output);
        Ok(optimised)
    })?;
    // A new file, not a write through cargo's hard link into deps/.
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, &rewritten)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((bytes.len() as u64, rewritten.len() as u64))
}

/// The component with its largest core-module section replaced by what
/// `optimise` makes of it.
fn rewrite(
    component: &[u8],
    mut optimise: impl FnMut(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    // A component's layer field (bytes 6–7) is 1; a core module's is 0.
    if component.get(6..8) != Some(&[1, 0]) {
        return Err("not a WebAssembly component".into());
    }
    let sections = sections(component)?;
    let main = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.id == CORE_MODULE)
        .max_by_key(|(_, s)| s.body.len())
        .map(|(i, _)| i)
        .ok_or("the component has no core module")?;
    let mut out = component[..8].to_vec();
    for (i, section) in sections.iter().enumerate() {
        if i == main {
            push_section(&mut out, CORE_MODULE, &optimise(section.body)?);
        } else {
            out.extend_from_slice(section.raw);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];

    #[test]
    fn only_the_largest_core_module_is_replaced_and_sizes_are_rewritten() {
        let mut c = COMPONENT.to_vec();
        push_section(&mut c, 7, b"types");
        push_section(&mut c, CORE_MODULE, &[1; 200]);
        push_section(&mut c, CORE_MODULE, &[2; 3]);
        let out = rewrite(&c, |m| {
            assert_eq!(m, &[1; 200]);
            Ok(vec![9; 5])
        })
        .unwrap();
        let mut expected = COMPONENT.to_vec();
        push_section(&mut expected, 7, b"types");
        push_section(&mut expected, CORE_MODULE, &[9; 5]);
        push_section(&mut expected, CORE_MODULE, &[2; 3]);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let module = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(rewrite(&module, |m| Ok(m.to_vec())).is_err());
    }
}

#[cfg(test)]
mod real {
    /// On the built components (after `cargo xtask build`): a copy of each,
    /// rewritten, is smaller or the same and still a component.
    /// `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore]
    fn the_built_components_shrink_and_stay_components() {
        for c in crate::build::SPIN_COMPONENTS {
            let path = crate::build::spin_path(c);
            let copy = std::env::temp_dir().join(format!("optimize-{c}.wasm"));
            std::fs::copy(&path, &copy).unwrap();
            let (before, after) = super::component(&copy).unwrap();
            assert!(after <= before, "{c}: {before} → {after}");
            let bytes = std::fs::read(&copy).unwrap();
            assert_eq!(bytes.get(6..8), Some(&[1u8, 0][..]));
            println!("{c}: {before} → {after}");
            std::fs::remove_file(&copy).unwrap();
        }
    }
}
