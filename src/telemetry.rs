//! Logs through `tracing`: structured fields, never PHI (identifiers are replaced by
//! the internal patient id; message text, names and medication names are never logged).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::TelemetrySettings;

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.level.clone()));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if settings.format == "json" {
        registry
            .with(fmt::layer().json().with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
}
