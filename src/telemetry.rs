//! Logs through `tracing`: structured fields, never PHI (identifiers are replaced by
//! the internal patient id; message text, names and medication names are never logged).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::TelemetrySettings;

/// lapin at info at most (its debug/trace output includes frames).
const LAPIN_CAP: &str = "lapin=info";
/// lapin's "Server returned us a message" prints the returned body.
const LAPIN_RETURNS_OFF: &str = "lapin::returned_messages=off";

/// actix-http logs a request it cannot parse (a malformed header line, a broken
/// chunk) at ERROR: that is the client's fault, answered 400, and not the runtime's
/// (the outside fuzzer sends such requests by the hundred).
const ACTIX_PARSE_ERRORS_OFF: &str = "actix_http::h1::dispatcher=off";

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.level.clone()));
    // lapin logs a returned (unroutable) message with its body, and frames at debug
    // and trace: command bodies carry PHI, so these are capped whatever RUST_LOG says.
    // The relay logs unroutable commands itself, by id.
    // unwrap: both are constant, valid directives (checked by the test below).
    let filter = filter
        .add_directive(LAPIN_CAP.parse().expect("a constant directive"))
        .add_directive(LAPIN_RETURNS_OFF.parse().expect("a constant directive"))
        .add_directive(
            ACTIX_PARSE_ERRORS_OFF
                .parse()
                .expect("a constant directive"),
        );
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if settings.format == "json" {
        registry
            .with(fmt::layer().json().with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lapin_caps_are_valid_directives() {
        assert!(super::LAPIN_CAP
            .parse::<tracing_subscriber::filter::Directive>()
            .is_ok());
        assert!(super::LAPIN_RETURNS_OFF
            .parse::<tracing_subscriber::filter::Directive>()
            .is_ok());
        assert!(super::ACTIX_PARSE_ERRORS_OFF
            .parse::<tracing_subscriber::filter::Directive>()
            .is_ok());
    }
}
