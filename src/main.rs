//! The Front Door runtime binary: read settings, build, run. The traffic simulator
//! is its own binary, `frontdoor-simulate` (crate `simulate/`).

use std::path::Path;

use anyhow::Context;
use frontdoor::configuration::get_configuration;
use frontdoor::startup::Application;
use frontdoor::telemetry;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("serve") => {
            let settings =
                get_configuration(Path::new("config")).context("Failed to read configuration")?;
            telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            app.run_until_stopped().await
        }
        Some("replay") => {
            let code = match frontdoor::replay::main(std::env::args().skip(2).collect()).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("replay: {e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some("simulate") => anyhow::bail!(
            "the simulator is its own binary now: frontdoor-simulate \
             (cargo run --release -p frontdoor-simulate -- --help)"
        ),
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `serve`, `replay` or no command")
        }
    }
}
