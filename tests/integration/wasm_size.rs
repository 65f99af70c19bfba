//! The size budget: every component's release `.wasm` is at most 512 KiB. Start-up is not what
//! this protects (Spin 3.6.3 starts all seven components in 0.2 s); it keeps a component from
//! quietly pulling in a heavy dependency. Every app the repository builds is checked: the
//! services, the subscriber, the login example and the test fixtures (sizes in
//! docs/benchmarks.md, "Component sizes").

use spin_test_host::manifest::Manifest;

const BUDGET_BYTES: u64 = 512 * 1024;

/// Every Spin manifest whose components the workspace builds.
const MANIFESTS: &[&str] = &[
    "spin.toml",
    "spin-subscriber.toml",
    "examples/login/spin.toml",
    "tests/host/fixtures/library.toml",
    "tests/host/fixtures/probe.toml",
];

#[test]
fn every_component_is_within_the_size_budget() {
    let mut checked = 0;
    for file in MANIFESTS {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let manifest = Manifest::load(&path).unwrap_or_else(|e| panic!("{file} loads: {e}"));
        // `spin build`: each component's build command, as `spin up --build` runs it.
        spin_test_host::spin_build(&manifest).expect("the components build");
        for id in manifest.components.keys() {
            let path = manifest.source_path(id).unwrap();
            let bytes = std::fs::metadata(&path).unwrap().len();
            assert!(bytes <= BUDGET_BYTES, "{file}, {id}: {} is {bytes} bytes", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 14, "every component is checked ({checked})");
}
