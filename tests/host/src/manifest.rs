//! The parts of a `spin.toml` (manifest version 2) that the HTTP trigger uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, AppVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

/// An application variable: `name = { default = "..." }` or `{ required = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppVariable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

/// A `[[trigger.http]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: RouteConfig,
    pub component: String,
}

/// A route: a path pattern, or `{ private = true }` for a component reachable only by
/// service chaining.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteConfig {
    Route(String),
    Private { private: bool },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    pub source: String,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Key-value store labels the component may open; each must be defined by the runtime
    /// config, or the app does not start.
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    pub build: Option<BuildConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuildConfig {
    pub command: String,
    pub workdir: Option<String>,
}

/// A loaded manifest, with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, AppVariable>,
    pub http_triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, Component>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawManifest =
            toml::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
        if raw.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        for (name, var) in &raw.variables {
            // Spin: a variable has a default or is required, never both, never neither.
            if var.required == var.default.is_some() {
                bail!("variable {name:?} must have either a default or `required = true`");
            }
        }
        for trigger in &raw.trigger.http {
            if !raw.component.contains_key(&trigger.component) {
                bail!("trigger references unknown component {:?}", trigger.component);
            }
            if let RouteConfig::Private { private: false } = trigger.route {
                bail!("route must be a string pattern or '{{ private = true }}'");
            }
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            name: raw.application.name,
            variables: raw.variables,
            http_triggers: raw.trigger.http,
            components: raw.component,
        })
    }

    /// The `.wasm` file of a component, resolved as Spin does: relative to the manifest.
    pub fn source_path(&self, component: &str) -> Result<PathBuf> {
        let c = self.components.get(component).context("unknown component")?;
        Ok(self.dir.join(&c.source))
    }
}
