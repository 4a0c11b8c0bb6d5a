//! Writes behind the answer, in groups: the shape the code attempts and the arriving calls
//! share. Items queue as requests are answered; one task takes what has queued, writes it as
//! one group (one transaction), answers the flushes queued with it, and lets the next group
//! gather for [`WINDOW`], so the commits are at most 1/[`WINDOW`] a second whatever the load.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Items waiting for the writer before new ones wait for room.
pub const QUEUE: usize = 8192;
/// How often the writer commits while items keep coming. Measured against none (each group
/// written as soon as the last one is, `docs/performance.md`): without it SQLite's whole calls
/// drop about 5 % and the greeting's p50 rises by a millisecond, and PostgreSQL falls behind
/// on wrong codes at 5,000 a second (3,465 sent, p50 1.4 s). It stays.
pub const WINDOW: Duration = Duration::from_millis(20);
/// Tries at writing one group while the database is unavailable, a second apart.
pub const TRIES: u32 = 30;

enum Entry<T> {
    Item(T),
    /// Answered once every item queued before it is written (or given up on).
    Flush(oneshot::Sender<()>),
}

/// A queue whose writer task starts with its first item.
pub struct GroupQueue<T> {
    queue: OnceLock<mpsc::Sender<Entry<T>>>,
    window: Duration,
}

impl<T> Default for GroupQueue<T> {
    fn default() -> Self {
        GroupQueue::with_window(WINDOW)
    }
}

impl<T> GroupQueue<T> {
    /// A queue whose groups gather for `window` instead of [`WINDOW`].
    pub fn with_window(window: Duration) -> Self {
        GroupQueue {
            queue: OnceLock::new(),
            window,
        }
    }
}

impl<T: Send + 'static> GroupQueue<T> {
    /// Queues `item`, starting the writer (`write`, given each group) on first use. Waits only
    /// when the writer is [`QUEUE`] items behind; gives the item back if the writer stopped.
    pub async fn send<F, Fut>(&self, item: T, write: impl FnOnce() -> F) -> Result<(), T>
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(rx, write(), self.window));
            tx
        });
        queue.send(Entry::Item(item)).await.map_err(|e| match e.0 {
            Entry::Item(item) => item,
            Entry::Flush(_) => unreachable!("an item was sent"),
        })
    }

    /// Returns once every item queued before the call has been written.
    pub async fn flush(&self) {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        if queue.send(Entry::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Runs until the queue's owner (which holds the sender) is dropped.
async fn run<T, F, Fut>(mut queue: mpsc::Receiver<Entry<T>>, mut write: F, window: Duration)
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut entries = Vec::new();
    while queue.recv_many(&mut entries, QUEUE).await > 0 {
        let mut items = Vec::with_capacity(entries.len());
        let mut flushes = Vec::new();
        for entry in entries.drain(..) {
            match entry {
                Entry::Item(item) => items.push(item),
                Entry::Flush(done) => flushes.push(done),
            }
        }
        let wrote = !items.is_empty();
        if wrote {
            write(items).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
        if wrote {
            tokio::time::sleep(window).await;
        }
    }
}
