//! Portway's configuration file: typed, layered and validated up front.
//!
//! One YAML file (see DESIGN §7) is read with the `config` crate and may be
//! overridden by `PORTWAY_*` environment variables (`PORTWAY_DEFAULTCLASS`,
//! `PORTWAY_SERVICECONTROLLER__MAXRETRYDELAY`: `__` separates levels, names are
//! matched without regard to case). Unknown keys and bad values are refused
//! with the path of the offending key, so a typo never silently becomes a
//! default. `portway check-config FILE` runs exactly this code.
//!
//! ```text
//!  file + PORTWAY_* ──► raw::RawConfig (keys checked) ──► sections::build ──► model::Config
//!                                                          (each provider section typed,
//!                                                           cross-checked, every error
//!                                                           with its key path)
//! ```
//!
//! It is parsed once: the controller, the node agent and `check-config` all receive the
//! typed [`Config`].

mod guard;
mod model;
mod raw;
mod sections;

pub use model::{Config, NodesConfig, ServiceControllerConfig};
pub use portway_provider::ConfigIssue as ConfigError;

use crate::names::CLASSES;
use raw::RawConfig;
use std::fmt;
use std::path::Path;

/// Every problem found, so a user fixes them in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads `path` (if given) and the `PORTWAY_*` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let mut file = serde_json::Value::Object(serde_json::Map::new());
        if let Some(path) = path {
            let text = read_bounded(path)?;
            if text.trim().is_empty() {
                // Most likely a mistake (a ConfigMap key mounted empty, a file caught while
                // being written): say so, as the process then serves the hostport class only.
                tracing::warn!(
                    path = %path.display(),
                    "the configuration file is empty: running with the defaults (the hostport \
                     class only, no address pools)"
                );
            }
            file = parse_yaml(&text).map_err(|mut es| {
                for e in &mut es.0 {
                    if e.path.is_empty() {
                        e.message = format!("{}: {}", path.display(), e.message);
                    }
                }
                es
            })?;
        }
        let env: serde_json::Value = config::Config::builder()
            .add_source(
                config::Environment::with_prefix("PORTWAY")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))?;
        // Other tools share the PORTWAY_ prefix (the test scripts' PORTWAY_KUBECTL, ...):
        // only variables naming a configuration section override the file; unknown keys in
        // the file itself are still refused.
        raw::merge(&mut file, raw::env_overrides(env));
        Self::from_value(file)
    }

    /// Parses a YAML document (used by tests and `check-config` on stdin).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        Self::from_value(parse_yaml(text)?)
    }

    /// Deserializes with key paths in errors, then parses every section: the one place
    /// the configuration is read, for `check-config`, the controller and the speaker.
    pub fn from_value(value: serde_json::Value) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigErrors(vec![ConfigError::new(path, e.inner().to_string())])
        })?;
        let mut errors = validate(&raw);
        match sections::build(raw) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(es) => {
                errors.extend(es);
                Err(ConfigErrors(errors))
            }
        }
    }
}

/// Reads at most [`guard::MAX_BYTES`] (and one byte more, to tell a larger file).
fn read_bounded(path: &Path) -> Result<String, ConfigErrors> {
    use std::io::Read as _;
    let fail = |m: String| ConfigErrors(vec![ConfigError::new("", m)]);
    let file = std::fs::File::open(path).map_err(|e| {
        fail(if e.kind() == std::io::ErrorKind::NotFound {
            format!("configuration file {} does not exist", path.display())
        } else {
            format!("reading {}: {e}", path.display())
        })
    })?;
    let mut bytes = Vec::new();
    file.take(guard::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| fail(format!("{} is not UTF-8 text", path.display())))
}

/// The YAML text as data, after [`guard::check`] refused what would not fit in memory.
fn parse_yaml(text: &str) -> Result<serde_json::Value, ConfigErrors> {
    guard::check(text).map_err(|e| ConfigErrors(vec![ConfigError::new("", e)]))?;
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))
}

/// Checks values serde cannot: names a class we serve, sane delays.
fn validate(raw: &RawConfig) -> Vec<ConfigError> {
    {
        let mut errors = Vec::new();
        if !CLASSES.contains(&raw.default_class.as_str()) {
            errors.push(ConfigError::new(
                "defaultClass",
                format!(
                    "{:?} is not a Portway class; use one of {}",
                    raw.default_class,
                    CLASSES.join(", ")
                ),
            ));
        }
        let sc = &raw.service_controller;
        if sc.min_retry_delay.is_zero() {
            errors.push(ConfigError::new(
                "serviceController.minRetryDelay",
                "must be greater than 0, e.g. 5s",
            ));
        }
        if sc.max_retry_delay < sc.min_retry_delay {
            errors.push(ConfigError::new(
                "serviceController.maxRetryDelay",
                "must not be smaller than minRetryDelay",
            ));
        }
        if sc.provider_timeout.is_zero() {
            errors.push(ConfigError::new(
                "serviceController.providerTimeout",
                "must be greater than 0, e.g. 60s",
            ));
        }
        if sc.provider_concurrency == 0 {
            errors.push(ConfigError::new(
                "serviceController.providerConcurrency",
                "must be at least 1",
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("{}").expect("valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.default_class, "portway.dev/hostport");
        assert_eq!(
            c.service_controller.max_retry_delay,
            std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml("defaultClas: portway.dev/l2").expect_err("typo");
        assert!(err.0[0].message.contains("defaultClas"), "{err}");
    }

    #[test]
    fn nested_bad_value_has_path() {
        let err =
            Config::from_yaml("serviceController:\n  maxRetryDelay: soon\n").expect_err("bad");
        assert_eq!(err.0[0].path, "serviceController.maxRetryDelay", "{err}");
    }

    #[test]
    fn foreign_default_class_is_refused() {
        let err = Config::from_yaml("defaultClass: example.com/lb").expect_err("foreign");
        assert_eq!(err.0[0].path, "defaultClass");
    }

    #[test]
    fn every_delay_error_is_reported_at_once() {
        let err = Config::from_yaml(
            "serviceController:\n  minRetryDelay: 0s\n  providerConcurrency: 0\n  providerTimeout: 0s\n",
        )
        .expect_err("bad");
        let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "serviceController.minRetryDelay",
                "serviceController.providerTimeout",
                "serviceController.providerConcurrency"
            ]
        );
    }
}
