//! Compiled components, cached in memory for the process and on disk across processes.
//!
//! Compiling a component with Cranelift is the slow part of loading an app, and every test
//! binary and the benchmark's child process load the same `.wasm` files. Spin keeps a
//! compilation cache on disk too. Here it is a directory of precompiled artifacts
//! (`Component::serialize`), one per component file, keyed by a hash of the `.wasm` bytes.
//! Cargo sets the directory (`SPIN_TEST_HOST_COMPILED_DIR`, `.cargo/config.toml`); without
//! it every process compiles for itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

const DIR_VARIABLE: &str = "SPIN_TEST_HOST_COMPILED_DIR";

/// By path and modification time, for this process.
static IN_MEMORY: LazyLock<Mutex<HashMap<PathBuf, (SystemTime, Component)>>> =
    LazyLock::new(Default::default);

/// The compiled component at `path`, from this process's cache, the disk cache, or Cranelift.
pub(crate) fn load(engine: &Engine, path: &Path) -> Result<Component> {
    let modified = std::fs::metadata(path)
        .with_context(|| {
            format!("component source {} is missing (build it first)", path.display())
        })?
        .modified()?;
    let mut in_memory = IN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((when, component)) = in_memory.get(path) {
        if *when == modified {
            return Ok(component.clone());
        }
    }
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let component = match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => load_through_disk(engine, path, &wasm, Path::new(&dir))?,
        None => compile(engine, path, &wasm)?,
    };
    in_memory.insert(path.to_path_buf(), (modified, component.clone()));
    Ok(component)
}

fn compile(engine: &Engine, path: &Path, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", path.display()))
}

fn load_through_disk(engine: &Engine, path: &Path, wasm: &[u8], dir: &Path) -> Result<Component> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("component");
    let digest: String = Sha256::digest(wasm).iter().map(|b| format!("{b:02x}")).collect();
    let artifact = dir.join(format!("{stem}-{digest}.cwasm"));
    if artifact.exists() {
        // SAFETY: the file is one this host wrote with `Component::serialize` (below, renamed
        // into place whole); `deserialize_file` also rejects artifacts from another wasmtime
        // version or engine configuration, and then we compile again.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &artifact) } {
            return Ok(component);
        }
    }
    let component = compile(engine, path, wasm)?;
    // The cache is an optimisation: a failure to write it only costs the next process time.
    let _ = store(&component, dir, stem, &artifact);
    Ok(component)
}

/// Writes the artifact whole (a temporary file renamed into place) and removes older
/// artifacts of the same component file, so the directory holds one per component.
fn store(component: &Component, dir: &Path, stem: &str, artifact: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&component.serialize()?)?;
    file.persist(artifact)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let older = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let same_component = name
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.len() == 64 + ".cwasm".len() && rest.ends_with(".cwasm"));
        if same_component && older != artifact {
            let _ = std::fs::remove_file(older);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble and no sections.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn artifacts(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn keeps_one_artifact_per_component_and_recovers_from_a_damaged_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("compiled");
        let path = tmp.path().join("app.wasm");
        let engine = &*crate::ENGINE;

        load_through_disk(engine, &path, EMPTY_COMPONENT, &dir).unwrap();
        let first = artifacts(&dir);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].starts_with("app-") && first[0].ends_with(".cwasm"));
        // A second process finds it and deserializes it.
        load_through_disk(engine, &path, EMPTY_COMPONENT, &dir).unwrap();
        assert_eq!(artifacts(&dir), first);

        // A rebuilt component (here: one custom section more) replaces the old artifact.
        let rebuilt = [EMPTY_COMPONENT, b"\x00\x05\x04note"].concat();
        load_through_disk(engine, &path, &rebuilt, &dir).unwrap();
        let second = artifacts(&dir);
        assert_eq!(second.len(), 1, "{second:?}");
        assert_ne!(second, first);

        // A damaged artifact is compiled again and rewritten, not an error.
        let artifact = dir.join(&second[0]);
        std::fs::write(&artifact, b"not a compiled component").unwrap();
        load_through_disk(engine, &path, &rebuilt, &dir).unwrap();
        assert!(unsafe { Component::deserialize_file(engine, &artifact) }.is_ok());
    }
}
