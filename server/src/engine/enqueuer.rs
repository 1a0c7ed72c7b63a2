//! Group commit of enqueues.
//!
//! Enqueue calls that arrive together share one transaction: one loop takes
//! every request queued at that moment and writes their tasks with a single
//! `Store::enqueue`; while that commits, new requests queue up for the next
//! one. There is no timer: a lone request is written at once, and under load
//! batches grow by themselves, so many clients enqueueing one task each pay
//! for one commit (one fsync on PostgreSQL, one trip through SQLite's writer)
//! per batch rather than per task.
//!
//! A request is answered only after its batch has committed, so an accepted
//! task is durable exactly as before. When a shared batch fails (one
//! request names an unregistered type, say), every request in it is written
//! again on its own, so each gets its own answer and one bad request never
//! fails another.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::engine::group_commit::{BatchQueue, next_batch};
use crate::engine::plane::ControlPlane;
use crate::error::{Error, Result};
use crate::model::{Enqueued, NewTask};

/// The most tasks written in one shared transaction.
const MAX_BATCH_TASKS: usize = 1000;

struct Request {
    tasks: Vec<NewTask>,
    reply: oneshot::Sender<Result<Vec<Enqueued>>>,
}

/// Where enqueue calls hand their tasks; [`run_enqueuer`] writes them.
pub struct Enqueuer {
    queue: BatchQueue<Request>,
}

impl Default for Enqueuer {
    fn default() -> Self {
        Enqueuer {
            queue: BatchQueue::new(1024),
        }
    }
}

impl Enqueuer {
    /// Writes the tasks with the next batch and returns them as stored,
    /// once committed.
    pub async fn enqueue(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the server is shutting down: try again".into());
        self.queue
            .sender
            .send(Request { tasks, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Writes queued enqueues in batches until `stop`, then writes what is left.
pub async fn run_enqueuer(plane: Arc<ControlPlane>, stop: CancellationToken) {
    let Some(mut receiver) = plane.enqueuer.queue.take_receiver("enqueuer") else {
        return;
    };
    while let Some(batch) =
        next_batch(&mut receiver, &stop, |r| r.tasks.len(), MAX_BATCH_TASKS).await
    {
        write_batch(&plane, batch).await;
    }
}

/// Writes one batch and answers its requests, once its tasks are handed to
/// agents or announced (see [`ControlPlane::store_tasks`]): the writer has
/// just finished, so the claim that follows finds them ready, and the
/// dispatcher does not wait for the caller's task to be scheduled first.
async fn write_batch(plane: &ControlPlane, mut batch: Vec<Request>) {
    if batch.len() == 1 {
        let request = batch.pop().expect("one request");
        let _ = request.reply.send(plane.store_tasks(request.tasks).await);
        return;
    }
    let counts: Vec<usize> = batch.iter().map(|r| r.tasks.len()).collect();
    let all: Vec<NewTask> = batch.iter().flat_map(|r| r.tasks.clone()).collect();
    match plane.store_tasks(all).await {
        Ok(enqueued) => {
            let mut enqueued = enqueued.into_iter();
            for (request, count) in batch.into_iter().zip(counts) {
                let _ = request
                    .reply
                    .send(Ok(enqueued.by_ref().take(count).collect()));
            }
        }
        Err(_) => {
            for request in batch {
                let _ = request.reply.send(plane.store_tasks(request.tasks).await);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use crate::store::Store;
    use crate::store::suite::{new_task, newest_tasks, spec, sqlite_store};

    #[tokio::test]
    async fn requests_queued_together_share_a_batch_and_a_bad_one_fails_alone() {
        let (_dir, _url, store) = sqlite_store("t.db").await;
        store
            .register_task_types(&[spec("send_email", "notifications")])
            .await
            .unwrap();
        let plane = Arc::new(ControlPlane::new(
            Arc::new(store),
            QueueConfig::default(),
            None,
        ));
        // Three requests wait in the queue before the loop starts, so its
        // first batch takes them all: two good ones and one naming a type
        // nobody registered.
        let good = |key: &str| NewTask {
            idempotency_key: Some(key.into()),
            ..new_task("send_email")
        };
        let first = plane.enqueuer.enqueue(vec![good("a"), good("b")]);
        let bad = plane.enqueuer.enqueue(vec![new_task("unheard_of")]);
        let second = plane.enqueuer.enqueue(vec![good("a")]);
        let stop = CancellationToken::new();
        let running = tokio::spawn(run_enqueuer(plane.clone(), stop.clone()));
        let (first, bad, second) = tokio::join!(first, bad, second);

        let first = first.expect("the good request is accepted");
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|e| e.created));
        let error = bad.expect_err("an unregistered type is refused");
        assert!(
            matches!(&error, Error::FailedPrecondition(m) if m.contains("unheard_of")),
            "{error:?}"
        );
        // The third request's key was taken by the first: the same task.
        let second = second.expect("the repeated key is answered");
        assert!(!second[0].created);
        assert_eq!(second[0].task.id, first[0].task.id);
        let stored = newest_tasks(plane.store.as_ref(), 10).await;
        assert_eq!(stored.len(), 2, "nothing written for the bad request");

        stop.cancel();
        running.await.unwrap();
        let after = plane.enqueuer.enqueue(vec![good("c")]).await;
        assert!(matches!(after, Err(Error::Unavailable(_))), "{after:?}");

        // Good requests written together each get back their own tasks, in order.
        let plane = Arc::new(ControlPlane::new(
            plane.store.clone(),
            QueueConfig::default(),
            None,
        ));
        let one = plane.enqueuer.enqueue(vec![good("x")]);
        let two = plane.enqueuer.enqueue(vec![good("y"), good("z")]);
        let stop = CancellationToken::new();
        let running = tokio::spawn(run_enqueuer(plane.clone(), stop.clone()));
        let (one, two) = tokio::join!(one, two);
        let keys = |enqueued: Vec<Enqueued>| -> Vec<String> {
            enqueued
                .into_iter()
                .map(|e| e.task.idempotency_key.unwrap_or_default())
                .collect()
        };
        assert_eq!(keys(one.unwrap()), ["x"]);
        assert_eq!(keys(two.unwrap()), ["y", "z"]);
        stop.cancel();
        running.await.unwrap();
    }
}
