use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::{Config, ConfigError};

/// The demo configuration shipped in `config/omnigate.toml`, used when no file is given and none is found.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../omnigate.toml");

const ENV_PREFIX: &str = "OMNIGATE_";

/// Loads the configuration: defaults < `file` (TOML text, if any) < `OMNIGATE_` variables in `env`.
///
/// `env` is passed in as a map so no test has to set real environment variables. A variable's value is
/// read as a TOML value when it parses as one (`8080`, `true`, `["a"]`), else as a string.
/// The result is validated.
///
/// # Errors
/// [`ConfigError::Parse`] for bad TOML or unknown keys, [`ConfigError::Invalid`] listing every rule broken.
pub fn load_from_str(file: Option<&str>, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some(text) => text
            .parse::<Table>()
            .map_err(|e| ConfigError::Parse(e.to_string()))?,
        None => Table::new(),
    };
    for (key, raw) in env {
        let Some(path) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Parse(format!(
                "environment variable {key} has an empty key segment"
            )));
        }
        set_path(&mut table, &path, parse_env_value(raw))
            .map_err(|e| ConfigError::Parse(format!("{key}: {e}")))?;
    }
    let config: Config = Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Loads from a file path (or the shipped demo file when `path` is `None`), then the environment.
///
/// # Errors
/// As [`load_from_str`], plus [`ConfigError::Read`] when the file cannot be read.
pub fn load(path: Option<&std::path::Path>, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            load_from_str(Some(&text), env)
        }
        None => load_from_str(Some(DEFAULT_CONFIG_TOML), env),
    }
}

fn parse_env_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{segment}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExposeSecret, Mode, StoreBackend};

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn shipped_demo_config_loads_and_is_valid() {
        let config = load(None, &BTreeMap::new()).expect("demo config");
        assert_eq!(config.mode, Mode::Development);
        assert!(!config.agents.is_empty());
        assert!(!config.webchat.widgets.is_empty());
        assert_eq!(config.store.backend, StoreBackend::Memory);
    }

    #[test]
    fn environment_overrides_file_with_nesting_and_types() {
        let config = load(
            None,
            &env(&[
                ("OMNIGATE_SERVER__PUBLIC_ADDR", "127.0.0.1:0"),
                ("OMNIGATE_LIMITS__FRAMES_PER_SECOND", "7"),
                ("OMNIGATE_STORE__BACKEND", "redis"),
                (
                    "OMNIGATE_AUTH__JWT_SECRET",
                    "an-env-secret-that-is-long-enough-000",
                ),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("config");
        assert_eq!(config.server.public_addr.port(), 0);
        assert_eq!(config.limits.frames_per_second, 7);
        assert_eq!(config.store.backend, StoreBackend::Redis);
        assert_eq!(
            config.auth.jwt_secret.expose_secret(),
            "an-env-secret-that-is-long-enough-000"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_in_file_and_env() {
        let err =
            load_from_str(Some("[server]\npublic_adr = \"127.0.0.1:1\"\n"), &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("public_adr"), "{err}");
        let err = load(None, &env(&[("OMNIGATE_SERVR__X", "1")])).unwrap_err();
        assert!(err.to_string().contains("servr"), "{err}");
    }

    #[test]
    fn defaults_without_any_file_are_production_and_demand_a_secret() {
        let err = load_from_str(None, &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("jwt_secret"), "{err}");
    }
}
