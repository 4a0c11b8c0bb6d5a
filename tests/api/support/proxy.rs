//! A TCP proxy in front of a real server, to cut the connection on demand (fault tests).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    hanging: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// Forwards every connection on a free loopback port to `target`.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let hanging = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (flag, hang, cuts) = (up.clone(), hanging.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                if hang.load(Ordering::SeqCst) {
                    // Accepted and then silence: a peer that hangs. Held until the next change.
                    let mut cut_rx = cuts.subscribe();
                    tokio::spawn(async move {
                        let _ = cut_rx.changed().await;
                        drop(inbound);
                    });
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            hanging,
            cut,
        }
    }

    /// New connections are accepted and never answered (a hung server).
    pub fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        if self.hanging.swap(false, Ordering::SeqCst) {
            // Let go of the connections held while hanging.
            self.cut.send_modify(|n| *n += 1);
        }
    }
}
