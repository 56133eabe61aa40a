//! `frontdoor-simulate` options, parsed by hand (a dozen flags do not need a
//! parser crate and its build time).

use std::time::Duration;

use super::model::Weekday;

/// What a simulation run does. Every run is bounded in time and in contacts.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Base URL of the runtime, e.g. `http://127.0.0.1:8080` (loopback only).
    pub target: String,
    /// Random seed: the same seed and options give the same traffic.
    pub seed: u64,
    /// Real minutes one simulated floor day (`start_hour`..`end_hour`) takes.
    pub day_minutes: f64,
    /// First simulated hour of the floor day.
    pub start_hour: f64,
    /// Last simulated hour of the floor day.
    pub end_hour: f64,
    /// Day of the week simulated (Monday has the morning peak).
    pub weekday: Weekday,
    /// Upper bound on the real run time (the run stops early when reached).
    pub max_duration: Duration,
    /// Upper bound on contacts started.
    pub max_contacts: u64,
    /// Multiplies every site's daily volume.
    pub volume_scale: f64,
    /// Flu-season surge: arrivals ramp to 10x within minutes of the start.
    pub surge: bool,
    /// Service-level target in (real) seconds, as the runtime measures it.
    pub sl_target_secs: f64,
    /// How often the agents' desktops poll for offers.
    pub poll_interval: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of one event after a 429 or 503 (honouring `Retry-After`).
    pub max_retries: u32,
    /// Seconds between progress lines.
    pub progress_every: Duration,
    /// Bearer token sent with every request (an adapter-and-desktop principal, or admin);
    /// `--token`, else the `FRONTDOOR_TOKEN` environment variable.
    pub token: Option<secrecy::SecretString>,
    /// Publish events over RabbitMQ as a channel adapter does (`--amqp`), instead of
    /// `POST /v1/events`; the desktops then take their offers from the commands
    /// exchange. `None`: HTTP.
    pub amqp: Option<AmqpOptions>,
}

/// Where and how the `--amqp` mode reaches RabbitMQ (docs/contract.md, "RabbitMQ").
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// `amqp://user:password@127.0.0.1:5672/%2f` (loopback only, like `--target`).
    pub url: secrecy::SecretString,
    /// The exchange events are published to (the runtime's `broker.events_exchange`).
    pub events_exchange: String,
    /// The exchange the runtime relays commands to (`broker.commands_exchange`); the
    /// simulator binds an exclusive queue of its own to it.
    pub commands_exchange: String,
}

impl AmqpOptions {
    /// The runtime's default exchanges at `url`.
    pub fn new(url: &str) -> AmqpOptions {
        AmqpOptions {
            url: secrecy::SecretString::from(url.to_string()),
            events_exchange: "frontdoor.events".into(),
            commands_exchange: "frontdoor.commands".into(),
        }
    }
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            target: "http://127.0.0.1:8080".into(),
            seed: 1,
            day_minutes: 12.0,
            start_hour: 7.0,
            end_hour: 19.0,
            weekday: Weekday::Mon,
            max_duration: Duration::from_secs(15 * 60),
            max_contacts: 20_000,
            volume_scale: 1.0,
            surge: false,
            sl_target_secs: 20.0,
            poll_interval: Duration::from_millis(200),
            concurrency: 16,
            max_retries: 5,
            progress_every: Duration::from_secs(5),
            token: None,
            amqp: None,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage: frontdoor-simulate [options]

Drives a running Front Door over HTTP with a multi-site contact-center day.

  --target URL          runtime base URL, loopback only (default http://127.0.0.1:8080)
  --seed N              random seed (default 1)
  --day-minutes M       real minutes for the simulated floor day (default 12)
  --start-hour H        first simulated hour (default 7)
  --end-hour H          last simulated hour (default 19)
  --weekday D           mon..sun (default mon: the Monday-morning peak)
  --max-seconds S       stop after S real seconds (default 900)
  --max-contacts N      stop after N contacts (default 20000)
  --volume X            multiply every site's volume (default 1)
  --surge               flu-season surge: arrivals ramp to 10x within 5 simulated minutes
  --sl-target-secs T    service-level target the summary reports against (default 20)
  --concurrency N       requests in flight (default 16)
  --max-retries N       retries of an event answered 429 or 503, after its Retry-After (default 5)
  --token TOKEN         bearer token sent with every request (default: $FRONTDOOR_TOKEN)
  --amqp URL            publish events to RabbitMQ (amqp://user:pass@127.0.0.1:5672/%2f, loopback
                        only) with publisher confirms and x-patient-key, as an adapter does; offers
                        and other commands are read from the commands exchange (an exclusive queue)
  --events-exchange X   with --amqp: the events exchange (default frontdoor.events)
  --commands-exchange X with --amqp: the commands exchange (default frontdoor.commands)
  --help                this text
";

/// Why the options could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    /// `--help` was asked for.
    #[error("{USAGE}")]
    Help,
    /// A flag this command does not know.
    #[error("unknown option {0}\n\n{USAGE}")]
    Unknown(String),
    /// A flag without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value that does not parse or is out of range.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(flag: &str, reason: &str) -> ArgsError {
    ArgsError::Invalid {
        flag: flag.into(),
        reason: reason.into(),
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ArgsError> {
    v.parse().map_err(|_| invalid(flag, "not a number"))
}

/// Only loopback brokers, for the same reason as [`check_target`]:
/// `amqp://[user[:password]@]host[:port][/vhost]`.
pub fn check_amqp_url(url: &str) -> Result<(), ArgsError> {
    let rest = url
        .strip_prefix("amqp://")
        .ok_or_else(|| invalid("--amqp", "must start with amqp://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return Err(invalid(
            "--amqp",
            "only 127.0.0.1, localhost or [::1] are allowed",
        ));
    }
    Ok(())
}

/// Only loopback targets: the simulator is a load generator and must never be
/// pointed at somebody else's service by accident.
pub fn check_target(url: &str) -> Result<String, ArgsError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("--target", "must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return Err(invalid(
            "--target",
            "only 127.0.0.1, localhost or [::1] are allowed",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl SimulateOptions {
    /// Parses the arguments after `simulate`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<SimulateOptions, ArgsError> {
        let mut o = SimulateOptions::default();
        let mut max_seconds: Option<f64> = None;
        let mut amqp_url: Option<String> = None;
        let mut events_exchange: Option<String> = None;
        let mut commands_exchange: Option<String> = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (flag, None),
            };
            if flag == "--help" || flag == "-h" {
                return Err(ArgsError::Help);
            }
            if flag == "--surge" {
                o.surge = true;
                continue;
            }
            let known = [
                "--target",
                "--seed",
                "--day-minutes",
                "--start-hour",
                "--end-hour",
                "--weekday",
                "--max-seconds",
                "--max-contacts",
                "--volume",
                "--sl-target-secs",
                "--concurrency",
                "--max-retries",
                "--token",
                "--amqp",
                "--events-exchange",
                "--commands-exchange",
            ];
            if !known.contains(&flag.as_str()) {
                return Err(ArgsError::Unknown(flag));
            }
            let v = match inline.or_else(|| it.next()) {
                Some(v) => v,
                None => return Err(ArgsError::MissingValue(flag)),
            };
            match flag.as_str() {
                "--target" => o.target = check_target(&v)?,
                "--token" => o.token = Some(secrecy::SecretString::from(v)),
                "--seed" => o.seed = number(&flag, &v)?,
                "--day-minutes" => o.day_minutes = number(&flag, &v)?,
                "--start-hour" => o.start_hour = number(&flag, &v)?,
                "--end-hour" => o.end_hour = number(&flag, &v)?,
                "--weekday" => {
                    o.weekday = Weekday::parse(&v).ok_or_else(|| invalid(&flag, "mon..sun"))?
                }
                "--max-seconds" => max_seconds = Some(number(&flag, &v)?),
                "--max-contacts" => o.max_contacts = number(&flag, &v)?,
                "--volume" => o.volume_scale = number(&flag, &v)?,
                "--sl-target-secs" => o.sl_target_secs = number(&flag, &v)?,
                "--concurrency" => o.concurrency = number(&flag, &v)?,
                "--max-retries" => o.max_retries = number(&flag, &v)?,
                "--amqp" => {
                    check_amqp_url(&v)?;
                    amqp_url = Some(v);
                }
                "--events-exchange" => events_exchange = Some(v),
                "--commands-exchange" => commands_exchange = Some(v),
                // unwrap-free: every known flag is matched above.
                _ => return Err(ArgsError::Unknown(flag)),
            }
        }
        o.target = check_target(&o.target)?;
        match amqp_url {
            Some(url) => {
                let mut a = AmqpOptions::new(&url);
                if let Some(x) = events_exchange {
                    a.events_exchange = x;
                }
                if let Some(x) = commands_exchange {
                    a.commands_exchange = x;
                }
                o.amqp = Some(a);
            }
            None if events_exchange.is_some() || commands_exchange.is_some() => {
                return Err(invalid(
                    "--events-exchange/--commands-exchange",
                    "only with --amqp",
                ));
            }
            None => {}
        }
        if !(o.day_minutes > 0.0 && o.day_minutes <= 24.0 * 60.0) {
            return Err(invalid("--day-minutes", "must be in (0, 1440]"));
        }
        let hours_ok =
            (0.0..24.0).contains(&o.start_hour) && o.end_hour > o.start_hour && o.end_hour <= 24.0;
        if !hours_ok {
            return Err(invalid(
                "--start-hour/--end-hour",
                "need 0 <= start < end <= 24",
            ));
        }
        if !(o.volume_scale > 0.0 && o.volume_scale <= 100.0) {
            return Err(invalid("--volume", "must be in (0, 100]"));
        }
        if !(1..=256).contains(&o.concurrency) {
            return Err(invalid("--concurrency", "must be in 1..=256"));
        }
        if let Some(s) = max_seconds {
            if !(s > 0.0 && s <= 24.0 * 3600.0) {
                return Err(invalid("--max-seconds", "must be in (0, 86400]"));
            }
            o.max_duration = Duration::from_secs_f64(s);
        }
        Ok(o)
    }

    /// Simulated seconds per real second.
    pub fn compression(&self) -> f64 {
        (self.end_hour - self.start_hour) * 3600.0 / (self.day_minutes * 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SimulateOptions, ArgsError> {
        SimulateOptions::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_simulate_a_monday_floor_day_in_twelve_minutes() {
        let o = parse("").unwrap();
        assert_eq!(o.weekday, Weekday::Mon);
        assert_eq!(o.compression(), 60.0);
        assert!(!o.surge);
    }

    #[test]
    fn flags_take_values_with_a_space_or_an_equals_sign() {
        let o = parse("--seed 9 --day-minutes=2 --surge --target http://localhost:9000/").unwrap();
        assert_eq!(o.seed, 9);
        assert_eq!(o.day_minutes, 2.0);
        assert!(o.surge);
        assert_eq!(o.target, "http://localhost:9000");
        assert_eq!(
            parse("--max-seconds 30").unwrap().max_duration,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn only_loopback_targets_are_allowed() {
        assert!(parse("--target http://127.0.0.1:1").is_ok());
        assert!(parse("--target http://[::1]:8080").is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://127.0.0.1.evil.com",
            "http://localhost.example.org",
        ] {
            assert!(parse(&format!("--target {bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn amqp_mode_takes_a_loopback_broker_and_the_runtimes_exchanges() {
        let o = parse("--amqp amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        let a = o.amqp.expect("amqp mode");
        assert_eq!(a.events_exchange, "frontdoor.events");
        assert_eq!(a.commands_exchange, "frontdoor.commands");
        let o = parse("--amqp amqp://localhost --events-exchange e --commands-exchange c").unwrap();
        let a = o.amqp.unwrap();
        assert_eq!(
            (a.events_exchange.as_str(), a.commands_exchange.as_str()),
            ("e", "c")
        );
        assert!(parse("").unwrap().amqp.is_none());
        for bad in [
            "amqp://guest:guest@10.0.0.1:5672/%2f",
            "amqps://127.0.0.1",
            "amqp://127.0.0.1@evil.example.org",
            "http://127.0.0.1:5672",
        ] {
            assert!(parse(&format!("--amqp {bad}")).is_err(), "{bad}");
        }
        assert!(
            parse("--events-exchange e").is_err(),
            "exchange without --amqp"
        );
    }

    #[test]
    fn unknown_missing_and_out_of_range_values_are_refused() {
        assert!(matches!(parse("--nope"), Err(ArgsError::Unknown(_))));
        assert!(matches!(parse("--seed"), Err(ArgsError::MissingValue(_))));
        assert!(parse("--day-minutes 0").is_err());
        assert!(parse("--start-hour 10 --end-hour 9").is_err());
        assert!(parse("--weekday funday").is_err());
        assert!(matches!(parse("--help"), Err(ArgsError::Help)));
    }
}
