//! Spin variables as Spin 3.6 resolves them (`crates/expressions`, `crates/variables-*`).
//!
//! - Names: lower-case ASCII letters, digits and single underscores, starting with a letter
//!   and ending with a letter or digit.
//! - A component sees only the keys of its `[component.X.variables]`, each a template over
//!   application variables (`"{{ redis_host }}"`).
//! - Application variables resolve from the runtime config's providers in order, then from
//!   the environment provider (`SPIN_VARIABLE_<NAME>`, then `.env`), which Spin always
//!   appends last, then from the manifest default.
//! - A required variable that no provider can resolve stops the app at startup.
//! - `variables::get` errors: a bad name is `invalid-name`, a key the component does not map
//!   is `undefined`, a provider failure is `provider`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::manifest::{AppVariable, Manifest};

/// `variables::get` outcomes, mirroring `fermyon:spin/variables@2.0.0`'s `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableError {
    InvalidName(String),
    Undefined(String),
    Provider(String),
}

/// Validates a variable name the way Spin does.
pub fn validate_name(key: &str) -> Result<(), String> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if key.chars().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')) {
        "Variable names may contain only lower-case letters, numbers, and underscores."
    } else if !key.as_bytes()[0].is_ascii_lowercase() {
        "must start with a lowercase ASCII letter"
    } else if !key.as_bytes()[key.len() - 1].is_ascii_alphanumeric() {
        "must end with a lowercase ASCII letter or digit"
    } else if key.contains("__") {
        "must not contain multiple consecutive underscores"
    } else {
        return Ok(());
    };
    Err(format!("{key:?}: {reason}"))
}

/// A `{{ expr }}` template: literal text and variable references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Var(String),
}

pub fn parse_template(template: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{{") {
            let Some((expr, tail)) = after.split_once("}}") else {
                bail!("unmatched '{{{{' in template {template:?}");
            };
            parts.push(Part::Var(expr.trim().to_owned()));
            rest = tail;
        } else {
            let end = rest.find("{{").unwrap_or(rest.len());
            parts.push(Part::Lit(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    Ok(parts)
}

/// A `[[variables_provider]]` entry of a runtime config (older name: `config_provider`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderConfig {
    Static {
        values: HashMap<String, String>,
    },
    Env {
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        dotenv_path: Option<PathBuf>,
    },
    Vault {},
    AzureKeyVault {
        vault_url: String,
    },
}

#[derive(Debug, Clone)]
enum Provider {
    Static(HashMap<String, String>),
    Env { prefix: String, dotenv: HashMap<String, String> },
}

impl Provider {
    fn get(&self, name: &str, env: &HashMap<String, String>) -> Option<String> {
        match self {
            Provider::Static(values) => values.get(name).cloned(),
            Provider::Env { prefix, dotenv } => {
                let key = if prefix.is_empty() {
                    name.to_ascii_uppercase()
                } else {
                    format!("{prefix}_{}", name.to_ascii_uppercase())
                };
                env.get(&key).or_else(|| dotenv.get(&key)).cloned()
            }
        }
    }
}

/// The resolved variables of one app: every application variable's value, and each
/// component's templates.
#[derive(Debug, Clone)]
pub struct Variables {
    values: HashMap<String, String>,
    secrets: Vec<String>,
    component_templates: HashMap<String, BTreeMap<String, Vec<Part>>>,
}

fn load_dotenv(path: &Path) -> Result<HashMap<String, String>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    dotenvy::from_path_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .map(|item| item.map_err(Into::into))
        .collect()
}

impl Variables {
    /// Resolves every variable of `manifest`. `env` stands for the process environment of
    /// `spin up`; `working_dir`, if any, is where Spin would look for `.env`.
    pub fn resolve(
        manifest: &Manifest,
        providers: &[ProviderConfig],
        env: &HashMap<String, String>,
        working_dir: Option<&Path>,
    ) -> Result<Self> {
        let dotenv = |relative: &Path| match working_dir {
            Some(dir) => load_dotenv(&dir.join(relative)),
            None => Ok(HashMap::new()),
        };
        let mut chain = Vec::new();
        for config in providers {
            chain.push(match config {
                ProviderConfig::Static { values } => Provider::Static(values.clone()),
                ProviderConfig::Env { prefix, dotenv_path } => Provider::Env {
                    prefix: prefix.clone().unwrap_or_else(|| "SPIN_VARIABLE".into()),
                    dotenv: match dotenv_path {
                        Some(p) => dotenv(p)?,
                        None => HashMap::new(),
                    },
                },
                ProviderConfig::Vault {} | ProviderConfig::AzureKeyVault { .. } => {
                    bail!("the test host has no network secret stores (vault, azure_key_vault)")
                }
            });
        }
        chain.push(Provider::Env {
            prefix: "SPIN_VARIABLE".into(),
            dotenv: dotenv(Path::new(".env"))?,
        });

        let mut values = HashMap::new();
        let mut secrets = Vec::new();
        let mut unresolved = Vec::new();
        for (name, AppVariable { default, secret, .. }) in &manifest.variables {
            validate_name(name).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
            let value = chain.iter().find_map(|p| p.get(name, env)).or_else(|| default.clone());
            match value {
                Some(v) => {
                    if *secret && !v.is_empty() {
                        secrets.push(v.clone());
                    }
                    values.insert(name.clone(), v);
                }
                None => unresolved.push(name.clone()),
            }
        }
        if !unresolved.is_empty() {
            bail!("no provider resolved required variable(s): {unresolved:?}");
        }

        let mut component_templates = HashMap::new();
        for (id, component) in &manifest.components {
            let mut templates = BTreeMap::new();
            for (key, template) in &component.variables {
                validate_name(key).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
                let parts = parse_template(template)?;
                for part in &parts {
                    if let Part::Var(v) = part {
                        if !manifest.variables.contains_key(v) {
                            bail!("component {id:?}: invalid variable template: unknown variable {v:?}");
                        }
                    }
                }
                templates.insert(key.clone(), parts);
            }
            component_templates.insert(id.clone(), templates);
        }
        Ok(Self { values, secrets, component_templates })
    }

    /// Expands a template over application variables (used for `allowed_outbound_hosts`).
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::new();
        for part in parse_template(template)? {
            match part {
                Part::Lit(l) => out.push_str(&l),
                Part::Var(v) => out.push_str(
                    self.values.get(&v).with_context(|| format!("unknown variable {v:?}"))?,
                ),
            }
        }
        Ok(out)
    }

    /// What `spin_sdk::variables::get(name)` returns inside `component`.
    pub fn get(&self, component: &str, name: &str) -> Result<String, VariableError> {
        validate_name(name).map_err(VariableError::InvalidName)?;
        let templates = self.component_templates.get(component).ok_or_else(|| {
            VariableError::Undefined(format!("no variable for component {component:?}"))
        })?;
        let parts = templates.get(name).ok_or_else(|| {
            VariableError::Undefined(format!("no variable for {component:?}.{name:?}"))
        })?;
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => out.push_str(&self.values[v]),
            }
        }
        Ok(out)
    }

    /// Values of variables marked `secret = true`, for checking that none reaches a log.
    pub fn secret_values(&self) -> &[String] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
            spin_manifest_version = 2
            [application]
            name = "t"
            [variables]
            host = { default = "127.0.0.1" }
            key = { required = true, secret = true }
            [component.c]
            source = "c.wasm"
            [component.c.variables]
            url = "redis://{{ host }}:6379"
            key = "{{ key }}"
            "#,
            Path::new("/nonexistent/spin.toml"),
        )
        .unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn required_variable_must_resolve() {
        let err = Variables::resolve(&manifest(), &[], &env(&[]), None).unwrap_err();
        assert!(err.to_string().contains("required variable"), "{err}");
    }

    #[test]
    fn env_provider_and_defaults() {
        let v =
            Variables::resolve(&manifest(), &[], &env(&[("SPIN_VARIABLE_KEY", "s3cret")]), None)
                .unwrap();
        assert_eq!(v.get("c", "url").unwrap(), "redis://127.0.0.1:6379");
        assert_eq!(v.get("c", "key").unwrap(), "s3cret");
        assert_eq!(v.secret_values(), ["s3cret".to_string()]);
    }

    #[test]
    fn configured_providers_come_before_env() {
        let providers = [ProviderConfig::Static {
            values: HashMap::from([("host".into(), "from-static".into())]),
        }];
        let v = Variables::resolve(
            &manifest(),
            &providers,
            &env(&[("SPIN_VARIABLE_KEY", "k"), ("SPIN_VARIABLE_HOST", "from-env")]),
            None,
        )
        .unwrap();
        assert_eq!(v.get("c", "url").unwrap(), "redis://from-static:6379");
    }

    #[test]
    fn get_errors() {
        let v = Variables::resolve(&manifest(), &[], &env(&[("SPIN_VARIABLE_KEY", "k")]), None)
            .unwrap();
        assert!(matches!(v.get("c", "Bad-Name"), Err(VariableError::InvalidName(_))));
        assert!(matches!(v.get("c", "host"), Err(VariableError::Undefined(_))));
        assert!(matches!(v.get("other", "url"), Err(VariableError::Undefined(_))));
    }

    #[test]
    fn names() {
        for ok in ["a", "redis_host", "a1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a_", "a__b", "a-b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
