//! The size budget: every component's release `.wasm` is at most 512 KiB. Start-up is not what
//! this protects (Spin 3.6.3 starts all seven components in 0.2 s); it keeps a component from
//! quietly pulling in a heavy dependency.

use spin_test_host::manifest::Manifest;

const BUDGET_BYTES: u64 = 512 * 1024;

#[test]
fn every_component_is_within_the_size_budget() {
    let manifest = Manifest::load(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml").as_ref())
        .expect("spin.toml loads");
    // `spin build`: each component's build command, as `spin up --build` runs it.
    spin_test_host::spin_build(&manifest).expect("the components build");
    assert!(manifest.components.len() >= 7, "every component is checked");
    for id in manifest.components.keys() {
        let path = manifest.source_path(id).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes <= BUDGET_BYTES, "{id}: {} is {bytes} bytes", path.display());
    }
}
