use std::fmt;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path that was tried.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML (file or an environment value) does not parse, or a key is unknown or of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// The tree parsed but breaks one or more rules.
    #[error("{0}")]
    Invalid(ValidationErrors),
}

/// Every rule a configuration breaks, reported together so an operator fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<String>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} config problem(s):", self.0.len())?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
