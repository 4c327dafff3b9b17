//! `omnigate`: run the gateway, check a configuration, or mint an agent token.

use std::collections::BTreeMap;
use std::process::ExitCode;

use omnigate_gateway::cli::{Cli, Command};
use omnigate_gateway::{mint_agent_tokens, shutdown, telemetry, Gateway};

/// mimalloc rather than the system allocator: a relayed message allocates a few dozen short-lived buffers
/// (frames, events, ids), and glibc's malloc spent about 12% of the gateway's CPU on them
/// (`docs/performance.md`, profile notes). Built without transparent huge pages (the workspace's `no_thp`): a
/// heap of small objects gains little from them, and zeroing each fresh 2 MiB page at its first touch doubled
/// the CPU per webhook on a virtual machine (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("omnigate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse(std::env::args().skip(1))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let config = omnigate_config::load(cli.config.as_deref(), &env)?;
    match cli.command {
        Command::CheckConfig => println!("configuration is valid"),
        Command::Token { agents } => {
            for token in mint_agent_tokens(&config, &agents)? {
                println!("{token}");
            }
        }
        Command::Run => {
            telemetry::init_logging(&config);
            let gateway = Gateway::build(config).await?;
            gateway.log_startup();
            gateway.run_until_stopped(shutdown::signal()).await?;
        }
    }
    Ok(())
}
