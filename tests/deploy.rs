//! Checks the SpinKube deployment files without a cluster: the manifests validate against
//! the SpinApp and SpinAppExecutor CRD schemas (copied from spin-operator v0.6.1 into
//! tests/data/spinkube), they reference only components and variables that spin.toml
//! defines, secrets are bound from Secrets, every key-value store a deployed component lists is
//! defined (its URL from a Secret), runtime configs parse, and the scripts pass shellcheck. A
//! renamed variable or component, or a typo in a field name, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use spin_test_host::manifest::{Manifest, RouteConfig};
use spin_test_host::variables::ProviderConfig;

const API_VERSION: &str = "core.spinkube.dev/v1alpha1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// Every YAML document under deploy/, with the file it came from.
fn deploy_documents() -> Vec<(PathBuf, Value)> {
    let mut docs = Vec::new();
    for path in files_under(&root().join("deploy"), "yaml") {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            if !value.is_null() {
                docs.push((path.clone(), value));
            }
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a (PathBuf, Value)> {
    docs.iter().filter(|(_, d)| d["kind"] == kind).collect()
}

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

fn crd_validator(kind: &str) -> jsonschema::Validator {
    let file = format!("core.spinkube.dev_{}s.yaml", kind.to_ascii_lowercase());
    let text = std::fs::read_to_string(root().join("tests/data/spinkube").join(file)).unwrap();
    let crd: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], kind);
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

#[test]
fn every_spinkube_manifest_validates_against_its_crd() {
    let docs = deploy_documents();
    let mut checked = 0;
    for kind in ["SpinApp", "SpinAppExecutor"] {
        let validator = crd_validator(kind);
        for (path, doc) in of_kind(&docs, kind) {
            assert_eq!(doc["apiVersion"], API_VERSION, "{}", path.display());
            let errors = validation_errors(&validator, doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    // The whole app, one component alone, autoscaled, Key Vault, runtime config, executor.
    assert!(checked >= 6, "only {checked} manifests found");
}

#[test]
fn the_schema_check_catches_misspelt_and_mistyped_fields() {
    let validator = crd_validator("SpinApp");
    let docs = deploy_documents();
    let (_, app) = of_kind(&docs, "SpinApp")[0];
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
}

/// A SpinApp's variable bindings: name → the binding's YAML.
fn bindings(app: &Value) -> BTreeMap<String, Value> {
    app["spec"]["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// Variables a SpinApp's `runtimeConfig.loadFromSecret` provides: the runtime-config.toml in
/// the same directory, whose static provider holds them.
fn runtime_config_values(path: &Path, app: &Value) -> BTreeSet<String> {
    if app["spec"]["runtimeConfig"]["loadFromSecret"].is_null() {
        return BTreeSet::new();
    }
    runtime_config_values_map(path).into_keys().collect()
}

/// The static provider values of the runtime-config.toml beside a SpinApp.
fn runtime_config_values_map(path: &Path) -> BTreeMap<String, String> {
    let config = path.parent().unwrap().join("runtime-config.toml");
    spin_test_host::read_runtime_config(&config)
        .unwrap()
        .into_iter()
        .flat_map(|p| match p {
            ProviderConfig::Static { values } => values.into_iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn spinapps_reference_only_what_spin_toml_defines() {
    let manifest = spin_toml();
    let docs = deploy_documents();
    let apps = of_kind(&docs, "SpinApp");
    for (path, app) in &apps {
        let at = path.display();
        for (name, binding) in bindings(app) {
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
        let components: Vec<String> = app["spec"]["components"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
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
                    && (components.is_empty() || components.contains(&t.component))
            });
            assert!(
                served,
                "{at}: {probe} probe {probe_path} is not a route of a deployed component"
            );
        }
    }
}

#[test]
fn whole_app_manifests_set_redis_and_every_secret() {
    let manifest = spin_toml();
    let docs = deploy_documents();
    let whole_apps: Vec<_> = of_kind(&docs, "SpinApp")
        .into_iter()
        .filter(|(_, app)| app["spec"]["components"].is_null())
        .collect();
    assert!(whole_apps.len() >= 3);
    let secrets: Vec<&String> =
        manifest.variables.iter().filter(|(_, v)| v.secret).map(|(k, _)| k).collect();
    assert!(secrets.iter().any(|s| *s == "redis_access_key"));
    for (path, app) in whole_apps {
        let mut provided: BTreeSet<String> = bindings(app).into_keys().collect();
        provided.extend(runtime_config_values(path, app));
        for name in ["redis_host", "redis_port", "redis_tls"]
            .iter()
            .copied()
            .chain(secrets.iter().map(|s| s.as_str()))
        {
            assert!(provided.contains(name), "{}: {name} is not set", path.display());
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

/// The runtime-config.toml beside a SpinApp that uses `runtimeConfig.loadFromSecret`.
fn runtime_config_table(path: &Path) -> toml::Table {
    let file = path.parent().unwrap().join("runtime-config.toml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Checks a store URL written in a deploy file (an example Secret or the runtime config
/// template): TLS, the given Redis, and a placeholder where the access key goes, so that no
/// real key is ever committed.
fn check_example_store_url(at: &str, url: &str, host: &str, port: &str) {
    let rest = url
        .strip_prefix("rediss://")
        .unwrap_or_else(|| panic!("{at}: store URL {url} is not rediss://"));
    let (userinfo, address) =
        rest.rsplit_once('@').unwrap_or_else(|| panic!("{at}: store URL {url} has no password"));
    assert_eq!(
        address,
        format!("{host}:{port}"),
        "{at}: the store is not the Redis the variables name"
    );
    let password = userinfo
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("{at}: store URL {url}: expected rediss://:KEY@"));
    assert!(
        password.starts_with('<') && password.ends_with('>'),
        "{at}: the store URL must hold a <placeholder>, never a key"
    );
}

#[test]
fn spinapps_define_the_key_value_stores_their_components_use() {
    let manifest = spin_toml();
    let docs = deploy_documents();
    let example_secrets: BTreeMap<&str, &Value> = of_kind(&docs, "Secret")
        .into_iter()
        .map(|(_, s)| (s["metadata"]["name"].as_str().unwrap(), &s["stringData"]))
        .collect();
    let mut stores_checked = 0;
    for (path, app) in of_kind(&docs, "SpinApp") {
        let at = path.display().to_string();
        let components = deployed_components(&manifest, app);
        // Spin refuses to start an app whose components list a store label the runtime config
        // does not define, whether or not the code ever opens it.
        let needed: BTreeSet<&String> =
            components.iter().flat_map(|c| &manifest.components[c].key_value_stores).collect();
        let from_secret = !app["spec"]["runtimeConfig"]["loadFromSecret"].is_null();
        let table = from_secret.then(|| runtime_config_table(path));
        if from_secret {
            // That Secret is created from the file, as the guide shows.
            let guide = std::fs::read_to_string(root().join("docs/deploy-aks.md")).unwrap();
            let secret = app["spec"]["runtimeConfig"]["loadFromSecret"].as_str().unwrap();
            let command = format!("secret generic {secret} \\\n  --from-file=runtime-config.toml=");
            assert!(guide.contains(&command), "{at}: the guide never creates the Secret {secret}");
        }
        let static_values: BTreeMap<String, String> =
            if from_secret { runtime_config_values_map(path) } else { BTreeMap::new() };
        for label in needed {
            if let Some(table) = &table {
                // The operator uses the Secret's runtime-config.toml as is, ignoring the
                // SpinApp's keyValueStores: the table must be in the file.
                let store = table
                    .get("key_value_store")
                    .and_then(|t| t.get(label.as_str()))
                    .unwrap_or_else(|| {
                        panic!("{at}: the runtime config defines no key_value_store.{label}")
                    });
                assert_eq!(
                    store.get("type").and_then(|t| t.as_str()),
                    Some("redis"),
                    "{at}: store {label}"
                );
                let url = store.get("url").and_then(|u| u.as_str());
                let url = url.unwrap_or_else(|| panic!("{at}: store {label} has no url"));
                check_example_store_url(
                    &at,
                    url,
                    &static_values["redis_host"],
                    &static_values["redis_port"],
                );
            } else {
                let stores = app["spec"]["runtimeConfig"]["keyValueStores"].as_array();
                let store = stores
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == label.as_str())
                    .unwrap_or_else(|| {
                        panic!("{at}: spec.runtimeConfig.keyValueStores does not define {label}")
                    });
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
                // Same Secret as redis_host, so the store and outbound Redis reach one server
                // and a key rotation updates them together.
                assert_eq!(
                    bindings(app)["redis_host"]["valueFrom"]["secretKeyRef"]["name"],
                    secret_name,
                    "{at}: store {label} and redis_host come from different Secrets"
                );
                if let Some(example) = example_secrets.get(secret_name) {
                    let url = example[secret["key"].as_str().unwrap()].as_str().unwrap();
                    let (host, port) =
                        (example["host"].as_str().unwrap(), example["port"].as_str().unwrap());
                    check_example_store_url(
                        &format!("{at} via Secret {secret_name}"),
                        url,
                        host,
                        port,
                    );
                }
            }
            stores_checked += 1;
        }
        // Whether the fast path is on is a decision each deployment makes explicitly.
        if components
            .iter()
            .any(|c| manifest.components[c].variables.contains_key("redis_fast_path"))
        {
            let setting = match bindings(app).get("redis_fast_path") {
                Some(binding) => binding["value"].as_str().map(str::to_owned),
                None => static_values.get("redis_fast_path").cloned(),
            };
            assert!(
                matches!(setting.as_deref(), Some("true" | "false")),
                "{at}: set redis_fast_path to \"true\" or \"false\", not {setting:?}"
            );
        }
    }
    // spinapp.yaml, autoscaling, Key Vault and runtime-config-secret each deploy cache and sessions.
    assert!(stores_checked >= 4, "only {stores_checked} stores checked");
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

/// Keys each Secret has as a SpinApp sees it: those the Key Vault CSI driver syncs from the
/// SecretProviderClass the app mounts, and otherwise the example Secrets'.
fn secret_keys(docs: &[(PathBuf, Value)], app: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut secret_keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, s) in of_kind(docs, "Secret") {
        let keys = s["stringData"].as_object().unwrap().keys().cloned().collect();
        secret_keys.insert(s["metadata"]["name"].as_str().unwrap().into(), keys);
    }
    let mounted: Vec<&Value> = app["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| &v["csi"]["volumeAttributes"]["secretProviderClass"])
        .collect();
    for (_, spc) in of_kind(docs, "SecretProviderClass") {
        if !mounted.contains(&&spc["metadata"]["name"]) {
            continue;
        }
        for object in spc["spec"]["secretObjects"].as_array().unwrap() {
            let keys = object["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["key"].as_str().unwrap().to_owned());
            secret_keys.insert(object["secretName"].as_str().unwrap().into(), keys.collect());
        }
    }
    secret_keys
}

/// The `options` of a SpinApp's runtimeConfig stores and databases, each as
/// (what it configures, the option's YAML).
fn runtime_config_options(app: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for section in ["keyValueStores", "sqliteDatabases"] {
        for store in app["spec"]["runtimeConfig"][section].as_array().into_iter().flatten() {
            for option in store["options"].as_array().into_iter().flatten() {
                let what = format!(
                    "runtimeConfig.{section}[{}].{}",
                    store["name"].as_str().unwrap_or("?"),
                    option["name"].as_str().unwrap_or("?")
                );
                out.push((what, option.clone()));
            }
        }
    }
    out
}

#[test]
fn secret_refs_point_at_secrets_the_deploy_files_create() {
    let docs = deploy_documents();
    let mut refs = 0;
    for (path, app) in of_kind(&docs, "SpinApp") {
        let secret_keys = secret_keys(&docs, app);
        // Variables become the pods' secretKeyRefs; runtime config options are read by the
        // operator when it renders the runtime config (it supports no optional ones).
        let options = runtime_config_options(app).into_iter().map(|(what, o)| (what, o, false));
        let variables = bindings(app).into_iter().map(|(name, b)| (name, b, true));
        for (name, binding, may_be_optional) in variables.chain(options) {
            let r = &binding["valueFrom"]["secretKeyRef"];
            if r.is_null() {
                continue;
            }
            let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            assert!(
                secret_keys.get(secret).is_some_and(|keys| keys.contains(key)),
                "{}: {name} reads {secret}/{key}, which no deploy file defines",
                path.display()
            );
            assert!(
                may_be_optional || r["optional"] != true,
                "{}: {name} cannot be optional",
                path.display()
            );
            refs += 1;
        }
    }
    assert!(refs >= 13, "only {refs} secret references");
}

#[test]
fn key_vault_wiring_is_consistent() {
    let docs = deploy_documents();
    let spc = of_kind(&docs, "SecretProviderClass");
    assert_eq!(spc.len(), 1);
    let (_, spc) = spc[0];
    let script =
        std::fs::read_to_string(root().join("deploy/scripts/create-azure-resources.sh")).unwrap();
    let objects = spc["spec"]["parameters"]["objects"].as_str().unwrap();
    // The script stores secrets one by one (`--name NAME `) or in a loop (`for secret in ...`).
    let looped: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("for secret in "))
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
            assert!(
                script.contains(&format!("--name {name} ")) || looped.contains(&name),
                "the setup script never stores {name}"
            );
            synced += 1;
        }
    }
    assert!(synced >= 8, "only {synced} secrets synced");
    // The workload identity wiring: the SpinApp runs as the federated service account.
    let (_, account) = of_kind(&docs, "ServiceAccount")[0];
    let (_, app) = of_kind(&docs, "SpinApp")
        .into_iter()
        .find(|(p, _)| p.ends_with("azure-keyvault/spinapp.yaml"))
        .unwrap();
    assert_eq!(app["spec"]["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(app["spec"]["podLabels"]["azure.workload.identity/use"], "true");
    assert!(script.contains("system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"));
    assert!(script.contains(&format!(
        "SERVICE_ACCOUNT=\"{}\"",
        account["metadata"]["name"].as_str().unwrap()
    )));
    let csi = &app["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"];
    assert_eq!(*csi, spc["metadata"]["name"]);

    // The operator reads runtimeConfig's secretKeyRefs (the store URL) before it creates any
    // app pod, and the driver syncs Secrets only for pods that mount the class: a pod of its
    // own must mount it, as the same federated identity, and be deployed before the app.
    let sync = of_kind(&docs, "Deployment")
        .into_iter()
        .find(|(p, _)| p.ends_with("azure-keyvault/secret-sync.yaml"))
        .map(|(_, d)| &d["spec"]["template"])
        .expect("deploy/azure-keyvault/secret-sync.yaml");
    assert_eq!(sync["spec"]["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(sync["metadata"]["labels"]["azure.workload.identity/use"], "true");
    let mounted = sync["spec"]["volumes"].as_array().unwrap().iter().any(|v| {
        v["csi"]["driver"] == "secrets-store.csi.k8s.io"
            && v["csi"]["volumeAttributes"]["secretProviderClass"] == spc["metadata"]["name"]
    });
    assert!(mounted, "secret-sync.yaml does not mount {}", spc["metadata"]["name"]);
    let synced_by_spc: BTreeSet<&str> = spc["spec"]["secretObjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["secretName"].as_str().unwrap())
        .collect();
    for (what, option) in runtime_config_options(app) {
        if let Some(secret) = option["valueFrom"]["secretKeyRef"]["name"].as_str() {
            assert!(
                synced_by_spc.contains(secret),
                "{what} reads {secret}, which the class does not sync"
            );
        }
    }
    let deploy = std::fs::read_to_string(root().join("deploy/scripts/deploy-app.sh")).unwrap();
    let position = |needle: &str| {
        deploy.find(needle).unwrap_or_else(|| panic!("deploy-app.sh never applies {needle}"))
    };
    assert!(position("azure-keyvault/secret-sync.yaml") < position("azure-keyvault/spinapp.yaml"));
    // The vault's store URL is built by the script the tests check for percent-encoding.
    assert!(
        script.contains("/redis-store-url.sh\""),
        "create-azure-resources.sh must use redis-store-url.sh"
    );
}

#[test]
fn executor_and_autoscalers_match_the_apps() {
    let docs = deploy_documents();
    let (_, executor) = of_kind(&docs, "SpinAppExecutor")[0];
    let executor_name = executor["metadata"]["name"].as_str().unwrap();
    for (path, app) in of_kind(&docs, "SpinApp") {
        assert_eq!(app["spec"]["executor"], executor_name, "{}", path.display());
    }
    let ca_secret = executor["spec"]["deploymentConfig"]["caCertSecret"].as_str().unwrap();
    let install =
        std::fs::read_to_string(root().join("deploy/scripts/install-spinkube.sh")).unwrap();
    assert!(
        install.contains(&format!("secret generic {ca_secret} --from-file=ca-certificates.crt="))
    );

    let (_, autoscaled) = of_kind(&docs, "SpinApp")
        .into_iter()
        .find(|(_, a)| a["spec"]["enableAutoscaling"] == true)
        .expect("an autoscaled SpinApp");
    assert!(autoscaled["spec"]["replicas"].is_null(), "replicas conflict with enableAutoscaling");
    assert!(
        !autoscaled["spec"]["resources"]["requests"]["cpu"].is_null(),
        "CPU scaling needs requests"
    );
    let name = &autoscaled["metadata"]["name"];
    let (_, hpa) = of_kind(&docs, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], *name);
    let (_, keda) = of_kind(&docs, "ScaledObject")[0];
    assert_eq!(keda["spec"]["scaleTargetRef"]["name"], *name);
}

#[test]
fn runtime_configs_parse_and_name_known_variables() {
    let manifest = spin_toml();
    let mut configs = files_under(&root().join("deploy"), "toml");
    configs.push(root().join("runtime-config.toml"));
    assert!(configs.len() >= 2);
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
fn shell_scripts_pass_shellcheck() {
    let mut scripts = files_under(&root().join("deploy"), "sh");
    scripts.push(root().join(".ci/run"));
    assert!(scripts.len() >= 4);
    let output = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .expect("shellcheck is installed (apt-get install shellcheck)");
    assert!(output.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn readme_links_the_deployment_guide() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("docs/deploy-aks.md"));
    let guide = std::fs::read_to_string(root().join("docs/deploy-aks.md")).unwrap();
    for file in files_under(&root().join("deploy"), "yaml") {
        let relative = file.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
        assert!(guide.contains(&relative), "the guide never mentions {relative}");
    }
}
