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
    /// Open connections stop carrying bytes, both ways, and stay open (a dropped link).
    frozen: watch::Sender<bool>,
}

impl Proxy {
    /// Forwards every connection on a free loopback port to `target`.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let hanging = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let (flag, hang, cuts, freezes) =
            (up.clone(), hanging.clone(), cut.clone(), frozen.clone());
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
                let mut freeze_rx = freezes.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                        _ = async { freeze_rx.wait_for(|frozen| *frozen).await.is_ok() } => {
                            // Silence both ways, the sockets held open until the next change.
                            let _ = cut_rx.changed().await;
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            hanging,
            cut,
            frozen,
        }
    }

    /// New connections are accepted and never answered (a hung server).
    pub fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
    }

    /// The link drops: open connections go silent both ways (nothing closes them, as when
    /// packets are dropped), and new ones are accepted and never answered.
    pub fn blackhole(&self) {
        self.hanging.store(true, Ordering::SeqCst);
        self.frozen.send_replace(true);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.frozen.send_replace(false);
        if self.hanging.swap(false, Ordering::SeqCst) {
            // Let go of the connections held while hanging.
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// The write commands of MongoDB's wire protocol (the first key of an `OP_MSG` body).
const MONGO_WRITES: [&[u8]; 5] = [
    b"insert",
    b"update",
    b"delete",
    b"findAndModify",
    b"findandmodify",
];

/// What the armed proxy does to the write after those it lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtWrite {
    /// Drops it unsent, and its connection: as if the instance died just before it.
    Cut,
    /// Holds it back until [`MongoWriteCut::resume`]: another writer goes first.
    Pause,
}

/// A proxy in front of a MongoDB server that lets a set number of write commands through and
/// then cuts or pauses the next one. Reads and the driver's own handshakes pass untouched.
pub struct MongoWriteCut {
    pub addr: std::net::SocketAddr,
    /// Writes still let through, and what then; `None`: nothing armed.
    left: Arc<std::sync::Mutex<Option<(usize, AtWrite)>>>,
    fired: Arc<AtomicBool>,
    reached: Arc<tokio::sync::Notify>,
    resumed: Arc<tokio::sync::Notify>,
}

impl MongoWriteCut {
    pub async fn start(target: String) -> MongoWriteCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = MongoWriteCut {
            addr,
            left: Arc::new(std::sync::Mutex::new(None)),
            fired: Arc::new(AtomicBool::new(false)),
            reached: Arc::new(tokio::sync::Notify::new()),
            resumed: Arc::new(tokio::sync::Notify::new()),
        };
        let shared = gate.shared();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let shared = shared.shared();
                tokio::spawn(async move {
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let _ = shared.forward(&mut from_client, &mut to_server).await;
                    answers.abort();
                });
            }
        });
        gate
    }

    fn shared(&self) -> MongoWriteCut {
        MongoWriteCut {
            addr: self.addr,
            left: self.left.clone(),
            fired: self.fired.clone(),
            reached: self.reached.clone(),
            resumed: self.resumed.clone(),
        }
    }

    /// Lets `writes` more write commands through, then does `then` to the next.
    pub fn arm(&self, writes: usize, then: AtWrite) {
        *self.left.lock().unwrap() = Some((writes, then));
        self.fired.store(false, Ordering::SeqCst);
    }

    /// Whether the armed write was reached (the proxy disarms itself when it is).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn disarm(&self) {
        *self.left.lock().unwrap() = None;
    }

    /// Waits until the paused write is held back.
    pub async fn paused(&self) {
        self.reached.notified().await;
    }

    /// Lets the paused write go on.
    pub fn resume(&self) {
        self.resumed.notify_one();
    }

    /// Copies the client's messages to the server one whole message at a time, until a write
    /// meets an armed cut (or either side closes).
    async fn forward(
        &self,
        from_client: &mut tokio::net::tcp::OwnedReadHalf,
        to_server: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let mut header = [0u8; 4];
            from_client.read_exact(&mut header).await?;
            let len = u32::from_le_bytes(header) as usize;
            let mut message = header.to_vec();
            message.resize(len.max(4), 0);
            from_client.read_exact(&mut message[4..]).await?;
            if command_name(&message).is_some_and(|name| MONGO_WRITES.contains(&name)) {
                let now = {
                    let mut left = self.left.lock().unwrap();
                    match *left {
                        Some((0, then)) => {
                            *left = None;
                            self.fired.store(true, Ordering::SeqCst);
                            Some(then)
                        }
                        Some((n, then)) => {
                            *left = Some((n - 1, then));
                            None
                        }
                        None => None,
                    }
                };
                match now {
                    Some(AtWrite::Cut) => return Ok(()), // dropped unsent, with its connection
                    Some(AtWrite::Pause) => {
                        let resumed = self.resumed.notified();
                        self.reached.notify_one();
                        resumed.await;
                    }
                    None => {}
                }
            }
            to_server.write_all(&message).await?;
        }
    }
}
/// The command an `OP_MSG` carries: the first key of its body section.
fn command_name(message: &[u8]) -> Option<&[u8]> {
    const OP_MSG: i32 = 2013;
    let op = i32::from_le_bytes(message.get(12..16)?.try_into().ok()?);
    if op != OP_MSG {
        return None;
    }
    let mut at = 20; // header (16) and flag bits (4)
    while at < message.len() {
        match message[at] {
            0 => {
                // The body: a BSON document; its first element's name after its type byte.
                let name = message.get(at + 6..)?;
                let end = name.iter().position(|&b| b == 0)?;
                return Some(&name[..end]);
            }
            1 => {
                let size = i32::from_le_bytes(message.get(at + 1..at + 5)?.try_into().ok()?);
                at += 1 + usize::try_from(size).ok()?;
            }
            _ => return None,
        }
    }
    None
}
