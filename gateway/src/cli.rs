//! Command-line arguments of the `omnigate` binary.

use std::path::PathBuf;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway.
    Run,
    /// Load and validate the configuration, then exit.
    CheckConfig,
    /// Print a token for each agent, one per line in the order given.
    Token {
        /// The agent ids (`--agent` may be repeated).
        agents: Vec<String>,
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
pub const USAGE: &str = "usage: omnigate [--config PATH] [--check-config | token --agent ID [--agent ID ...]]
  (no arguments)      run the gateway with config/omnigate.toml (or the built-in demo configuration)
  --config PATH       read this TOML file; OMNIGATE_* environment variables override it
  --check-config      validate the configuration, report every problem, and exit
  token --agent ID    print a signed token for agent ID (repeat --agent for several: one token per line)";

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
                    let mut agents = Vec::new();
                    loop {
                        match (args.next().as_deref(), args.next()) {
                            (Some("--agent"), Some(agent)) => agents.push(agent),
                            (None, None) if !agents.is_empty() => break,
                            _ => return Err(UsageError("token needs --agent ID".into())),
                        }
                    }
                    command = Command::Token { agents };
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
            Command::Token {
                agents: vec!["lin".into()]
            }
        );
        assert_eq!(
            parse(&["token", "--agent", "lin", "--agent", "mei"])
                .unwrap()
                .command,
            Command::Token {
                agents: vec!["lin".into(), "mei".into()]
            }
        );
        assert!(parse(&["token", "lin"]).is_err());
        assert!(parse(&["token"]).is_err());
        assert!(parse(&["token", "--agent", "lin", "--agent"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
