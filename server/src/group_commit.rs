//! The batching step both group-commit loops share (the completer's results,
//! the enqueuer's requests): wait for one item, then take whatever else is
//! already queued, without waiting, up to a size. No timer, so a lone item
//! is written at once and batches grow only under load.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
