//! Per-token quotas: how many agent streams a token may hold open and how
//! many tasks per second it may enqueue. Both answer `RESOURCE_EXHAUSTED`
//! with what to do. Requests without a principal (authentication off) are
//! not counted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;

use super::Principal;

/// The per-token stream counts and enqueue rates of one replica.
pub struct Quotas {
    max_streams: Option<usize>,
    streams: Mutex<HashMap<String, usize>>,
    enqueue_rate: Option<(u32, DefaultKeyedRateLimiter<String>)>,
}

impl Quotas {
    /// `max_streams` open agent streams and `enqueue_per_second` tasks per
    /// token (a burst of one second's worth); 0 lifts either limit.
    pub fn new(max_streams: usize, enqueue_per_second: u32) -> Self {
        Quotas {
            max_streams: Some(max_streams).filter(|&n| n > 0),
            streams: Mutex::new(HashMap::new()),
            enqueue_rate: NonZeroU32::new(enqueue_per_second)
                .map(|rate| (rate.get(), RateLimiter::keyed(Quota::per_second(rate)))),
        }
    }

    /// Counts a new agent stream against its token; the permit gives the
    /// slot back when dropped.
    pub fn open_stream(
        self: &Arc<Self>,
        principal: Option<&Principal>,
    ) -> Result<StreamPermit, Status> {
        let (Some(principal), Some(max)) = (principal, self.max_streams) else {
            return Ok(StreamPermit { held: None });
        };
        let mut streams = self.streams.lock().expect("stream counts lock");
        let open = streams.entry(principal.token_id.clone()).or_default();
        if *open >= max {
            tracing::warn!(token = %principal.token_id, name = %principal.name, open = *open, "denied: too many agent streams for one token");
            return Err(Status::resource_exhausted(format!(
                "this token already holds {open} agent streams, the limit per token: stop an agent or use another token"
            )));
        }
        *open += 1;
        Ok(StreamPermit {
            held: Some((self.clone(), principal.token_id.clone())),
        })
    }

    /// Charges `tasks` enqueued tasks to the caller's token.
    pub fn charge_enqueue(
        &self,
        principal: Option<&Principal>,
        tasks: usize,
    ) -> Result<(), Status> {
        let (Some(principal), Some((rate, limiter))) = (principal, &self.enqueue_rate) else {
            return Ok(());
        };
        let n =
            NonZeroU32::new(u32::try_from(tasks).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let refused = match limiter.check_key_n(&principal.token_id, n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => format!(
                "this token enqueues faster than its limit of {} tasks per second: slow down and retry",
                rate
            ),
            Err(_) => format!(
                "{tasks} tasks in one call exceed this token's limit of {} tasks per second: send smaller batches",
                rate
            ),
        };
        tracing::warn!(token = %principal.token_id, name = %principal.name, tasks, "denied: enqueue rate");
        Err(Status::resource_exhausted(refused))
    }
}

/// One open agent stream counted against its token.
pub struct StreamPermit {
    held: Option<(Arc<Quotas>, String)>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some((quotas, token_id)) = self.held.take() {
            let mut streams = quotas.streams.lock().expect("stream counts lock");
            if let Some(open) = streams.get_mut(&token_id) {
                *open -= 1;
                if *open == 0 {
                    streams.remove(&token_id);
                }
            }
        }
    }
}
