//! The Front Door runtime binary: read settings, build, run.

use std::path::Path;

use anyhow::Context;
use frontdoor::configuration::get_configuration;
use frontdoor::startup::Application;
use frontdoor::telemetry;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings =
        get_configuration(Path::new("config")).context("Failed to read configuration")?;
    telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    app.run_until_stopped().await
}
