//! The Front Door runtime binary: a thin command line over the library. `serve`
//! (the default) reads settings, builds and runs; the other subcommands check the
//! configuration, print the OpenAPI document, hash a token, or hand over to the
//! traffic simulator (its own binary, `frontdoor-simulate`, crate `simulate/`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use frontdoor::configuration::get_configuration;
use frontdoor::startup::Application;
use frontdoor::telemetry;

/// A real-time contact-center runtime for multi-site health systems.
///
/// Settings come from `<config-dir>/base.toml`, then `<config-dir>/<environment>.toml`
/// (FRONTDOOR_ENVIRONMENT = local | production), then FRONTDOOR__SECTION__KEY
/// environment variables (list values: comma-separated, see docs/operations.md).
/// Without a subcommand, `serve` runs.
#[derive(Debug, Parser)]
#[command(name = "frontdoor", version, about, long_about)]
struct Cli {
    /// The configuration directory (base.toml and <environment>.toml).
    #[arg(long, global = true, default_value = "config", value_name = "DIR")]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the runtime: the HTTP API, the patient actors, routing and (when
    /// enabled) the broker and cluster parts, until SIGINT/SIGTERM. SIGHUP re-reads
    /// the principals and the reloadable settings, then re-applies the changes
    /// stored through `PUT /v1/runtime/config`.
    Serve,
    /// Read and validate the configuration (files and environment) the way `serve`
    /// would, without starting anything; print the reloadable values on success.
    CheckConfig,
    /// Print the OpenAPI 3.1 document of the HTTP API (what `/openapi.json` serves;
    /// docs/openapi.json is this output).
    Openapi,
    /// Print the hex SHA-256 of a bearer token read from standard input (what a
    /// principal's `token_sha256` holds; the token itself is never configured).
    HashToken,
    /// Replay a recorded window under the configuration in force and a changed one,
    /// side by side (docs/whatif.md): `frontdoor replay --help` lists the options.
    #[command(disable_help_flag = true)]
    Replay {
        /// Passed to the replay as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Run the traffic simulator (`frontdoor-simulate`, installed beside this
    /// binary) with the arguments that follow: `frontdoor simulate --help` lists them.
    #[command(disable_help_flag = true)]
    Simulate {
        /// Passed to frontdoor-simulate as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config_dir),
        Command::CheckConfig => {
            let settings =
                get_configuration(&cli.config_dir).context("Failed to read configuration")?;
            frontdoor::startup::validate(&settings)?;
            frontdoor::auth::Principals::load(&settings.security, settings.application.environment)
                .context("Failed to load the principals")?;
            let values = serde_json::json!({
                "environment": settings.application.environment.as_str(),
                "routing": settings.routing,
                "supervision": {
                    "patient": settings.supervision.patient,
                    "tasks": settings.supervision.tasks,
                },
            });
            println!("{}", serde_json::to_string_pretty(&values)?);
            Ok(())
        }
        Command::Openapi => {
            println!("{}", frontdoor::http::openapi::document_pretty());
            Ok(())
        }
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("Failed to read the token from standard input")?;
            let token = token.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", frontdoor::auth::token_digest(token));
            Ok(())
        }
        Command::Simulate { args } => simulate(args),
        Command::Replay { args } => {
            let code = actix_web::rt::System::new().block_on(async move {
                match frontdoor::replay::main(args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("replay: {e:#}");
                        1
                    }
                }
            });
            std::process::exit(code);
        }
    }
}

fn serve(config_dir: &Path) -> anyhow::Result<()> {
    let settings = get_configuration(config_dir).context("Failed to read configuration")?;
    telemetry::init(&settings.telemetry);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    })
}

/// Runs `frontdoor-simulate` from this binary's directory (else from `PATH`).
fn simulate(args: Vec<String>) -> anyhow::Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("frontdoor-simulate")))
        .filter(|p| p.exists());
    let program = beside.unwrap_or_else(|| PathBuf::from("frontdoor-simulate"));
    let status = std::process::Command::new(&program)
        .args(&args)
        .status()
        .with_context(|| {
            format!(
                "Failed to run {} (build it: cargo build --release -p frontdoor-simulate)",
                program.display()
            )
        })?;
    std::process::exit(status.code().unwrap_or(1));
}
