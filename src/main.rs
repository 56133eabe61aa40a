//! The Front Door runtime binary: read settings, build, run. `frontdoor simulate`
//! drives a running runtime with simulated traffic instead.

use std::path::Path;

use anyhow::Context;
use frontdoor::configuration::{get_configuration, TelemetrySettings};
use frontdoor::simulate::{self, ArgsError, SimulateOptions};
use frontdoor::startup::Application;
use frontdoor::telemetry;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    match command.as_deref() {
        None | Some("serve") => {
            let settings =
                get_configuration(Path::new("config")).context("Failed to read configuration")?;
            telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            app.run_until_stopped().await
        }
        Some("simulate") => {
            // The simulator needs only log settings: run it from any directory.
            let logs = get_configuration(Path::new("config"))
                .map(|s| s.telemetry)
                .unwrap_or_else(|_| TelemetrySettings {
                    format: "pretty".into(),
                    level: "info".into(),
                });
            telemetry::init(&logs);
            let opts = match SimulateOptions::parse(args) {
                Ok(mut o) => {
                    if o.token.is_none() {
                        o.token = std::env::var("FRONTDOOR_TOKEN").ok().map(Into::into);
                    }
                    o
                }
                Err(ArgsError::Help) => {
                    print_out(simulate::USAGE);
                    return Ok(());
                }
                Err(e) => anyhow::bail!("{e}"),
            };
            let summary = simulate::run(opts).await?;
            print_out(&summary.to_string());
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; use `simulate` or no command"),
    }
}

/// The command's own output (usage, the final summary) goes to stdout; logs and
/// progress go through tracing.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
