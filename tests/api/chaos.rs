//! A throwaway TCP proxy a drill puts between the runtime and RabbitMQ or
//! PostgreSQL, so it can cut the connection (a crash, a network fault, a database
//! outage) without stopping the machine's shared services.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to `target` on a free local port.
pub struct ChaosProxy {
    /// The local port clients connect to.
    pub port: u16,
    /// Whether new and existing connections are let through.
    up: Arc<AtomicBool>,
    /// Bumped on every cut: connections of older generations are dropped.
    generation: watch::Sender<u64>,
    /// Connections accepted while up (a reconnect shows as a second one).
    accepted: Arc<AtomicU64>,
    /// While set, what the server sends is read and dropped: the client's requests
    /// arrive, their answers (a publisher confirm) never do.
    swallow: Arc<AtomicBool>,
}

impl ChaosProxy {
    /// Starts proxying to `target` (`host:port`).
    pub async fn start(target: &str) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicU64::new(0));
        let swallow = Arc::new(AtomicBool::new(false));
        let (generation, gen_rx) = watch::channel(0u64);
        let target = target.to_string();
        let (up2, accepted2, swallow2) = (up.clone(), accepted.clone(), swallow.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                accepted2.fetch_add(1, Ordering::SeqCst);
                let mut gen = gen_rx.clone();
                let born = *gen.borrow_and_update();
                let target = target.clone();
                let swallow = swallow2.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let upstream = tokio::io::copy(&mut from_client, &mut to_server);
                    let downstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_server.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<(), std::io::Error>(());
                            }
                            if !swallow.load(Ordering::SeqCst) {
                                to_client.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = gen.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        ChaosProxy {
            port,
            up,
            generation,
            accepted,
            swallow,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Cuts every open connection but lets the clients reconnect at once.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops (true) or passes (false) what the server sends on every connection.
    pub fn swallow_replies(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}
