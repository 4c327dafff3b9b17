//! Command-line arguments of the `omnigate` binary.

use std::path::PathBuf;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway.
    Run,
    /// Load and validate the configuration, then exit.
    CheckConfig,
    /// Print a token for an agent.
    Token {
        /// The agent id.
        agent: String,
    },
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `--config PATH`; otherwise `config/omnigate.toml` when present, else the built-in demo file.
    pub config: Option<PathBuf>,
    /// The command.
    pub command: Command,
}

/// The usage text.
pub const USAGE: &str = "usage: omnigate [--config PATH] [--check-config | token --agent ID]
  (no arguments)      run the gateway with config/omnigate.toml (or the built-in demo configuration)
  --config PATH       read this TOML file; OMNIGATE_* environment variables override it
  --check-config      validate the configuration, report every problem, and exit
  token --agent ID    print a signed token for agent ID";

/// Why the arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}\n{USAGE}")]
pub struct UsageError(String);

impl Cli {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// [`UsageError`] with the usage text.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, UsageError> {
        let mut config = None;
        let mut command = Command::Run;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" => {
                    config = Some(PathBuf::from(
                        args.next()
                            .ok_or_else(|| UsageError("--config needs a path".into()))?,
                    ))
                }
                "--check-config" => command = Command::CheckConfig,
                "token" => {
                    let flag = args.next();
                    let agent = args.next();
                    match (flag.as_deref(), agent) {
                        (Some("--agent"), Some(agent)) => command = Command::Token { agent },
                        _ => return Err(UsageError("token needs --agent ID".into())),
                    }
                }
                "-h" | "--help" => return Err(UsageError("help".into())),
                other => return Err(UsageError(format!("unknown argument {other:?}"))),
            }
        }
        if config.is_none() {
            let default = PathBuf::from("config/omnigate.toml");
            config = default.is_file().then_some(default);
        }
        Ok(Cli { config, command })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, UsageError> {
        Cli::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse(&["--config", "x.toml"]).unwrap().config,
            Some(PathBuf::from("x.toml"))
        );
        assert_eq!(parse(&["--check-config"]).unwrap().command, Command::CheckConfig);
        assert_eq!(
            parse(&["token", "--agent", "lin"]).unwrap().command,
            Command::Token { agent: "lin".into() }
        );
        assert!(parse(&["token", "lin"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
