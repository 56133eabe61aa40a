//! Connecting to RabbitMQ: heartbeats from the settings, a named connection, the
//! reconnect backoff, and `connection.blocked` logged and counted.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, Event};
use secrecy::ExposeSecret;

use super::BrokerError;
use crate::configuration::BrokerSettings;
use crate::metrics as m;

/// An open connection, the channels opened on it, and the watch over its events
/// (ends with the connection).
pub struct Session {
    /// The connection.
    pub connection: Connection,
    /// Every channel opened through [`Session::channel`], closed before the
    /// connection (see [`Session::close`]).
    channels: std::sync::Mutex<Vec<lapin::Channel>>,
    /// Dropping it stops the event watch.
    _watch: tokio::sync::oneshot::Sender<()>,
    /// Set by the event watch when lapin reports the connection broken.
    lost: tokio::sync::watch::Receiver<bool>,
}

/// Waits for a component's task to end: without a bound, as long as it takes
/// (it drains); within `bound`, else it is aborted. Answers false when it was
/// aborted (it was waiting on a lost connection, which never answers).
pub async fn join_within<T>(mut task: tokio::task::JoinHandle<T>, bound: Option<Duration>) -> bool {
    match bound {
        None => {
            let _ = task.await;
            true
        }
        Some(b) => {
            if tokio::time::timeout(b, &mut task).await.is_err() {
                task.abort();
                return false;
            }
            true
        }
    }
}

/// How long a polite close may take before the session is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Opens a channel that [`Session::close`] closes before the connection.
    pub async fn channel(&self) -> Result<lapin::Channel, lapin::Error> {
        let channel = self.connection.create_channel().await?;
        if let Ok(mut open) = self.channels.lock() {
            open.push(channel.clone());
        }
        Ok(channel)
    }

    /// Resolves once lapin has reported the connection broken (at once if it has).
    ///
    /// Futures on a broken connection's channels (an ack, a publisher confirm) are
    /// not always woken with an error: a component that waits on one would never
    /// notice the loss and never reconnect. Waiting on this beside them does.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error: the watch ended with the connection.
        let _ = lost.wait_for(|l| *l).await;
    }

    /// Whether lapin has reported the connection broken.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Closes the connection politely (best effort: it may be dead already; a
    /// broken one is only dropped, and each close is bounded by `CLOSE_TIMEOUT`).
    ///
    /// Each channel still open is closed first and awaited. Otherwise the last
    /// handle of a channel dropped while the connection closes makes lapin close
    /// that channel in the background, on a connection already closing, and it
    /// logs the refusal as an ERROR ("invalid channel state: Closing") on every
    /// clean shutdown.
    pub async fn close(self, why: &str) {
        if self.is_lost() {
            return;
        }
        // Stop watching first: a polite close is not an error worth a warning.
        drop(self._watch);
        let open = self
            .channels
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        for channel in open {
            if channel.status().connected() {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, why.into())).await;
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close(200, why.into())).await;
    }
}

/// Opens a connection for `component` (`consumer`, `relay`, ...).
#[tracing::instrument(name = "broker.connect", skip_all, fields(component))]
pub async fn connect(
    settings: &BrokerSettings,
    component: &'static str,
) -> Result<Session, BrokerError> {
    let mut uri: AMQPUri = settings
        .url
        .expose_secret()
        .parse()
        // The parse error may quote the URL (and its password): say only what failed.
        .map_err(|_| BrokerError::Config("broker.url is not an amqp:// URL".into()))?;
    uri.query.heartbeat = Some(settings.heartbeat_secs);
    let props = ConnectionProperties::default()
        .with_connection_name(format!("{}-{component}", settings.connection_name).into());
    let connection = Connection::connect_uri(uri, props).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (lost_tx, lost) = tokio::sync::watch::channel(false);
    watch_events(&connection, component, rx, lost_tx);
    Ok(Session {
        connection,
        channels: std::sync::Mutex::new(Vec::new()),
        _watch: tx,
        lost,
    })
}

/// Logs and counts `connection.blocked` / `unblocked` until the session ends.
fn watch_events(
    connection: &Connection,
    component: &'static str,
    mut done: tokio::sync::oneshot::Receiver<()>,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let mut events = connection.events_listener();
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut done => break,
                ev = events.next() => match ev {
                    None => break,
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(component, broker.reason = %reason, "broker blocked the connection (resource alarm): publishing paused");
                        metrics::counter!(m::BROKER_BLOCKED_TOTAL, "component" => component).increment(1);
                        metrics::gauge!(m::BROKER_BLOCKED, "component" => component).set(1.0);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        tracing::info!(component, "broker unblocked the connection");
                        metrics::gauge!(m::BROKER_BLOCKED, "component" => component).set(0.0);
                    }
                    Some(Event::Error(e)) => {
                        tracing::warn!(component, error.message = %e, "broker connection error");
                        lost.send_replace(true);
                    }
                    Some(_) => {}
                },
            }
        }
        metrics::gauge!(m::BROKER_BLOCKED, "component" => component).set(0.0);
    });
}

/// Exponential backoff with jitter between `min` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    min: Duration,
    /// Longest delay.
    max: Duration,
    /// The next delay before jitter.
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay to wait now (75–100 % of the current step, so nodes spread out).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        step.mul_f64(0.75 + f64::from(jitter) / 4000.0)
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..4).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(75) && d[0] <= Duration::from_millis(100));
        assert!(d[1] >= Duration::from_millis(150) && d[1] <= Duration::from_millis(200));
        assert!(d[3] >= Duration::from_millis(300) && d[3] <= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
