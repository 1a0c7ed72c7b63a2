//! What both group-commit loops share (the completer's results, the
//! enqueuer's requests): the queue in front of the loop, and the batching
//! step — wait for one item, then take whatever else is already queued,
//! without waiting, up to a size. No timer, so a lone item
//! is written at once and batches grow only under load.

use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The queue in front of a group-commit loop: any number of senders, and
/// one receiver that the loop takes when it starts.
pub struct BatchQueue<T> {
    /// Where callers hand their items.
    pub sender: mpsc::Sender<T>,
    receiver: Mutex<Option<mpsc::Receiver<T>>>,
}

impl<T> BatchQueue<T> {
    /// A queue holding up to `capacity` items before senders wait.
    pub fn new(capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity);
        BatchQueue {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The receiving side, for the loop; `None` (logged, naming `loop_name`)
    /// if a loop already took it.
    pub fn take_receiver(&self, loop_name: &str) -> Option<mpsc::Receiver<T>> {
        let receiver = self
            .receiver
            .lock()
            .expect("batch queue lock poisoned")
            .take();
        if receiver.is_none() {
            tracing::error!("the {loop_name} loop was started twice");
        }
        receiver
    }
}

/// The next batch: the first item to arrive, then items already queued
/// while the batch's total `size` stays below `max`. Once `stop` fires, no
/// new item is accepted and the ones still queued come out; then `None`.
pub async fn next_batch<T>(
    receiver: &mut mpsc::Receiver<T>,
    stop: &CancellationToken,
    size: impl Fn(&T) -> usize,
    max: usize,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        item = receiver.recv() => item,
        () = stop.cancelled() => {
            receiver.close();
            receiver.recv().await
        }
    }?;
    let mut total = size(&first);
    let mut batch = vec![first];
    while total < max {
        match receiver.try_recv() {
            Ok(item) => {
                total += size(&item);
                batch.push(item);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}
