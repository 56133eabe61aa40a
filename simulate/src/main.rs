//! `frontdoor-simulate`: drives a running Front Door with a simulated floor day and
//! prints the summary. Logs and progress go to stderr through `tracing` (filter with
//! `RUST_LOG`); the usage text and the summary go to stdout.

use frontdoor_simulate::{ArgsError, SimulateOptions, USAGE};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut opts = match SimulateOptions::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(ArgsError::Help) => {
            print_out(USAGE);
            return Ok(());
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    if opts.token.is_none() {
        opts.token = std::env::var("FRONTDOOR_TOKEN").ok().map(Into::into);
    }
    let summary = frontdoor_simulate::run(opts).await?;
    print_out(&summary.to_string());
    Ok(())
}

/// The command's own output (usage, the final summary) goes to stdout.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
