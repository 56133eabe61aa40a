//! A throwaway TCP proxy a drill puts between the runtime and RabbitMQ or
//! PostgreSQL, so it can cut the connection (a crash, a network fault, a database
//! outage) without stopping the machine's shared services.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
        let (generation, gen_rx) = watch::channel(0u64);
        let target = target.to_string();
        let (up2, accepted2) = (up.clone(), accepted.clone());
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
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
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

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}
