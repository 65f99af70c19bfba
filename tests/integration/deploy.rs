//! Checks the SpinKube deployment without a cluster or Azure.
//!
//! deploy/ is a kustomize tree (docs/deploy-aks.md): deploy/platform and deploy/base, the
//! overlays in deploy/overlays, the cluster-wide shim in deploy/cluster. Each is rendered here
//! by a small renderer of the kustomize subset the tree uses (resources, namespace, JSON 6902
//! patches); where `kubectl` is installed, `the_renderer_agrees_with_kubectl_kustomize`
//! compares its output with the real `kubectl kustomize`. The rendered objects then validate
//! against the SpinApp and SpinAppExecutor CRD schemas (copied from spin-operator v0.6.1 into
//! tests/data/spinkube), reference only components and variables that spin.toml defines, and
//! read only Secret keys that every secret path provides, the Key Vault one included. The
//! scripts pass shellcheck, run twice in a dry run, and the Azure one runs twice against a fake
//! `az` without creating anything the second time or putting a secret on a command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::Value;
use spin_test_host::manifest::{Manifest, RouteConfig};
use spin_test_host::variables::ProviderConfig;

const API_VERSION: &str = "core.spinkube.dev/v1alpha1";
const NAMESPACE: &str = "spin-redis-patterns";
const APP: &str = "spin-redis-patterns";
/// The overlays that deploy the whole app: alternatives, one SpinApp name.
const WHOLE_APP_OVERLAYS: [&str; 5] =
    ["local", "aks-secrets", "aks-keyvault", "autoscaling", "autoscaling-keda"];
const AKS_OVERLAYS: [&str; 4] = ["aks-secrets", "aks-keyvault", "autoscaling", "autoscaling-keda"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn spin_toml() -> Manifest {
    Manifest::load(&root().join("spin.toml")).unwrap()
}

fn files_under(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value =
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

// ---------------------------------------------------------------------------------------------
// The kustomize subset.

/// Kinds that have no namespace (kustomize's namespace transformer leaves them alone).
const CLUSTER_SCOPED: [&str; 4] = ["Namespace", "Shim", "RuntimeClass", "CustomResourceDefinition"];

/// Renders the kustomization in `dir` as `kubectl kustomize` does, for the fields this tree
/// uses; any other field fails the render rather than being silently ignored.
fn render(dir: &Path) -> Vec<Value> {
    let at = dir.display().to_string();
    let text = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .unwrap_or_else(|e| panic!("{at}/kustomization.yaml: {e}"));
    let k: Value = serde_norway::from_str(&text).unwrap();
    for key in k.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "namespace", "resources", "patches"].contains(&key.as_str()),
            "{at}: kustomization field {key} is not supported by the test's renderer"
        );
    }
    assert_eq!(k["kind"], "Kustomization", "{at}");
    let mut objects: Vec<Value> = Vec::new();
    for resource in k["resources"].as_array().into_iter().flatten() {
        let path = dir.join(resource.as_str().unwrap());
        let added = if path.is_dir() {
            render(&path)
        } else {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{at}: resource {}: {e}", path.display()));
            yaml_documents(&text, &path.display().to_string())
        };
        for object in added {
            // kustomize refuses two resources with one id.
            assert!(
                !objects.iter().any(|o| id(o) == id(&object)),
                "{at}: {:?} is declared twice",
                id(&object)
            );
            objects.push(object);
        }
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let file = dir.join(patch["path"].as_str().expect("patches by path only"));
        let ops: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let ops = ops.as_array().unwrap_or_else(|| {
            panic!("{}: only JSON 6902 patches (a list of ops) are supported", file.display())
        });
        let target = &patch["target"];
        let mut matched = 0;
        for object in objects
            .iter_mut()
            .filter(|o| o["kind"] == target["kind"] && o["metadata"]["name"] == target["name"])
        {
            for op in ops {
                json_patch(object, op).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            }
            matched += 1;
        }
        assert_eq!(matched, 1, "{}: the patch's target matches {matched} objects", file.display());
    }
    if let Some(namespace) = k["namespace"].as_str() {
        for object in &mut objects {
            if !CLUSTER_SCOPED.contains(&object["kind"].as_str().unwrap()) {
                object["metadata"]["namespace"] = Value::String(namespace.into());
            }
        }
    }
    objects
}

fn id(object: &Value) -> (String, String) {
    let kind = object["kind"].as_str().unwrap_or_else(|| panic!("no kind: {object}"));
    let name = object["metadata"]["name"].as_str().unwrap_or_else(|| panic!("no name: {object}"));
    (kind.to_owned(), name.to_owned())
}

/// One RFC 6902 operation (add, remove, replace, test) on `doc`.
fn json_patch(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("op without path")?;
    let tokens: Vec<String> =
        path.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let (last, parents) = tokens.split_last().ok_or("empty path")?;
    let mut parent = &mut *doc;
    for token in parents {
        parent = match parent {
            Value::Object(map) => map.get_mut(token),
            Value::Array(list) => token.parse::<usize>().ok().and_then(|i| list.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{path}: {token} does not exist"))?;
    }
    let value = || op.get("value").cloned().ok_or(format!("{path}: op without value"));
    match (op["op"].as_str().ok_or("op without op")?, parent) {
        ("add", Value::Object(map)) => {
            map.insert(last.clone(), value()?);
        }
        ("add", Value::Array(list)) if last == "-" => list.push(value()?),
        ("add", Value::Array(list)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            (i <= list.len()).then_some(()).ok_or(format!("{path}: index out of range"))?;
            list.insert(i, value()?);
        }
        ("remove", Value::Object(map)) => {
            map.remove(last).ok_or(format!("{path}: nothing to remove"))?;
        }
        ("remove", Value::Array(list)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            (i < list.len()).then_some(()).ok_or(format!("{path}: nothing to remove"))?;
            list.remove(i);
        }
        ("replace", parent) | ("test", parent) => {
            let is_test = op["op"] == "test";
            let slot = match parent {
                Value::Object(map) => map.get_mut(last.as_str()),
                Value::Array(list) => last.parse::<usize>().ok().and_then(|i| list.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("{path}: does not exist"))?;
            if is_test {
                (*slot == value()?).then_some(()).ok_or(format!("{path}: test failed"))?;
            } else {
                *slot = value()?;
            }
        }
        (other, _) => return Err(format!("{path}: unsupported op {other}")),
    }
    Ok(())
}

/// Every overlay directory, by name, and the cluster-wide one as "cluster".
fn overlays() -> BTreeMap<String, PathBuf> {
    let mut out: BTreeMap<String, PathBuf> = std::fs::read_dir(root().join("deploy/overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), p))
        .collect();
    out.insert("cluster".into(), root().join("deploy/cluster"));
    out
}

fn rendered(overlay: &str) -> Vec<Value> {
    render(&root().join(if overlay == "cluster" {
        "deploy/cluster".to_owned()
    } else {
        format!("deploy/overlays/{overlay}")
    }))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| (id(d), d.to_string()));
    docs
}

#[test]
fn the_tree_has_the_documented_overlays() {
    let names: BTreeSet<String> = overlays().into_keys().collect();
    for expected in WHOLE_APP_OVERLAYS.iter().chain(&["single-component", "cluster"]) {
        assert!(names.contains(*expected), "deploy/overlays/{expected} is missing");
    }
}

#[test]
fn the_renderer_agrees_with_kubectl_kustomize() {
    let probe = Command::new("kubectl").args(["version", "--client"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("kubectl is not installed: the renderer is not compared with kustomize");
        return;
    }
    for (name, dir) in overlays() {
        let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = yaml_documents(&String::from_utf8(out.stdout).unwrap(), &name);
        assert_eq!(sorted(render(&dir)), sorted(theirs), "{name}: renders differ");
    }
}

#[test]
fn the_renderer_applies_and_checks_patches() {
    let mut doc = serde_json::json!({"spec": {"variables": [{"name": "a", "value": "1"}]}});
    let ops: Value = serde_norway::from_str(
        "- {op: test, path: /spec/variables/0/name, value: a}\n\
         - {op: replace, path: /spec/variables/0/value, value: '2'}\n\
         - {op: add, path: /spec/variables/-, value: {name: b}}\n\
         - {op: add, path: /spec/podLabels, value: {}}\n\
         - {op: add, path: /spec/podLabels/x~1y, value: 'true'}",
    )
    .unwrap();
    for op in ops.as_array().unwrap() {
        json_patch(&mut doc, op).unwrap();
    }
    assert_eq!(doc["spec"]["variables"][0]["value"], "2");
    assert_eq!(doc["spec"]["variables"][1]["name"], "b");
    assert_eq!(doc["spec"]["podLabels"]["x/y"], "true");
    let failing = serde_json::json!({"op": "test", "path": "/spec/variables/1/name", "value": "a"});
    assert!(json_patch(&mut doc, &failing).is_err(), "a failed test op must fail the render");
    let missing = serde_json::json!({"op": "remove", "path": "/spec/replicas"});
    assert!(json_patch(&mut doc, &missing).is_err());
}

// ---------------------------------------------------------------------------------------------
// Schemas.

/// Kubernetes rejects unknown fields (kubectl's strict field validation); JSON Schema allows
/// them unless told otherwise. Close every object schema that lists its properties and does
/// not opt into unknown fields, so a misspelt field fails validation.
fn close_objects(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else { return };
    let has_properties = map.contains_key("properties");
    let open = map.contains_key("additionalProperties")
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if has_properties && !open {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                child.as_object_mut().into_iter().flatten().for_each(|(_, s)| close_objects(s))
            }
            "items" | "additionalProperties" => close_objects(child),
            "anyOf" | "allOf" | "oneOf" => {
                child.as_array_mut().into_iter().flatten().for_each(close_objects)
            }
            _ => {}
        }
    }
}

fn crd(kind: &str) -> Value {
    let file = format!("core.spinkube.dev_{}s.yaml", kind.to_ascii_lowercase());
    let crd: Value = serde_norway::from_str(&read(&format!("tests/data/spinkube/{file}"))).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], kind);
    crd
}

fn crd_validator(kind: &str) -> jsonschema::Validator {
    let crd = crd(kind);
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    close_objects(&mut schema);
    // metadata is an open object in the CRD; the API server checks it, not the schema.
    schema["properties"]["metadata"] = serde_json::json!({"type": "object"});
    jsonschema::validator_for(&schema).unwrap()
}

fn validation_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// The fields of runtime-class-manager v0.2.0's Shim that deploy/cluster uses, as read from its
/// API types (api/v1alpha1/shim_types.go): required fetchStrategy, runtimeClass (name, handler)
/// and rolloutStrategy; platform os linux, arch one of four. Stricter than the CRD where the
/// controller is: its enum allows `rolling`, but v0.2.0's controller stops with "rolling
/// strategy not implemented yet" before creating any install Job (and after creating the
/// RuntimeClass), so only `recreate` installs anything; and the CRD's optional `sha256` is
/// required here, so every node verifies the tarball it installs.
fn shim_errors(shim: &Value) -> Vec<String> {
    let schema = serde_json::json!({
        "type": "object", "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "runtime.spinkube.dev/v1alpha1"},
            "kind": {"const": "Shim"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object", "additionalProperties": false,
                "required": ["fetchStrategy", "runtimeClass", "rolloutStrategy"],
                "properties": {
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "containerdRuntimeOptions":
                        {"type": "object", "additionalProperties": {"type": "string"}},
                    "fetchStrategy": {
                        "type": "object", "additionalProperties": false,
                        "properties": {"platforms": {"type": "array", "items": {
                            "type": "object", "additionalProperties": false,
                            "required": ["os", "arch", "location", "sha256"],
                            "properties": {
                                "os": {"enum": ["linux"]},
                                "arch": {"enum": ["amd64", "arm64", "x86_64", "aarch64"]},
                                "location": {"type": "string"},
                                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}
                            }}}}
                    },
                    "runtimeClass": {
                        "type": "object", "additionalProperties": false,
                        "required": ["name", "handler"],
                        "properties": {"name": {"type": "string"}, "handler": {"type": "string"}}
                    },
                    "rolloutStrategy": {
                        "type": "object", "additionalProperties": false, "required": ["type"],
                        "properties": {
                            "type": {"const": "recreate"}
                        }
                    }
                }
            }
        }
    });
    validation_errors(&jsonschema::validator_for(&schema).unwrap(), shim)
}

#[test]
fn every_overlay_renders_and_validates() {
    let app_validator = crd_validator("SpinApp");
    let executor_validator = crd_validator("SpinAppExecutor");
    let mut checked = 0;
    for name in overlays().keys() {
        let docs = rendered(name);
        assert!(!docs.is_empty(), "{name} renders nothing");
        for doc in &docs {
            let (kind, object) = id(doc);
            let errors = match kind.as_str() {
                "SpinApp" => validation_errors(&app_validator, doc),
                "SpinAppExecutor" => validation_errors(&executor_validator, doc),
                "Shim" => shim_errors(doc),
                _ => Vec::new(),
            };
            assert!(errors.is_empty(), "{name}: {kind} {object}: {errors:#?}");
            if kind.starts_with("SpinApp") {
                assert_eq!(doc["apiVersion"], API_VERSION, "{name}: {kind} {object}");
                checked += 1;
            }
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{name}: {kind} {object}");
            }
        }
    }
    // Six overlays with a SpinApp and an executor each.
    assert!(checked >= 12, "only {checked} SpinKube objects validated");
}

#[test]
fn the_schema_check_catches_misspelt_and_mistyped_fields() {
    let validator = crd_validator("SpinApp");
    let docs = rendered("aks-keyvault");
    let app = one(&docs, "SpinApp", APP);
    assert!(validation_errors(&validator, app).is_empty());

    let mut typo = app.clone();
    let vars = typo["spec"].as_object_mut().unwrap().remove("variables").unwrap();
    typo["spec"]["variable"] = vars;
    assert!(!validation_errors(&validator, &typo).is_empty(), "unknown field accepted");

    let mut wrong_type = app.clone();
    wrong_type["spec"]["replicas"] = Value::String("two".into());
    assert!(!validation_errors(&validator, &wrong_type).is_empty(), "string replicas accepted");

    let mut missing = app.clone();
    missing["spec"].as_object_mut().unwrap().remove("image");
    assert!(!validation_errors(&validator, &missing).is_empty(), "missing image accepted");

    let cluster = rendered("cluster");
    let shim = one(&cluster, "Shim", "spin-v2");
    assert!(shim_errors(shim).is_empty(), "{:#?}", shim_errors(shim));
    let mut bad_shim = shim.clone();
    bad_shim["spec"]["rolloutStrategy"]["type"] = "gradual".into();
    assert!(!shim_errors(&bad_shim).is_empty(), "bad rollout strategy accepted");
    // runtime-class-manager v0.2.0 installs nothing under `rolling`.
    let mut rolling = shim.clone();
    rolling["spec"]["rolloutStrategy"] =
        serde_json::json!({"type": "rolling", "rolling": {"maxUpdate": 1}});
    assert!(!shim_errors(&rolling).is_empty(), "a rolling Shim accepted: it is never installed");
    let mut no_digest = shim.clone();
    no_digest["spec"]["fetchStrategy"]["platforms"][0].as_object_mut().unwrap().remove("sha256");
    assert!(!shim_errors(&no_digest).is_empty(), "a Shim platform without sha256 accepted");
    let mut bad_digest = shim.clone();
    bad_digest["spec"]["fetchStrategy"]["platforms"][1]["sha256"] = "sha256:abc".into();
    assert!(!shim_errors(&bad_digest).is_empty(), "a malformed sha256 accepted");
}

// ---------------------------------------------------------------------------------------------
// Names: alternatives share one, the single component has its own.

#[test]
fn whole_app_overlays_are_alternatives_and_the_single_component_coexists() {
    for overlay in WHOLE_APP_OVERLAYS {
        let docs = rendered(overlay);
        let apps: Vec<_> = of_kind(&docs, "SpinApp").iter().map(|a| id(a).1).collect();
        assert_eq!(apps, [APP], "{overlay}: one SpinApp, named {APP}");
    }
    let single = rendered("single-component");
    let single_apps: Vec<_> = of_kind(&single, "SpinApp").iter().map(|a| id(a).1).collect();
    assert_eq!(single_apps.len(), 1);
    assert_ne!(single_apps[0], APP, "the single component must not replace the whole app");
    // Applied beside any whole-app overlay, every object it shares with it is identical, so
    // neither apply undoes the other.
    for overlay in WHOLE_APP_OVERLAYS {
        let docs = rendered(overlay);
        for object in &single {
            if let Some(other) = docs.iter().find(|d| id(d) == id(object)) {
                let (kind, name) = id(object);
                // The local overlay drops the executor's collector and CA bundle: a laptop
                // runs one or the other, never both.
                if overlay != "local" || kind != "SpinAppExecutor" && kind != "NetworkPolicy" {
                    assert_eq!(
                        object, other,
                        "{overlay} and single-component differ on {kind} {name}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What spin.toml defines.

/// A SpinApp's variable bindings: name → the binding's YAML.
fn bindings(app: &Value) -> BTreeMap<String, Value> {
    app["spec"]["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// Every SpinApp of every overlay, with the overlay's name.
fn all_apps() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for overlay in overlays().keys() {
        for app in of_kind(&rendered(overlay), "SpinApp") {
            out.push((overlay.clone(), app.clone()));
        }
    }
    assert!(out.len() >= 6);
    out
}

#[test]
fn spinapps_reference_only_what_spin_toml_defines() {
    let manifest = spin_toml();
    for (overlay, app) in all_apps() {
        let at = format!("{overlay}: SpinApp {}", id(&app).1);
        for (name, binding) in bindings(&app) {
            let variable = manifest
                .variables
                .get(&name)
                .unwrap_or_else(|| panic!("{at}: variable {name} is not in spin.toml"));
            if variable.secret {
                assert!(
                    binding.get("value").is_none()
                        && !binding["valueFrom"]["secretKeyRef"].is_null(),
                    "{at}: secret variable {name} must come from a secretKeyRef"
                );
            }
        }
        let components = deployed_components(&manifest, &app);
        for c in &components {
            assert!(manifest.components.contains_key(c), "{at}: component {c} is not in spin.toml");
        }
        // Probes must hit a route that this deployment actually serves.
        for probe in ["readiness", "liveness"] {
            let Some(probe_path) = app["spec"]["checks"][probe]["httpGet"]["path"].as_str() else {
                panic!("{at}: no {probe} probe");
            };
            if probe_path == "/.well-known/spin/health" {
                continue;
            }
            let served = manifest.http_triggers.iter().any(|t| {
                matches!(&t.route, RouteConfig::Route(r) if r == probe_path)
                    && components.contains(&t.component)
            });
            assert!(
                served,
                "{at}: {probe} probe {probe_path} is not a route of a deployed component"
            );
        }
    }
}

/// The components a SpinApp deploys: `spec.components`, or all of spin.toml's.
fn deployed_components(manifest: &Manifest, app: &Value) -> Vec<String> {
    match app["spec"]["components"].as_array() {
        Some(list) => list.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        None => manifest.components.keys().cloned().collect(),
    }
}

#[test]
fn whole_app_overlays_set_redis_and_every_secret() {
    let manifest = spin_toml();
    let secrets: Vec<&String> =
        manifest.variables.iter().filter(|(_, v)| v.secret).map(|(k, _)| k).collect();
    assert!(secrets.iter().any(|s| *s == "redis_access_key"));
    for overlay in WHOLE_APP_OVERLAYS {
        let docs = rendered(overlay);
        let app = one(&docs, "SpinApp", APP);
        let provided: BTreeSet<String> = bindings(app).into_keys().collect();
        for name in ["redis_host", "redis_port", "redis_tls"]
            .iter()
            .copied()
            .chain(secrets.iter().map(|s| s.as_str()))
        {
            assert!(provided.contains(name), "{overlay}: {name} is not set");
        }
        let tls = &bindings(app)["redis_tls"]["value"];
        let insecure = bindings(app).get("redis_allow_insecure").map(|b| b["value"].clone());
        if overlay == "local" {
            assert_eq!(*tls, "false", "local: Redis on the laptop has no TLS");
        } else {
            assert_eq!(*tls, "true", "{overlay}: Azure Redis needs TLS");
            assert!(insecure.is_none_or(|v| v == "false"), "{overlay}: insecure Redis allowed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets: one key schema, and the Key Vault path provides it.

/// The `options` of a SpinApp's runtimeConfig stores, each as (what it configures, the option).
fn runtime_config_options(app: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for store in app["spec"]["runtimeConfig"]["keyValueStores"].as_array().into_iter().flatten() {
        for option in store["options"].as_array().into_iter().flatten() {
            let what = format!(
                "runtimeConfig.keyValueStores[{}].{}",
                store["name"].as_str().unwrap_or("?"),
                option["name"].as_str().unwrap_or("?")
            );
            out.push((what, option.clone()));
        }
    }
    out
}

/// Every secretKeyRef a SpinApp makes: (what reads it, Secret, key, optional).
fn secret_refs(app: &Value) -> Vec<(String, String, String, bool)> {
    let variables = bindings(app).into_iter();
    let options = runtime_config_options(app).into_iter();
    variables
        .chain(options)
        .filter_map(|(what, binding)| {
            let r = &binding["valueFrom"]["secretKeyRef"];
            let (secret, key) = (r["name"].as_str()?, r["key"].as_str()?);
            Some((what, secret.to_owned(), key.to_owned(), r["optional"] == true))
        })
        .collect()
}

/// The Secrets the Key Vault path's CSI driver creates, with their keys.
fn key_vault_secret_keys() -> BTreeMap<String, BTreeSet<String>> {
    let docs = rendered("aks-keyvault");
    let spc = of_kind(&docs, "SecretProviderClass");
    assert_eq!(spc.len(), 1);
    spc[0]["spec"]["secretObjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let keys = o["data"].as_array().unwrap().iter();
            let keys = keys.map(|d| d["key"].as_str().unwrap().to_owned()).collect();
            (o["secretName"].as_str().unwrap().to_owned(), keys)
        })
        .collect()
}

/// The example Secrets (deploy/examples/*.example): name → (keys, stringData).
fn example_secrets() -> BTreeMap<String, Value> {
    let examples: Vec<PathBuf> = files_under(&root().join("deploy/examples"), "example")
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains("secret"))
        .collect();
    assert!(examples.len() >= 2);
    examples
        .iter()
        .flat_map(|p| {
            yaml_documents(&std::fs::read_to_string(p).unwrap(), &p.display().to_string())
        })
        .map(|s| {
            assert_eq!(s["kind"], "Secret");
            assert_eq!(s["metadata"]["namespace"], NAMESPACE);
            (s["metadata"]["name"].as_str().unwrap().to_owned(), s["stringData"].clone())
        })
        .collect()
}

#[test]
fn every_overlay_reads_only_keys_of_the_one_secret_schema() {
    let schema = key_vault_secret_keys();
    assert!(schema.len() >= 2, "the vault syncs {schema:?}");
    // The Kubernetes Secrets path has the same Secrets with the same keys.
    let examples = example_secrets();
    for (name, keys) in &schema {
        let example = examples.get(name).unwrap_or_else(|| panic!("no example of Secret {name}"));
        let example_keys: BTreeSet<String> = example.as_object().unwrap().keys().cloned().collect();
        assert_eq!(&example_keys, keys, "example Secret {name} and the vault's sync differ");
    }
    assert_eq!(examples.len(), schema.len(), "an example Secret the vault does not sync");
    let mut refs = 0;
    for (overlay, app) in all_apps() {
        for (what, secret, key, optional) in secret_refs(&app) {
            assert!(
                schema.get(&secret).is_some_and(|keys| keys.contains(&key)),
                "{overlay}: {what} reads {secret}/{key}, which the Key Vault path's Secret lacks \
                 (pods would stick in CreateContainerConfigError)"
            );
            // The operator reads runtime config options before any pod exists: no optional ones.
            assert!(!optional || !what.starts_with("runtimeConfig"), "{overlay}: {what} optional");
            refs += 1;
        }
    }
    assert!(refs >= 40, "only {refs} secret references");
}

/// The keys each `kubectl create secret generic NAME` command in `text` gives its Secret.
fn created_secret_keys(text: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.split("kubectl create secret generic ").nth(1) else { continue };
        let name = rest.split_whitespace().next().unwrap().to_owned();
        let mut command = String::new();
        for l in &lines[i..] {
            command.push_str(l);
            command.push(' ');
            if !l.trim_end().ends_with('\\') {
                break;
            }
        }
        let keys = command
            .split_whitespace()
            .filter_map(|w| {
                let w = w.trim_start_matches('#');
                let v = w.strip_prefix("--from-literal=").or(w.strip_prefix("--from-file="))?;
                Some(v.split_once('=')?.0.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name, keys));
    }
    out
}

#[test]
fn the_guide_creates_the_secrets_with_the_schema_keys() {
    let schema = key_vault_secret_keys();
    let guide = read("docs/deploy-aks.md");
    let commands = created_secret_keys(&guide);
    for name in schema.keys() {
        let made: Vec<_> = commands.iter().filter(|(n, _)| n == name).collect();
        assert!(!made.is_empty(), "the guide never creates the Secret {name}");
        for (_, keys) in made {
            assert_eq!(keys, &schema[name], "the guide creates {name} with other keys");
        }
    }
}

#[test]
fn no_secret_can_be_applied_by_accident() {
    // `kubectl apply -f DIR` (and -R) reads .json, .yaml and .yml files only.
    for extension in ["yaml", "yml", "json"] {
        for file in files_under(&root().join("deploy"), extension) {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in yaml_documents(&text, &file.display().to_string()) {
                assert_ne!(doc["kind"], "Secret", "{} is an applyable Secret", file.display());
            }
        }
    }
    for kustomization in files_under(&root().join("deploy"), "yaml") {
        if kustomization.ends_with("kustomization.yaml") {
            let k: Value =
                serde_norway::from_str(&std::fs::read_to_string(&kustomization).unwrap()).unwrap();
            for resource in k["resources"].as_array().into_iter().flatten() {
                let resource = resource.as_str().unwrap();
                assert!(!resource.ends_with(".example"), "{}: {resource}", kustomization.display());
            }
        }
    }
    // And the placeholders in the examples are placeholders, never a key.
    for (name, data) in example_secrets() {
        for (key, value) in data.as_object().unwrap() {
            let value = value.as_str().unwrap();
            let secret_like = ["access-key", "otp-pepper", "token"].iter().any(|s| key.contains(s));
            if secret_like {
                assert!(value.starts_with('<') && value.ends_with('>'), "{name}/{key}: {value}");
            }
        }
    }
}

#[test]
fn spinapps_define_the_key_value_stores_their_components_use() {
    let manifest = spin_toml();
    let examples = example_secrets();
    let mut stores_checked = 0;
    for (overlay, app) in all_apps() {
        let at = format!("{overlay}: SpinApp {}", id(&app).1);
        let components = deployed_components(&manifest, &app);
        // Spin refuses to start an app whose components list a store label the runtime config
        // does not define, whether or not the code ever opens it.
        let needed: BTreeSet<&String> =
            components.iter().flat_map(|c| &manifest.components[c].key_value_stores).collect();
        for label in needed {
            let stores = app["spec"]["runtimeConfig"]["keyValueStores"].as_array();
            let store = stores
                .into_iter()
                .flatten()
                .find(|s| s["name"] == label.as_str())
                .unwrap_or_else(|| panic!("{at}: keyValueStores does not define {label}"));
            if label == "breaker" {
                // The fast path's breaker: Spin's in-memory store, never Redis (it must
                // answer when Redis does not), and no path (a file would outlive the pod).
                assert_eq!(store["type"], "spin", "{at}: store {label}");
                assert!(store["options"].as_array().is_none_or(|o| o.is_empty()), "{at}");
                continue;
            }
            assert_eq!(store["type"], "redis", "{at}: store {label}");
            let options = store["options"].as_array().unwrap();
            let url: Vec<_> = options.iter().filter(|o| o["name"] == "url").collect();
            assert_eq!(url.len(), 1, "{at}: store {label} needs one url option");
            // The URL carries the access key: a Secret, never a literal here.
            let secret = &url[0]["valueFrom"]["secretKeyRef"];
            assert!(
                url[0].get("value").is_none() && !secret.is_null(),
                "{at}: store {label}'s url must come from a secretKeyRef"
            );
            let secret_name = secret["name"].as_str().unwrap();
            // Same Secret as redis_host, so the store and outbound Redis reach one server and
            // a key rotation updates them together.
            assert_eq!(
                bindings(&app)["redis_host"]["valueFrom"]["secretKeyRef"]["name"],
                secret_name,
                "{at}: store {label} and redis_host come from different Secrets"
            );
            let example = &examples[secret_name];
            let url = example[secret["key"].as_str().unwrap()].as_str().unwrap();
            let (host, port) =
                (example["host"].as_str().unwrap(), example["port"].as_str().unwrap());
            let rest = url.strip_prefix("rediss://:").expect("a rediss://:KEY@ URL");
            let (password, address) = rest.rsplit_once('@').unwrap();
            assert_eq!(address, format!("{host}:{port}"), "example store URL: another Redis");
            assert!(password.starts_with('<') && password.ends_with('>'), "a key in {url}");
            stores_checked += 1;
        }
        // Whether the fast path is on is a decision each deployment makes explicitly.
        if components
            .iter()
            .any(|c| manifest.components[c].variables.contains_key("redis_fast_path"))
        {
            let setting = bindings(&app).get("redis_fast_path").map(|b| b["value"].clone());
            assert!(
                matches!(setting.as_ref().and_then(Value::as_str), Some("true" | "false")),
                "{at}: set redis_fast_path to \"true\" or \"false\", not {setting:?}"
            );
        }
    }
    assert!(stores_checked >= 5, "only {stores_checked} stores checked");
}

#[test]
fn key_vault_wiring_is_consistent() {
    let docs = rendered("aks-keyvault");
    let spc = of_kind(&docs, "SecretProviderClass")[0];
    let script = read("deploy/scripts/create-azure-resources.sh");
    let objects = spc["spec"]["parameters"]["objects"].as_str().unwrap();
    // The script stores the vault's secrets in loops (`for secret in ...; do`), unconditionally
    // (not indented under an `if`): the CSI driver fails the mount of every pod when an
    // object the class lists is missing from the vault, optional route tokens included.
    let looped: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix("for secret in "))
        .flat_map(|l| l.trim_end_matches("; do").split_whitespace())
        .collect();
    let mut synced = 0;
    for secret_object in spc["spec"]["secretObjects"].as_array().unwrap() {
        for object in secret_object["data"].as_array().unwrap() {
            let name = object["objectName"].as_str().unwrap();
            // Key Vault secret names: 1-127 letters, digits and dashes.
            assert!(
                !name.is_empty()
                    && name.len() <= 127
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "{name} is not a valid Key Vault secret name"
            );
            assert!(
                objects.contains(&format!("objectName: {name}\n")),
                "{name} is synced but not fetched"
            );
            assert!(looped.contains(&name), "the setup script never stores {name}");
            synced += 1;
        }
    }
    assert!(synced >= 9, "only {synced} secrets synced");
    // Every fetched object is synced (a fetched-only object could go missing unnoticed).
    let fetched = objects.matches("objectName: ").count();
    assert_eq!(fetched, synced, "the class fetches objects it does not sync");
    // tenantID, not the provider's deprecated tenantId.
    let parameters = spc["spec"]["parameters"].as_object().unwrap();
    assert!(parameters.contains_key("tenantID") && !parameters.contains_key("tenantId"));
    // The workload identity wiring: the SpinApp runs as the federated service account, in the
    // namespace the federated credential names.
    let account = of_kind(&docs, "ServiceAccount")[0];
    let app = one(&docs, "SpinApp", APP);
    assert_eq!(app["spec"]["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(app["spec"]["podLabels"]["azure.workload.identity/use"], "true");
    assert!(script.contains("system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"));
    assert!(script.contains(&format!("NAMESPACE=\"${{NAMESPACE:-{NAMESPACE}}}\"")));
    let account_name = account["metadata"]["name"].as_str().unwrap();
    assert!(script.contains(&format!("SERVICE_ACCOUNT=\"{account_name}\"")));
    let csi = &app["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"];
    assert_eq!(*csi, spc["metadata"]["name"]);

    // The operator reads runtimeConfig's secretKeyRefs (the store URL) before it creates any
    // app pod, and the driver syncs Secrets only for pods that mount the class: a pod of its
    // own must mount it, as the same federated identity, and be applied before the app.
    let sync = &one(&docs, "Deployment", "spin-redis-patterns-secret-sync")["spec"]["template"];
    assert_eq!(sync["spec"]["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(sync["metadata"]["labels"]["azure.workload.identity/use"], "true");
    let mounted = sync["spec"]["volumes"].as_array().unwrap().iter().any(|v| {
        v["csi"]["driver"] == "secrets-store.csi.k8s.io"
            && v["csi"]["volumeAttributes"]["secretProviderClass"] == spc["metadata"]["name"]
    });
    assert!(mounted, "the secret-sync pod does not mount {}", spc["metadata"]["name"]);
    let deploy = read("deploy/scripts/deploy-app.sh");
    let position = |needle: &str| {
        deploy.find(needle).unwrap_or_else(|| panic!("deploy-app.sh never runs {needle}"))
    };
    let apply_apps = "kubectl apply -f \"$work/spinapps.yaml\"";
    assert!(position("deployment/spin-redis-patterns-secret-sync") < position(apply_apps));
    // The vault's store URL is built by the script the tests check for percent-encoding.
    assert!(script.contains("/redis-store-url.sh\""));
}

// ---------------------------------------------------------------------------------------------
// Executor, CA bundle, shim.

#[test]
fn the_executor_has_its_own_name_a_ca_bundle_and_telemetry() {
    let cluster = rendered("cluster");
    let shim = one(&cluster, "Shim", "spin-v2");
    let install = read("deploy/scripts/install-spinkube.sh");
    for overlay in overlays().keys().filter(|o| *o != "cluster") {
        let docs = rendered(overlay);
        let executors = of_kind(&docs, "SpinAppExecutor");
        assert_eq!(executors.len(), 1, "{overlay}");
        let executor = executors[0];
        let name = executor["metadata"]["name"].as_str().unwrap();
        assert_ne!(name, "containerd-shim-spin", "{overlay}: the stock executor's name");
        for app in of_kind(&docs, "SpinApp") {
            assert_eq!(app["spec"]["executor"], name, "{overlay}");
        }
        let config = &executor["spec"]["deploymentConfig"];
        // Pods run only where the shim is: the RuntimeClass runtime-class-manager makes.
        assert_eq!(config["runtimeClassName"], shim["spec"]["runtimeClass"]["name"]);
        if overlay == "local" {
            assert!(config["caCertSecret"].is_null() && config["otel"].is_null());
            continue;
        }
        let ca = config["caCertSecret"].as_str().unwrap_or_else(|| panic!("{overlay}: no CA"));
        assert!(
            install.contains(&format!("create secret generic {ca} "))
                && install.contains("--from-file=ca-certificates.crt=\"$bundle\"")
                && install.contains("build-ca-bundle.sh >\"$bundle\""),
            "install-spinkube.sh does not create {ca} from build-ca-bundle.sh"
        );
        assert!(
            config["installDefaultCACerts"].is_null() || config["installDefaultCACerts"] == false
        );
        // Telemetry goes out over OTLP, and the NetworkPolicy lets it.
        let endpoint = config["otel"]["exporter_otlp_endpoint"].as_str().expect("an OTLP endpoint");
        let port: u64 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        assert!(egress_ports(&docs).contains(&("TCP".into(), port)), "{overlay}: OTLP blocked");
    }
}

#[test]
fn the_ca_bundle_holds_the_azure_roots_and_only_those() {
    let out = Command::new("bash").arg(root().join("deploy/scripts/build-ca-bundle.sh")).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle = String::from_utf8(out.stdout).unwrap();
    let count = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!((4..=8).contains(&count), "{count} roots: not one, and not the whole store");
    let file = temp_dir().join("bundle.pem");
    std::fs::write(&file, &bundle).unwrap();
    let subjects = Command::new("sh")
        .arg("-c")
        .arg("openssl crl2pkcs7 -nocrl -certfile \"$1\" | openssl pkcs7 -print_certs -noout")
        .arg("sh")
        .arg(&file)
        .output()
        .unwrap();
    let subjects = String::from_utf8(subjects.stdout).unwrap();
    let guide = read("docs/deploy-aks.md");
    for root in [
        "DigiCert Global Root G2",
        "DigiCert Global Root CA",
        "Microsoft RSA Root Certificate Authority 2017",
        "Microsoft ECC Root Certificate Authority 2017",
    ] {
        assert!(subjects.contains(&format!("CN = {root}")), "{root} missing: {subjects}");
        let file = format!("{}.crt", root.replace(' ', "_"));
        assert!(guide.contains(&file), "the guide does not say the bundle takes {file}");
    }
    // A missing root fails the script instead of producing a short bundle.
    let missing = Command::new("bash")
        .arg(root().join("deploy/scripts/build-ca-bundle.sh"))
        .env("CA_DIR", temp_dir())
        .output()
        .unwrap();
    assert!(!missing.status.success() && missing.stdout.is_empty());
}

#[test]
fn the_shim_is_pinned_and_follows_the_labelled_node_pool() {
    let cluster = rendered("cluster");
    let shim = one(&cluster, "Shim", "spin-v2");
    let platforms = shim["spec"]["fetchStrategy"]["platforms"].as_array().unwrap();
    let arches: BTreeSet<&str> = platforms.iter().map(|p| p["arch"].as_str().unwrap()).collect();
    assert!(arches.contains("x86_64") && arches.contains("aarch64"));
    for p in platforms {
        let location = p["location"].as_str().unwrap();
        assert!(location.contains("/releases/download/v0.24.0/"), "{location}: not v0.24.0");
    }
    // The selector is the node pool's label, in the setup script and the guide.
    let selector = shim["spec"]["nodeSelector"].as_object().unwrap();
    assert_eq!(selector.len(), 1);
    let (key, value) = selector.iter().next().unwrap();
    let label = format!("{key}={}", value.as_str().unwrap());
    let create = read("deploy/scripts/create-azure-resources.sh");
    assert!(create.contains(&format!("SPIN_NODE_LABEL=\"{label}\"")));
    assert!(create.contains("--labels \"$SPIN_NODE_LABEL\""));
    assert!(read("docs/deploy-aks.md").contains(&label));
    assert!(
        read("deploy/scripts/install-spinkube.sh").contains(&format!("label node --all {label}"))
    );
    // Nothing installs the shim the deprecated way any more.
    for script in files_under(&root().join("deploy/scripts"), "sh") {
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(
            !text.contains("kwasm.sh/kwasm-node"),
            "{} still annotates nodes",
            script.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Images, ingress, network policy, disruption budget, autoscaling.

/// Every image an object runs: a SpinApp's spec.image and any pod template's containers.
fn images(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        doc["spec"]["image"].as_str().map(str::to_owned).into_iter().collect();
    let spec = &doc["spec"]["template"]["spec"];
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            out.push(c["image"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[test]
fn images_are_referenced_by_digest_and_deploy_app_fills_the_digests_in() {
    let deploy = read("deploy/scripts/deploy-app.sh");
    let zero = format!("sha256:{}", "0".repeat(64));
    assert!(deploy.contains(&format!("ZERO_DIGEST=\"{zero}\"")));
    let mut seen = 0;
    for overlay in overlays().keys() {
        for doc in rendered(overlay) {
            for image in images(&doc) {
                let (repository, digest) =
                    image.split_once("@sha256:").unwrap_or_else(|| panic!("{overlay}: {image}"));
                assert!(
                    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{overlay}: {image}"
                );
                // A placeholder digest is one deploy-app.sh replaces.
                if digest == "0".repeat(64) {
                    assert!(
                        deploy.contains(&format!("=\"{repository}@$ZERO_DIGEST\"")),
                        "deploy-app.sh never fills in the digest of {repository}"
                    );
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 7, "only {seen} images");
}

/// (protocol, port) pairs the app pods' NetworkPolicy lets out.
fn egress_ports(docs: &[Value]) -> BTreeSet<(String, u64)> {
    let policy = one(docs, "NetworkPolicy", APP);
    let rules = policy["spec"]["egress"].as_array().unwrap().iter();
    rules
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| (p["protocol"].as_str().unwrap().to_owned(), p["port"].as_u64().unwrap()))
        .collect()
}

#[test]
fn ingress_and_network_policy_admit_only_the_controller_and_keep_client_addresses() {
    let create = read("deploy/scripts/create-azure-resources.sh");
    assert!(create.contains("--pod-cidr \"$POD_CIDR\"") && create.contains("--enable-app-routing"));
    // The trusted range is the cluster's own, filled in by deploy-app.sh: never a fixed CIDR.
    let deploy = read("deploy/scripts/deploy-app.sh");
    assert!(deploy.contains("CIDR_PLACEHOLDER=\"<pod CIDR>\""));
    assert!(deploy.contains("-e \"s|$CIDR_PLACEHOLDER|$POD_CIDR|g\""));
    // A cluster without a policy engine ignores NetworkPolicy.
    assert!(create.contains("--network-dataplane cilium"));
    for (overlay, _) in overlays().into_iter().filter(|(o, _)| o != "cluster") {
        let docs = rendered(&overlay);
        let deny = one(&docs, "NetworkPolicy", "default-deny");
        assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}), "{overlay}");
        assert_eq!(deny["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
        assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());

        let allow = one(&docs, "NetworkPolicy", APP);
        let selector = allow["spec"]["podSelector"]["matchLabels"].as_object().unwrap();
        for app in of_kind(&docs, "SpinApp") {
            for (k, v) in selector {
                assert_eq!(app["spec"]["podLabels"][k], *v, "{overlay}: the policy misses the app");
            }
        }
        let ingress = allow["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1, "{overlay}: one way in");
        let from = ingress[0]["from"].as_array().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "app-routing-system"
        );
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "ingress-controller"
        );
        let egress = egress_ports(&docs);
        assert!(egress.contains(&("UDP".into(), 53)) && egress.contains(&("TCP".into(), 53)));
        let redis_ports: &[u64] = if overlay == "local" { &[6379] } else { &[6380, 10000] };
        for port in redis_ports {
            assert!(egress.contains(&("TCP".into(), *port)), "{overlay}: Redis {port} blocked");
        }

        let proxies = of_kind(&docs, "SpinApp")
            .into_iter()
            .filter_map(|a| bindings(a).get("ratelimit_trusted_proxies").cloned())
            .map(|b| b["value"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        if AKS_OVERLAYS.contains(&overlay.as_str()) {
            assert_eq!(proxies, ["<pod CIDR>"], "{overlay}: the cluster's range, filled in");
            let ingresses = of_kind(&docs, "Ingress");
            assert!(!ingresses.is_empty(), "{overlay}");
            for ingress in ingresses {
                let spec = &ingress["spec"];
                assert_eq!(spec["ingressClassName"], "webapprouting.kubernetes.azure.com");
                for path in spec["rules"][0]["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    assert_eq!(backend["name"], APP);
                    assert_eq!(backend["port"]["number"], 80);
                }
            }
            assert_eq!(from[0]["podSelector"].as_object().unwrap().len(), 1);
        } else if overlay == "local" {
            assert_eq!(proxies, [""], "local: no proxy to trust");
            assert!(of_kind(&docs, "Ingress").is_empty());
        }
    }
}

#[test]
fn every_spinapp_has_a_disruption_budget_that_lets_drains_proceed() {
    for overlay in overlays().keys().filter(|o| *o != "cluster") {
        let docs = rendered(overlay);
        for app in of_kind(&docs, "SpinApp") {
            let name = id(app).1;
            let budget = of_kind(&docs, "PodDisruptionBudget")
                .into_iter()
                .find(|p| {
                    p["spec"]["selector"]["matchLabels"]["core.spinkube.dev/app-name"] == name
                })
                .unwrap_or_else(|| panic!("{overlay}: no PodDisruptionBudget for {name}"));
            assert_eq!(budget["apiVersion"], "policy/v1");
            assert!(
                budget["spec"]["maxUnavailable"].as_u64().is_some_and(|n| n >= 1),
                "{overlay}: {name}'s budget could block every node drain"
            );
            // Under the default IfHealthyBudget an unready pod cannot be evicted while the
            // budget is spent: a drain during an incident would stall as long as it lasts.
            assert_eq!(
                budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow",
                "{overlay}: {name}'s budget blocks drains while pods are unready"
            );
        }
    }
}

#[test]
fn autoscaled_overlays_leave_replicas_to_their_autoscaler() {
    for (overlay, kind) in
        [("autoscaling", "HorizontalPodAutoscaler"), ("autoscaling-keda", "ScaledObject")]
    {
        let docs = rendered(overlay);
        let app = one(&docs, "SpinApp", APP);
        assert_eq!(app["spec"]["enableAutoscaling"], true, "{overlay}");
        assert!(app["spec"]["replicas"].is_null(), "{overlay}: replicas conflict with autoscaling");
        assert!(
            !app["spec"]["resources"]["requests"]["cpu"].is_null(),
            "CPU scaling needs requests"
        );
        let scalers = of_kind(&docs, kind);
        assert_eq!(scalers.len(), 1, "{overlay}");
        // The operator's Deployment has the SpinApp's name.
        assert_eq!(scalers[0]["spec"]["scaleTargetRef"]["name"], APP);
        assert_eq!(
            of_kind(&docs, "HorizontalPodAutoscaler").len() + of_kind(&docs, "ScaledObject").len(),
            1
        );
    }
    for overlay in ["local", "aks-secrets", "aks-keyvault", "single-component"] {
        for app in of_kind(&rendered(overlay), "SpinApp") {
            assert!(app["spec"]["replicas"].as_u64().is_some(), "{overlay}: fixed replicas");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts.

fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("deploy-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_store_url_script_percent_encodes_the_access_key() {
    // Azure access keys are base64 (+ / =); the rest are there to show the encoding is general.
    let key = "Ab+/c9=x==%:@ ~_.-é";
    let output = Command::new("bash")
        .arg(root().join("deploy/scripts/redis-store-url.sh"))
        .env("REDIS_HOST", "contoso.redis.cache.windows.net")
        .env("REDIS_PORT", "6380")
        .env("REDIS_KEY", key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let url = String::from_utf8(output.stdout).unwrap().trim_end().to_owned();
    let encoded = url.strip_prefix("rediss://:").unwrap().rsplit_once('@').unwrap().0;
    assert!(!encoded.contains(['+', '/', '=', '@', ':', ' ']), "{encoded}");
    // Parsed by the redis crate version Spin 3.6.3 uses: the password it sends is the key.
    use spin_test_host::redis::{ConnectionAddr, IntoConnectionInfo};
    let info = url.as_str().into_connection_info().unwrap();
    assert_eq!(info.redis.password.as_deref(), Some(key));
    assert_eq!(info.redis.username, None);
    assert!(
        matches!(&info.addr, ConnectionAddr::TcpTls { host, port: 6380, .. }
            if host == "contoso.redis.cache.windows.net"),
        "{:?}",
        info.addr
    );

    let missing = Command::new("bash")
        .arg(root().join("deploy/scripts/redis-store-url.sh"))
        .env_remove("REDIS_KEY")
        .env("REDIS_HOST", "h")
        .env("REDIS_PORT", "1")
        .output()
        .unwrap();
    assert!(!missing.status.success(), "no key must be an error, not a URL without one");
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let mut scripts = files_under(&root().join("deploy"), "sh");
    scripts.push(root().join(".ci/run"));
    scripts.push(root().join("tests/deploy/fake-az"));
    assert!(scripts.len() >= 7);
    // -x follows the scripts' `source lib.sh`.
    let output = Command::new("shellcheck")
        .arg("-x")
        .args(&scripts)
        .output()
        .expect("shellcheck is installed (apt-get install shellcheck)");
    assert!(output.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&output.stdout));
}

/// A PATH whose az, kubectl, helm and spin are `program` (a path), ahead of the system's.
fn path_with(program: &Path) -> (PathBuf, String) {
    let dir = temp_dir();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["az", "kubectl", "helm", "spin", "docker", "curl"] {
        std::os::unix::fs::symlink(program, bin.join(tool)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (dir, path)
}

fn run_script(script: &str, path: &str, envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(root().join("deploy/scripts").join(script)).env("PATH", path);
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn every_script_runs_twice_in_a_dry_run_without_calling_anything() {
    // In a dry run the tools must not run at all: each one here fails loudly if called.
    let dir = temp_dir();
    let tripwire = dir.join("tripwire");
    std::fs::write(&tripwire, "#!/bin/sh\necho \"called: $0 $*\" >&2\nexit 99\n").unwrap();
    Command::new("chmod").arg("+x").arg(&tripwire).status().unwrap();
    let (_bin, path) = path_with(&tripwire);
    let common = [("DRY_RUN", "1"), ("RG", "rg"), ("LOCATION", "westeurope"), ("NAME", "contoso")];
    // (script, its environment beyond `common`, a call its dry run must print)
    type Run<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cidr = ("POD_CIDR", "10.244.0.0/16");
    let runs: [Run; 6] = [
        ("create-azure-resources.sh", &[], "+ az redisenterprise create"),
        ("create-azure-resources.sh", &[("REDIS_KIND", "cache")], "+ az redis create"),
        ("install-spinkube.sh", &[], "+ kubectl apply -k deploy/cluster"),
        ("deploy-app.sh", &[("ACR", "contosoacr.azurecr.io"), cidr], "+ az acr import"),
        (
            "deploy-app.sh",
            &[("ACR", "c.azurecr.io"), ("OVERLAY", "aks-secrets"), cidr],
            "+ spin build",
        ),
        ("pin-shim.sh", &[("SHIM_VERSION", "v0.25.1")], "+ write deploy/cluster/shim-spin.yaml"),
    ];
    for (script, extra, expected) in runs {
        let envs: Vec<(&str, &str)> = common.iter().chain(extra).copied().collect();
        let mut outputs = Vec::new();
        for attempt in 1..=2 {
            let out = run_script(script, &path, &envs);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{script} {extra:?} run {attempt}:\n{stderr}");
            assert!(!stderr.contains("called: "), "{script} ran a tool in a dry run:\n{stderr}");
            assert!(stderr.contains(expected), "{script} {extra:?}: no `{expected}`:\n{stderr}");
            // Temporary paths differ from run to run; nothing else may.
            let normalised: Vec<String> = stderr
                .lines()
                .map(|l| {
                    l.split_whitespace()
                        .filter(|w| !w.contains("/tmp"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            outputs.push(normalised);
        }
        assert_eq!(outputs[0], outputs[1], "{script}: the second dry run differs");
    }
}

/// Runs create-azure-resources.sh against the fake az (tests/deploy/fake-az) twice and
/// returns the az calls of each run.
fn create_twice(user_type: &str, key: &str) -> (Vec<String>, Vec<String>) {
    let (dir, path) = path_with(&root().join("tests/deploy/fake-az"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut runs = Vec::new();
    for attempt in 1..=2 {
        let out = run_script(
            "create-azure-resources.sh",
            &path,
            &[
                ("RG", "rg"),
                ("LOCATION", "westeurope"),
                ("NAME", "contoso"),
                ("FAKE_AZ_STATE", state.to_str().unwrap()),
                ("FAKE_AZ_KEY", key),
                ("FAKE_AZ_USER_TYPE", user_type),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {attempt} as {user_type}:\n{stderr}");
        let calls = std::fs::read_to_string(state.join("calls")).unwrap();
        std::fs::remove_file(state.join("calls")).unwrap();
        runs.push(calls.lines().map(str::to_owned).collect());
    }
    let second = runs.pop().unwrap();
    (runs.pop().unwrap(), second)
}

fn is_change(call: &str) -> bool {
    let words: Vec<&str> = call.split_whitespace().take_while(|w| !w.starts_with("--")).collect();
    matches!(words.last(), Some(&("create" | "add" | "set" | "import" | "delete")))
}

#[test]
fn the_azure_script_creates_nothing_twice_and_keeps_secrets_off_command_lines() {
    let key = "Fake+Access/Key==";
    for user_type in ["user", "servicePrincipal"] {
        let (first, second) = create_twice(user_type, key);
        let created: Vec<&String> = first.iter().filter(|c| is_change(c)).collect();
        for expected in [
            "redisenterprise create",
            "keyvault create",
            "aks create",
            "aks nodepool add",
            "identity federated-credential create",
            "keyvault secret set --vault-name contoso-kv --name otp-pepper",
            "role assignment create",
        ] {
            assert!(created.iter().any(|c| c.starts_with(expected)), "{user_type}: no {expected}");
        }
        // Azure Managed Redis with the Enterprise policy and access keys on.
        let redis = created.iter().find(|c| c.starts_with("redisenterprise create")).unwrap();
        assert!(redis.contains("--clustering-policy EnterpriseCluster"));
        assert!(redis.contains("--access-keys-auth Enabled"));
        let changed_again: Vec<&String> = second.iter().filter(|c| is_change(c)).collect();
        assert!(changed_again.is_empty(), "{user_type}: the second run changed {changed_again:#?}");
        // A service principal has no signed-in user: the script must not depend on one.
        if user_type == "servicePrincipal" {
            assert!(first.iter().any(|c| c.starts_with("ad sp show")));
        }
        for call in first.iter().chain(&second) {
            assert!(!call.contains(key), "a secret on a command line: {call}");
            assert!(!call.contains("--value"), "a value on a command line: {call}");
        }
    }
}

#[test]
fn deploy_app_logs_in_without_docker() {
    let deploy = read("deploy/scripts/deploy-app.sh");
    assert!(deploy.contains("az acr login --name \"$ACR_NAME\" --expose-token"));
    assert!(deploy.contains(
        "spin registry login --username 00000000-0000-0000-0000-000000000000 --password-stdin"
    ));
    assert!(!deploy.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("docker")));
}

#[test]
fn runtime_configs_parse_and_name_known_variables() {
    let manifest = spin_toml();
    let mut configs = files_under(&root().join("deploy"), "toml");
    configs.push(root().join("runtime-config.toml"));
    for path in configs {
        let providers = spin_test_host::read_runtime_config(&path)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        for provider in providers {
            if let ProviderConfig::Static { values } = provider {
                for name in values.keys() {
                    assert!(
                        manifest.variables.contains_key(name),
                        "{}: unknown variable {name}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_guide_covers_every_file_and_states_what_the_crd_allows() {
    let readme = read("README.md");
    assert!(readme.contains("docs/deploy-aks.md"));
    let guide = read("docs/deploy-aks.md");
    let mut files = files_under(&root().join("deploy"), "yaml");
    files.extend(files_under(&root().join("deploy"), "example"));
    files.extend(files_under(&root().join("deploy"), "sh"));
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
        if relative.ends_with("kustomization.yaml") {
            continue;
        }
        assert!(guide.contains(&relative), "the guide never mentions {relative}");
    }
    for overlay in overlays().keys().filter(|o| *o != "cluster") {
        assert!(guide.contains(&format!("deploy/overlays/{overlay}")), "{overlay} undocumented");
    }
    // The SpinApp CRD has no scale subresource: `kubectl scale spinapp` fails.
    assert!(crd("SpinApp")["spec"]["versions"][0]["subresources"]["scale"].is_null());
    assert!(!guide.contains("kubectl scale spinapp/"), "the guide tells users to kubectl scale");
    assert!(guide.contains("kubectl patch spinapp"));
}

// ---------------------------------------------------------------------------------------------
// The shim installs, pods wait for it, readiness survives Redis, only user routes are public.

#[test]
fn the_runtime_class_waits_for_the_installed_shim_and_is_applied_first() {
    let cluster = rendered("cluster");
    let shim = one(&cluster, "Shim", "spin-v2");
    let class_name = shim["spec"]["runtimeClass"]["name"].as_str().unwrap();
    let class = one(&cluster, "RuntimeClass", class_name);
    assert_eq!(class["apiVersion"], "node.k8s.io/v1");
    assert_eq!(class["handler"], shim["spec"]["runtimeClass"]["handler"]);
    let selector = class["scheduling"]["nodeSelector"].as_object().unwrap();
    for (key, value) in shim["spec"]["nodeSelector"].as_object().unwrap() {
        assert_eq!(selector.get(key), Some(value), "the RuntimeClass ignores the pool label {key}");
    }
    // runtime-class-manager v0.2.0 labels a node `<Shim name>=provisioned` when its install Job
    // succeeds; a new node of the pool has the pool label before that.
    let shim_name = shim["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        selector.get(shim_name).and_then(Value::as_str),
        Some("provisioned"),
        "Spin pods could land on a node before its shim is installed"
    );
    // The manager creates its own RuntimeClass (pool label only) if none exists when it first
    // reconciles the Shim: ours goes first, in a step of its own.
    let install = read("deploy/scripts/install-spinkube.sh");
    let position = |needle: &str| install.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    assert!(
        position("run kubectl apply -f deploy/cluster/runtimeclass.yaml")
            < position("run kubectl apply -k deploy/cluster")
    );
    let kinds: Vec<&str> = cluster.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["RuntimeClass", "Shim"]);
}

/// A fake curl that saves the URL it is asked for as the downloaded file.
fn fake_curl() -> PathBuf {
    let file = temp_dir().join("fake-curl");
    std::fs::write(
        &file,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2 ;; -*) shift ;; \
         *) url=$1; shift ;; esac; done\nprintf '%s' \"$url\" >\"$out\"\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&file).status().unwrap();
    file
}

#[test]
fn pin_shim_writes_each_tarballs_digest_and_install_refuses_a_shim_without() {
    use sha2::{Digest, Sha256};
    let (_bin, path) = path_with(&fake_curl());
    let shim_file = temp_dir().join("shim.yaml");
    std::fs::copy(root().join("deploy/cluster/shim-spin.yaml"), &shim_file).unwrap();
    let out = run_script(
        "pin-shim.sh",
        &path,
        &[("SHIM_VERSION", "v0.25.1"), ("SHIM_FILE", shim_file.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shim: Value =
        serde_norway::from_str(&std::fs::read_to_string(&shim_file).unwrap()).unwrap();
    assert!(shim_errors(&shim).is_empty(), "{:#?}", shim_errors(&shim));
    let platforms = shim["spec"]["fetchStrategy"]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for p in platforms {
        let location = p["location"].as_str().unwrap();
        assert!(location.contains("/releases/download/v0.25.1/containerd-shim-spin-v2-linux-"));
        // The fake tarball's content is its URL.
        let digest: String =
            Sha256::digest(location.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(p["sha256"], digest, "{location}");
    }
    // A version that is not one is refused before anything is downloaded.
    let bad = run_script("pin-shim.sh", &path, &[("SHIM_VERSION", "latest")]);
    assert!(!bad.status.success());

    // The committed Shim carries a sha256 per platform; while it is the zero placeholder,
    // install-spinkube.sh stops before it changes anything.
    let cluster = rendered("cluster");
    let committed = one(&cluster, "Shim", "spin-v2");
    assert!(shim_errors(committed).is_empty());
    let placeholder = committed["spec"]["fetchStrategy"]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["sha256"] == "0".repeat(64));
    if placeholder {
        let dir = temp_dir();
        let tripwire = dir.join("tripwire");
        std::fs::write(&tripwire, "#!/bin/sh\necho \"called: $0 $*\" >&2\nexit 99\n").unwrap();
        Command::new("chmod").arg("+x").arg(&tripwire).status().unwrap();
        let (_bin, path) = path_with(&tripwire);
        let out = run_script("install-spinkube.sh", &path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "installed a Shim without digests:\n{stderr}");
        assert!(!stderr.contains("called: "), "changed something first:\n{stderr}");
        assert!(stderr.contains("pin-shim.sh"), "{stderr}");
    }
}

/// Whether a request path reaches something that needs Redis to answer: Spin answers
/// `/.well-known/spin/...` itself; any other path runs the component whose route matches it.
fn needs_redis(manifest: &Manifest, path: &str) -> bool {
    if path.starts_with("/.well-known/spin/") {
        return false;
    }
    let component = route_of(manifest, path)
        .unwrap_or_else(|| panic!("{path} is not a route of spin.toml"))
        .component
        .clone();
    let c = &manifest.components[&component];
    c.allowed_outbound_hosts.iter().any(|h| h.starts_with("redis"))
        || !c.key_value_stores.is_empty()
}

/// The public route of spin.toml that serves `path`, as Spin picks it: an exact route, else
/// the longest wildcard (`/a/...` matches `/a` and `/a/...`).
fn route_of<'a>(
    manifest: &'a Manifest,
    path: &str,
) -> Option<&'a spin_test_host::manifest::HttpTrigger> {
    let mut best: Option<(&spin_test_host::manifest::HttpTrigger, usize)> = None;
    for t in &manifest.http_triggers {
        let RouteConfig::Route(route) = &t.route else { continue };
        let score = match route.strip_suffix("/...") {
            Some(prefix) if path == prefix || path.starts_with(&format!("{prefix}/")) => {
                prefix.len()
            }
            None if route == path => usize::MAX,
            _ => continue,
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((t, score));
        }
    }
    best.map(|(t, _)| t)
}

#[test]
fn probes_never_depend_on_redis() {
    let manifest = spin_toml();
    // The check can fail: the health route needs Redis.
    assert!(needs_redis(&manifest, "/health/cache"));
    let mut probes = 0;
    for (overlay, app) in all_apps() {
        for probe in ["readiness", "liveness"] {
            let path = app["spec"]["checks"][probe]["httpGet"]["path"].as_str().unwrap();
            // A readiness probe that fails with Redis empties the Service in an outage: every
            // route answers 503, even those built to serve without Redis. Liveness would
            // restart every pod, which cannot fix Redis.
            assert!(
                !needs_redis(&manifest, path),
                "{overlay}: SpinApp {}: {probe} probe {path} fails whenever Redis does",
                id(&app).1
            );
            probes += 1;
        }
    }
    assert!(probes >= 12);
    // /health/cache stays what the rollout smoke test and alerting call.
    let deploy = read("deploy/scripts/deploy-app.sh");
    let smoke = deploy.find("/health/cache\"").expect("deploy-app.sh smoke-tests /health/cache");
    assert!(
        smoke
            > deploy
                .find("rollout status --namespace \"$NAMESPACE\" deployment/spin-redis-patterns ")
                .unwrap()
    );
    let health = read("docs/health.md");
    assert!(
        health.contains("/.well-known/spin/health") && !health.contains("Use it as the readiness")
    );
}

/// How NGINX matches an Ingress path: Exact, or Prefix element by element.
fn ingress_matches(path: &Value, request: &str) -> bool {
    let p = path["path"].as_str().unwrap();
    match path["pathType"].as_str().unwrap() {
        "Exact" => request == p,
        "Prefix" => {
            let p = p.trim_end_matches('/');
            p.is_empty() || request == p || request.starts_with(&format!("{p}/"))
        }
        other => panic!("pathType {other}: use Exact or Prefix"),
    }
}

/// A route's own time budget for one request, in ms: the largest of its component's
/// `*_timeout_ms`, `*_deadline_ms` and `*_wait_ms` variables, as the SpinApp sets them or
/// spin.toml defaults. The rate limiter's `*_upstream_*` ones bound the gateway's upstream
/// call, made under /api/limited only.
fn longest_wait_ms(manifest: &Manifest, app: &Value, component: &str, path: &str) -> u64 {
    let set = bindings(app);
    let gateway = path == "/api/limited" || path.starts_with("/api/limited/");
    manifest.components[component]
        .variables
        .keys()
        .filter(|v| {
            v.ends_with("_timeout_ms") || v.ends_with("_deadline_ms") || v.ends_with("_wait_ms")
        })
        .filter(|v| gateway || !v.contains("_upstream_"))
        .map(|v| {
            let value = set.get(v).and_then(|b| b["value"].as_str().map(str::to_owned));
            let value = value.or_else(|| manifest.variables[v].default.clone()).unwrap();
            value.parse::<u64>().unwrap_or_else(|_| panic!("{v} = {value}"))
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn the_ingress_publishes_only_the_user_routes_and_outwaits_them() {
    let manifest = spin_toml();
    // Never published: unauthenticated Redis probes and counters, the demo routes, Spin's own.
    let private = [
        "/",
        "/health/cache",
        "/api/cache/stats",
        "/api/cache/demo",
        "/api/cache/profile/1",
        "/.well-known/spin/health",
        "/.well-known/spin/info",
    ];
    for overlay in AKS_OVERLAYS {
        let docs = rendered(overlay);
        let app = one(&docs, "SpinApp", APP);
        let mut reached = BTreeSet::new();
        for ingress in of_kind(&docs, "Ingress") {
            let name = id(ingress).1;
            let timeout: u64 = ingress["metadata"]["annotations"]
                ["nginx.ingress.kubernetes.io/proxy-read-timeout"]
                .as_str()
                .unwrap_or_else(|| panic!("{overlay}: Ingress {name} has no proxy-read-timeout"))
                .parse()
                .unwrap();
            for rule in ingress["spec"]["rules"].as_array().unwrap() {
                for path in rule["http"]["paths"].as_array().unwrap() {
                    let p = path["path"].as_str().unwrap();
                    assert_ne!(p, "/", "{overlay}: Ingress {name} publishes everything");
                    for request in private {
                        assert!(
                            !ingress_matches(path, request),
                            "{overlay}: Ingress {name} path {p} publishes {request}"
                        );
                    }
                    let route = route_of(&manifest, p)
                        .unwrap_or_else(|| panic!("{overlay}: {p} is no public route"));
                    reached.insert(route.component.clone());
                    // NGINX must not give up before the route's own timeout answers.
                    let wait = longest_wait_ms(&manifest, app, &route.component, p);
                    assert!(
                        timeout * 1000 > wait,
                        "{overlay}: Ingress {name} times out after {timeout} s, before {p} \
                         ({}) answers its own timeout ({wait} ms)",
                        route.component
                    );
                }
            }
        }
        // Every component with a public route is reachable, but the health probe.
        for t in &manifest.http_triggers {
            if matches!(t.route, RouteConfig::Route(_)) && t.component != "health" {
                assert!(reached.contains(&t.component), "{overlay}: {} unreachable", t.component);
            }
        }
    }
    // The check can fail: a catch-all path publishes the private routes.
    let all = serde_json::json!({"path": "/", "pathType": "Prefix"});
    assert!(ingress_matches(&all, "/health/cache"));
    let cache = serde_json::json!({"path": "/api/cache", "pathType": "Prefix"});
    assert!(ingress_matches(&cache, "/api/cache/stats"));
}

/// The comment above a variable in spin.toml's [variables].
fn variable_comment(spin_toml: &str, name: &str) -> String {
    let lines: Vec<&str> = spin_toml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no variable {name} in spin.toml"));
    let mut comment: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    comment.reverse();
    comment.join(" ")
}

/// Whether spin.toml says an empty value of the variable makes something public ("Empty makes
/// reads public"), rather than turning it off ("empty turns them off", "Empty: private").
fn empty_opens_a_route(spin_toml: &str, name: &str) -> bool {
    variable_comment(spin_toml, name).split(". ").any(|sentence| {
        let s = sentence.to_ascii_lowercase();
        let Some((_, after)) = s.split_once("empty") else { return false };
        after.contains("public") && !["off", "disable", "private"].iter().any(|w| after.contains(w))
    })
}

#[test]
fn no_optional_secret_opens_a_route_when_missing() {
    let text = read("spin.toml");
    // The check can fail: an empty leaderboard_read_token makes reads public.
    assert!(empty_opens_a_route(&text, "leaderboard_read_token"));
    assert!(!empty_opens_a_route(&text, "ratelimit_api_token"));
    assert!(!empty_opens_a_route(&text, "otp_api_token"));
    let mut optional = 0;
    for (overlay, app) in all_apps() {
        for (what, secret, key, is_optional) in secret_refs(&app) {
            if is_optional {
                // A key missing from the Secret leaves the variable empty, silently.
                assert!(
                    !empty_opens_a_route(&text, &what),
                    "{overlay}: {what} ({secret}/{key}) is optional, and without it the route \
                     is public: make it required"
                );
                optional += 1;
            }
        }
    }
    assert!(optional >= 1);
}

#[test]
fn the_azure_script_makes_redis_private_and_keeps_the_tls_key_from_the_app() {
    let key = "Fake+Access/Key==";
    let (first, _) = create_twice("user", key);
    let call = |prefix: &str| {
        first
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `az {prefix}`"))
            .clone()
    };
    assert!(call("redisenterprise create").contains("--public-network-access Disabled"));
    let endpoint = call("network private-endpoint create");
    assert!(
        endpoint.contains("--group-id redisEnterprise")
            && endpoint.contains("--subnet private-endpoints")
    );
    assert!(call("network private-dns zone create").contains("--name privatelink.redis.azure.net"));
    assert!(call("network private-dns link vnet create").contains("--registration-enabled false"));
    assert!(call("network private-endpoint dns-zone-group create")
        .contains("privatelink.redis.azure.net"));
    // The cluster's nodes are in the network the endpoint is in.
    assert!(call("aks create").contains(
        "--vnet-subnet-id /subscriptions/s/resourceGroups/rg/providers/network-vnet-subnet/aks"
    ));
    assert!(!first.iter().any(|c| c.contains("--public-network-access Enabled")));

    // The app's identity reads the app vault only; application routing reads the TLS vault only.
    let app_principal = "22222222-2222-2222-2222-222222222222";
    let app_roles: Vec<&String> = first
        .iter()
        .filter(|c| c.starts_with("role assignment create") && c.contains(app_principal))
        .collect();
    assert_eq!(app_roles.len(), 1, "{app_roles:#?}");
    assert!(app_roles[0]
        .contains("--scope /subscriptions/s/resourceGroups/rg/providers/keyvault/contoso-kv "));
    let routing = call("aks approuting update");
    assert!(routing.contains(
        "--attach-kv /subscriptions/s/resourceGroups/rg/providers/keyvault/contoso-tls-kv "
    ));
    let docs = rendered("aks-keyvault");
    let spc = of_kind(&docs, "SecretProviderClass")[0];
    let app_vault = spc["spec"]["parameters"]["keyvaultName"].as_str().unwrap();
    for ingress in of_kind(&docs, "Ingress") {
        let uri = ingress["metadata"]["annotations"]["kubernetes.azure.com/tls-cert-keyvault-uri"]
            .as_str()
            .unwrap();
        assert!(!uri.contains(&format!("//{app_vault}.")), "the certificate is in the app's vault");
    }

    // Azure Cache for Redis: public access off as well, through its own endpoint group.
    let (dir, path) = path_with(&root().join("tests/deploy/fake-az"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = run_script(
        "create-azure-resources.sh",
        &path,
        &[
            ("RG", "rg"),
            ("LOCATION", "westeurope"),
            ("NAME", "contoso"),
            ("REDIS_KIND", "cache"),
            ("FAKE_AZ_STATE", state.to_str().unwrap()),
            ("FAKE_AZ_KEY", key),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    assert!(calls.contains(
        "redis update --name contoso-redis --resource-group rg --set publicNetworkAccess=Disabled"
    ));
    assert!(calls.contains("--group-id redisCache"));
    assert!(calls.contains("--name privatelink.redis.cache.windows.net"));
}

/// Runs create-azure-resources.sh once against the fake az, with `extra` describing the cluster.
fn create_with(extra: &[(&str, &str)]) -> Output {
    let (dir, path) = path_with(&root().join("tests/deploy/fake-az"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let state = state.to_str().unwrap().to_owned();
    let mut envs = vec![
        ("RG", "rg"),
        ("LOCATION", "westeurope"),
        ("NAME", "contoso"),
        ("FAKE_AZ_STATE", state.as_str()),
        ("FAKE_AZ_KEY", "k"),
    ];
    envs.extend_from_slice(extra);
    run_script("create-azure-resources.sh", &path, &envs)
}

#[test]
fn the_azure_script_checks_the_cluster_instead_of_trusting_it() {
    // The real pod CIDR is what the script reports, not the one it would have created.
    let out = create_with(&[("FAKE_AZ_POD_CIDR", "10.50.0.0/16")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("POD_CIDR=10.50.0.0/16"));
    for (env, value, expected) in [
        ("FAKE_AZ_NETWORK_POLICY", "none", "enforces no NetworkPolicy"),
        ("FAKE_AZ_POD_CIDR", "", "has no pod CIDR"),
        ("FAKE_AZ_ISSUER", "", "has no OIDC issuer"),
        ("FAKE_AZ_SPIN_LABEL", "", "lacks the label spinkube.dev/spin=true"),
        ("FAKE_AZ_POOL_SUBNET", "/subscriptions/s/other/subnets/x", "private endpoint"),
    ] {
        let out = create_with(&[(env, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env}={value} accepted:\n{stderr}");
        assert!(stderr.contains(expected), "{env}={value}: {stderr}");
    }
    // deploy-app.sh checks the ingress controller's pods against the CIDR it is given.
    let dir = temp_dir();
    let fake = dir.join("fake-kubectl");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$*\" in *app-routing-system*) echo 10.9.0.4 ;; *) exit 99 ;; esac\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let (_bin, path) = path_with(&fake);
    for (cidr, expected) in [("10.244.0.0/16", "outside POD_CIDR"), ("10.244.0.0", "IPv4 CIDR")] {
        let out =
            run_script("deploy-app.sh", &path, &[("ACR", "c.azurecr.io"), ("POD_CIDR", cidr)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{cidr}: {stderr}");
    }
}

/// Parses a CPU quantity ("500m", "1") into millicores.
fn millicores(q: &Value) -> u64 {
    let q = q.as_str().map(str::to_owned).unwrap_or_else(|| q.to_string());
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (q.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

#[test]
fn cpu_requests_and_autoscaling_follow_the_sizing_rule() {
    for (overlay, app) in all_apps() {
        let resources = &app["spec"]["resources"];
        let (request, limit) =
            (millicores(&resources["requests"]["cpu"]), millicores(&resources["limits"]["cpu"]));
        // A request far below what a pod uses makes utilisation meaningless (100m under a 1 CPU
        // limit read as 300% at a third of the limit) and the scheduler overpacks nodes.
        assert!(
            request * 2 >= limit && request <= limit,
            "{overlay}: {}: request {request}m against limit {limit}m",
            id(&app).1
        );
    }
    let guide = read("docs/deploy-aks.md");
    let sizing = guide.split("### Sizing").nth(1).expect("a Sizing section in the guide");
    let sizing = sizing.split("\n## ").next().unwrap();
    for word in ["measured", "assumed", "maxReplicas", "connections"] {
        assert!(sizing.contains(word), "the sizing rule does not say {word}");
    }
    let mut max = BTreeSet::new();
    for (overlay, kind) in
        [("autoscaling", "HorizontalPodAutoscaler"), ("autoscaling-keda", "ScaledObject")]
    {
        let docs = rendered(overlay);
        let app = one(&docs, "SpinApp", APP);
        let request = millicores(&app["spec"]["resources"]["requests"]["cpu"]);
        let limit = millicores(&app["spec"]["resources"]["limits"]["cpu"]);
        let scaler = of_kind(&docs, kind)[0];
        let (target, replicas) = if kind == "ScaledObject" {
            let cpu =
                scaler["spec"]["triggers"].as_array().unwrap().iter().find(|t| t["type"] == "cpu");
            let value = cpu.expect("a CPU trigger")["metadata"]["value"].as_str().unwrap();
            (value.parse::<u64>().unwrap(), scaler["spec"]["maxReplicaCount"].as_u64().unwrap())
        } else {
            let target = &scaler["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"];
            (target.as_u64().unwrap(), scaler["spec"]["maxReplicas"].as_u64().unwrap())
        };
        // Scale out before pods reach their limit, and not at a trickle.
        let at = request * target / 100;
        assert!(at < limit && at * 4 >= limit, "{overlay}: scales out at {at}m of {limit}m");
        assert!(
            sizing.contains(&format!("maxReplicas {replicas}")),
            "{overlay}: the guide's sizing does not derive maxReplicas {replicas}"
        );
        max.insert(replicas);
    }
    assert_eq!(max.len(), 1, "the HPA and KEDA overlays differ on the maximum: {max:?}");
}

/// The shell code blocks of a Markdown text, each as its logical lines (continuations joined,
/// comment lines dropped).
fn shell_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
            continue;
        }
        let Some(block) = current.as_mut() else { continue };
        let code = line.split(" #").next().unwrap().trim();
        if code.starts_with('#') {
            continue;
        }
        pending.push_str(code.trim_end_matches('\\'));
        pending.push(' ');
        if !code.ends_with('\\') {
            block.push(std::mem::take(&mut pending).trim().to_owned());
        }
    }
    blocks
}

/// The word after `marker` in `line`.
fn word_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split(marker).nth(1)?.split_whitespace().next()
}

#[test]
fn every_documented_path_applies_the_executor_before_the_spinapp() {
    let guide = read("docs/deploy-aks.md");
    let mut paths = 0;
    for block in shell_blocks(&guide) {
        // A fresh namespace: nothing of the app exists yet.
        let mut existing: BTreeSet<(String, String)> = BTreeSet::new();
        let mut applied_app = false;
        for line in &block {
            // One `kubectl apply` of a stream: kustomize orders SpinApp before SpinAppExecutor,
            // and the operator's webhook refuses a SpinApp whose executor does not exist yet,
            // so only what an earlier step created counts.
            let streams: Vec<Vec<Value>> = if line.contains("deploy/scripts/deploy-app.sh") {
                let overlay = word_after(line, "OVERLAY=").unwrap_or("aks-keyvault");
                let docs = rendered(overlay);
                // deploy-app.sh applies everything but the SpinApps, then the SpinApps.
                let (apps, rest): (Vec<Value>, Vec<Value>) =
                    docs.into_iter().partition(|d| d["kind"] == "SpinApp");
                vec![rest, apps]
            } else if line.contains("kubectl apply -k deploy/") {
                vec![render(&root().join(word_after(line, "kubectl apply -k ").unwrap()))]
            } else if line.contains("kubectl kustomize deploy/") && line.contains("kubectl apply") {
                vec![render(&root().join(word_after(line, "kubectl kustomize ").unwrap()))]
            } else {
                continue;
            };
            for stream in streams {
                for app in of_kind(&stream, "SpinApp") {
                    let executor = app["spec"]["executor"].as_str().unwrap().to_owned();
                    assert!(
                        existing.contains(&("SpinAppExecutor".to_owned(), executor.clone())),
                        "the guide's step `{line}` applies SpinApp {} before its executor \
                         {executor} exists: the operator's webhook refuses it",
                        id(app).1
                    );
                    applied_app = true;
                }
                existing.extend(stream.iter().map(id));
            }
        }
        paths += usize::from(applied_app);
    }
    // deploy-app.sh (twice), local, single-component.
    assert!(paths >= 4, "only {paths} documented paths apply a SpinApp");
}

#[test]
fn the_guide_defines_what_it_uses_and_lists_every_secret() {
    let guide = read("docs/deploy-aks.md");
    let script = read("deploy/scripts/create-azure-resources.sh");
    // Names the setup script prints for the reader to export.
    let printed: BTreeSet<String> = script
        .split("cat <<OUT")
        .nth(1)
        .unwrap()
        .lines()
        .filter_map(|l| Some(l.trim().split_once('=')?.0.to_owned()))
        .collect();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut defined: BTreeSet<String> = printed;
    let mut used: BTreeSet<String> = BTreeSet::new();
    let code: Vec<String> = shell_blocks(&guide).into_iter().flatten().collect();
    let inline: Vec<&str> = guide.split('`').skip(1).step_by(2).collect();
    for text in code.iter().map(String::as_str).chain(inline) {
        for (i, _) in text.match_indices('=') {
            let name: String = text[..i]
                .chars()
                .rev()
                .take_while(|c| is_name(*c))
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            if !name.is_empty() {
                defined.insert(name);
            }
        }
        for word in text.split("for ").skip(1) {
            defined.extend(word.split(" in ").next().map(|w| w.trim().to_owned()));
        }
        for word in text.split("export ").skip(1) {
            defined.extend(
                word.split_whitespace().take_while(|w| w.chars().all(is_name)).map(str::to_owned),
            );
        }
        for part in text.split('$').skip(1) {
            let name: String =
                part.trim_start_matches('{').chars().take_while(|c| is_name(*c)).collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                used.insert(name);
            }
        }
    }
    let undefined: Vec<&String> = used.difference(&defined).collect();
    assert!(undefined.is_empty(), "the guide uses undefined variables: {undefined:?}");

    // The key schema paragraph names every key of both Secrets.
    let schema =
        guide.split("**One Secret key schema.**").nth(1).unwrap().split("\n\n").next().unwrap();
    for (secret, keys) in key_vault_secret_keys() {
        assert!(schema.contains(&format!("`{secret}`")), "{secret}");
        for key in keys {
            assert!(
                schema.contains(&format!("`{key}`")),
                "the guide's key list lacks {secret}/{key}"
            );
        }
    }
}

#[test]
fn telemetry_names_each_app_and_the_test_crd_is_v0_6_1() {
    for (overlay, app) in all_apps() {
        let name = id(&app).1;
        assert_eq!(
            app["spec"]["podAnnotations"]["resource.opentelemetry.io/service.name"], name,
            "{overlay}: {name}'s telemetry would be named `spin`"
        );
    }
    let collector = read("deploy/examples/otel-collector.yaml.example");
    let config: Value = serde_norway::from_str(&collector).unwrap();
    let tag = &config["processors"]["k8sattributes"]["extract"]["annotations"][0];
    assert_eq!(tag["key"], "resource.opentelemetry.io/service.name");
    let tag = tag["tag_name"].as_str().unwrap();
    for signal in ["trace", "metric", "log"] {
        let statements = &config["processors"]["transform/spin-service-name"]
            [format!("{signal}_statements")][0]["statements"][0];
        assert!(
            statements
                .as_str()
                .unwrap()
                .starts_with(&format!("set(attributes[\"service.name\"], attributes[\"{tag}\"])")),
            "{signal}: {statements}"
        );
    }
    // spin-operator v0.6.1's SpinApp CRD: no `fileKeyRef` (later Kubernetes API types on main).
    let spinapp = read("tests/data/spinkube/core.spinkube.dev_spinapps.yaml");
    assert!(!spinapp.contains("fileKeyRef") && !spinapp.contains(".status.deploymentName"));
}

#[test]
fn the_guide_has_a_shim_upgrade_procedure() {
    let guide = read("docs/deploy-aks.md");
    let section = guide.split("### Upgrading the shim").nth(1).expect("an upgrade section");
    let section = section.split("\n## ").next().unwrap();
    for needle in [
        "577",
        "pin-shim.sh",
        "SHIM_VERSION=v0.25.1",
        "Spin 4.0.1",
        "kubectl drain",
        "spin-v2-",
        "spin-v2=provisioned",
    ] {
        assert!(section.contains(needle), "the upgrade procedure never mentions {needle}");
    }
}

// ---------------------------------------------------------------------------------------------
// The pub/sub subscriber: deploy/subscriber, its own SpinApp from spin-subscriber.toml.

#[test]
fn the_subscriber_is_its_own_spinapp_of_spin_subscriber_toml() {
    let docs = render(&root().join("deploy/subscriber"));
    let validator = crd_validator("SpinApp");
    let apps = of_kind(&docs, "SpinApp");
    assert_eq!(apps.len(), 1);
    let app = apps[0];
    let errors = validation_errors(&validator, app);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(app["metadata"]["namespace"], NAMESPACE);
    assert_ne!(id(app).1, APP, "it must not replace the whole app");
    // Its variables are spin-subscriber.toml's, secrets from a Secret.
    let manifest: toml::Table = toml::from_str(&read("spin-subscriber.toml")).unwrap();
    let declared = manifest["variables"].as_table().unwrap();
    for (name, binding) in bindings(app) {
        let variable = declared
            .get(&name)
            .unwrap_or_else(|| panic!("variable {name} is not in spin-subscriber.toml"));
        if variable.get("secret").and_then(|s| s.as_bool()) == Some(true) {
            assert!(
                binding.get("value").is_none() && !binding["valueFrom"]["secretKeyRef"].is_null(),
                "secret variable {name} must come from a secretKeyRef"
            );
        }
    }
    assert!(bindings(app).contains_key("subscriber_redis_url"));
    // HTTP probes would fail: the app has no HTTP trigger.
    assert!(app["spec"]["checks"].is_null());
    assert!(manifest.get("trigger").and_then(|t| t.get("http")).is_none());
    // Every key-value store its components list is defined.
    let stores: Vec<&str> = app["spec"]["runtimeConfig"]["keyValueStores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for (_, component) in manifest["component"].as_table().unwrap() {
        for label in
            component.get("key_value_stores").and_then(|l| l.as_array()).into_iter().flatten()
        {
            assert!(stores.contains(&label.as_str().unwrap()), "store {label} undefined");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The write-behind drain's CronJob.

/// The drain job posts to the drain route with the app's own drain token, through the ingress
/// controller (the only way into the app's pods) to a host the AKS Ingresses serve, within
/// the ingress's timeout, and its pods can reach nothing else.
#[test]
fn the_drain_cronjob_reaches_the_drain_route_through_the_ingress_with_the_drain_token() {
    let manifest = spin_toml();
    let docs = rendered("write-behind-drain");
    let cron = one(&docs, "CronJob", "spin-redis-patterns-drain");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let template = &cron["spec"]["jobTemplate"]["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let env = |name: &str| -> Value {
        container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone()
    };
    // The same Secret key the app reads as cache_drain_token, which both secret paths provide.
    let token = &env("CACHE_DRAIN_TOKEN")["valueFrom"]["secretKeyRef"];
    for (overlay, app) in all_apps() {
        if let Some(binding) = bindings(&app).get("cache_drain_token") {
            assert_eq!(binding["valueFrom"]["secretKeyRef"], *token, "{overlay}");
        }
    }
    let key = token["key"].as_str().unwrap();
    assert!(key_vault_secret_keys()["spin-redis-patterns-app"].contains(key));
    assert!(example_secrets()["spin-redis-patterns-app"].get(key).is_some());
    // The route is the drain, and the token travels on curl's standard input only.
    let script = container["args"][0].as_str().unwrap();
    assert!(script.contains("\"https://$DRAIN_HOST/api/cache/drain\""), "{script}");
    assert!(script.contains("-H @-") && script.matches("CACHE_DRAIN_TOKEN").count() == 1);
    assert_eq!(route_of(&manifest, "/api/cache/drain").unwrap().component, "cache-admin");
    assert!(script.contains("--connect-to ::nginx.app-routing-system.svc.cluster.local:443"));
    let host = env("DRAIN_HOST")["value"].as_str().unwrap().to_owned();
    let max_time: u64 =
        script.split("--max-time ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    for overlay in AKS_OVERLAYS {
        let docs = rendered(overlay);
        let app = one(&docs, "SpinApp", APP);
        let published = of_kind(&docs, "Ingress").into_iter().find_map(|ingress| {
            let rule = &ingress["spec"]["rules"][0];
            let paths = rule["http"]["paths"].as_array().unwrap();
            (rule["host"] == host.as_str()
                && paths.iter().any(|p| ingress_matches(p, "/api/cache/drain")))
            .then(|| {
                ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
                    .clone()
            })
        });
        let timeout: u64 = published
            .unwrap_or_else(|| panic!("{overlay}: no Ingress for {host} publishes the drain"))
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // The drain answers before NGINX and curl give up on it.
        let deadline = longest_wait_ms(&manifest, app, "cache-admin", "/api/cache/drain");
        assert!(
            deadline < timeout * 1000 && deadline < max_time * 1000,
            "{overlay}: {deadline} ms"
        );
    }
    // Four calls fit the job's deadline.
    let active = cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"].as_u64().unwrap();
    assert!(script.contains("for call in 1 2 3 4") && 4 * max_time <= active);
    // Its pods are not the app's, and may reach only DNS and the controller's HTTPS port.
    let labels = template["metadata"]["labels"].as_object().unwrap();
    assert!(labels.get("app.kubernetes.io/part-of").is_none());
    let policy = one(&docs, "NetworkPolicy", "spin-redis-patterns-drain");
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v));
    }
    assert!(policy["spec"]["ingress"].is_null());
    let ports: BTreeSet<(String, u64)> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| (p["protocol"].as_str().unwrap().to_owned(), p["port"].as_u64().unwrap()))
        .collect();
    let expected = [("UDP", 53), ("TCP", 53), ("TCP", 443)];
    assert_eq!(ports, expected.iter().map(|(p, n)| (p.to_string(), *n)).collect());
}
