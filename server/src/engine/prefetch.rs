//! How many assignments a session gets beyond its slots: its prefetch.
//!
//! An agent that opts in (`Register.max_prefetch`) queues assignments
//! beyond the tasks it runs and starts the next one the moment a handler
//! returns, instead of waiting for its result to reach the server, a claim
//! to run and the assignment to come back. That round trip, not the work,
//! bounded a slot's turnover: without a queue, throughput was proportional
//! to slots.
//!
//! A queued task waits for a slot while another agent might have run it, so
//! the window is sized to cost no more than a claim: it holds as many tasks
//! as the agent's slots finish while one claim runs,
//! `slots × claim time ÷ handler time`, at most what the agent asked for.
//! Fast handlers get the agent's whole window; a handler that runs longer
//! than a claim takes gets less than one task per slot, and one that runs
//! for seconds gets none. Nor does one that runs for half the agent's
//! patience (`limits::QUEUE_PATIENCE`) or longer: slots that start
//! together (a burst of work, a claim that filled them all) stay in step,
//! and a queue behind them would wait out a whole handler and be given
//! back, one write per task, over and over; the round trip a window saves
//! is a few per cent of such a handler.
//!
//! Such slow handlers are served a claim ahead instead
//! ([`Prefetch::reclaim_after`]): a started attempt's slot counts as free
//! a claim's time before the attempt is due to end, so the next task is
//! leased while the handler still runs and waits in the agent's queue
//! about as long as a claim takes. W7 (50 ms handlers, 640 slots) spent a
//! claim and a result batch of every slot, all at once, between one wave
//! of handlers and the next.
//!
//! Both times are smoothed averages: the handler's per session, as its
//! agent reports it on each result; the claim's per replica ([`ClaimTime`]), as every dispatcher measures it. One claim time
//! for all sessions keeps equal agents' windows equal: each session's own
//! would differ by its luck with the database, and the work would follow
//! the larger windows. Until both are known the window is empty.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskplane_proto::limits::QUEUE_PATIENCE;

/// The most assignments an agent may queue beyond its slots, whatever it
/// asks for: each one is a task the server tracks for the session.
pub const MAX_PREFETCH: u32 = 1024;

/// How much of each new sample the averages take.
const SMOOTHING: f64 = 0.25;

/// How long a claim takes on this replica, smoothed over every session's.
#[derive(Debug, Default)]
pub struct ClaimTime {
    secs: Mutex<Option<f64>>,
}

impl ClaimTime {
    /// Notes how long a claim took.
    pub fn took(&self, took: Duration) {
        smooth(
            &mut self.secs.lock().expect("claim time lock poisoned"),
            took,
        );
    }

    fn secs(&self) -> Option<f64> {
        *self.secs.lock().expect("claim time lock poisoned")
    }
}

/// A session's prefetch: what the agent asked for and the averages that
/// size the window.
#[derive(Debug)]
pub struct Prefetch {
    /// The most the agent queues (0: it runs only what fits its slots).
    most: u32,
    /// Seconds a handler of this agent runs, smoothed.
    handler_secs: Option<f64>,
    /// How long claims take on this replica.
    claim: Arc<ClaimTime>,
}

impl Prefetch {
    /// An empty window for an agent that queues up to `most` assignments
    /// (at most [`MAX_PREFETCH`], as the agent API admits them), sized with
    /// this replica's `claim` time.
    pub fn new(most: u32, claim: Arc<ClaimTime>) -> Self {
        Prefetch {
            most,
            handler_secs: None,
            claim,
        }
    }

    /// Notes how long a handler ran.
    pub fn handler_ran(&mut self, ran: Duration) {
        smooth(&mut self.handler_secs, ran);
    }

    /// Notes that the agent gave back a queued assignment because none of
    /// its `slots` freed for a while: its handlers now run longer than the
    /// averages say. The window closes until fast results open it again.
    pub fn gave_back(&mut self, slots: u32) {
        if let (Some(handler), Some(claim)) = (&mut self.handler_secs, self.claim.secs()) {
            *handler = handler.max(claim * f64::from(slots + 1));
        }
    }

    /// The most assignments the agent queues beyond its slots.
    pub fn most(&self) -> u32 {
        self.most
    }

    /// For handlers too slow for a window: how long after an attempt
    /// starts its slot may be claimed for again, so that the next task
    /// arrives about when the attempt ends rather than a claim later. That
    /// is the handler's time less a claim's; `None` for handlers fast enough
    /// for a window, for ones shorter than two claims (the next task would
    /// wait longer than a claim), and for an agent that queues nothing.
    pub fn reclaim_after(&self) -> Option<Duration> {
        let (Some(handler), Some(claim)) = (self.handler_secs, self.claim.secs()) else {
            return None;
        };
        if self.most == 0 || handler < QUEUE_PATIENCE.as_secs_f64() / 2.0 || handler < 2.0 * claim {
            return None;
        }
        Some(Duration::from_secs_f64(handler - claim))
    }

    /// How many assignments beyond `slots` the session may hold now.
    pub fn window(&self, slots: u32) -> u32 {
        let (Some(handler), Some(claim)) = (self.handler_secs, self.claim.secs()) else {
            return 0;
        };
        if handler >= QUEUE_PATIENCE.as_secs_f64() / 2.0 {
            return 0;
        }
        // A handler that reports no time at all is as fast as can be told.
        let per_claim = f64::from(slots) * claim / handler.max(1e-6);
        (per_claim as u32).min(self.most)
    }
}

fn smooth(average: &mut Option<f64>, sample: Duration) {
    let sample = sample.as_secs_f64();
    *average = Some(match *average {
        Some(average) => average + SMOOTHING * (sample - average),
        None => sample,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn prefetch_after_a_claim_of(claim: Duration, most: u32) -> Prefetch {
        let time = Arc::new(ClaimTime::default());
        time.took(claim);
        Prefetch::new(most, time)
    }

    #[test]
    fn the_window_is_empty_until_both_times_are_known() {
        let claim = Arc::new(ClaimTime::default());
        let mut prefetch = Prefetch::new(64, claim.clone());
        assert_eq!(prefetch.window(16), 0);
        prefetch.handler_ran(MS);
        assert_eq!(prefetch.window(16), 0);
        claim.took(MS);
        assert_eq!(prefetch.window(16), 16);
    }

    #[test]
    fn the_window_holds_what_the_slots_finish_during_a_claim() {
        let mut prefetch = prefetch_after_a_claim_of(MS, 64);
        prefetch.handler_ran(Duration::from_micros(10));
        assert_eq!(prefetch.window(16), 64, "fast handlers: all that was asked");
        let mut slow = prefetch_after_a_claim_of(MS, 64);
        slow.handler_ran(4 * MS);
        assert_eq!(slow.window(16), 4, "16 slots finish 4 tasks per claim");
        for _ in 0..10 {
            slow.handler_ran(Duration::from_secs(30));
        }
        assert_eq!(slow.window(16), 0, "less than a task per claim: none");
        let mut in_step = prefetch_after_a_claim_of(20 * MS, 64);
        in_step.handler_ran(QUEUE_PATIENCE / 2);
        assert_eq!(
            in_step.window(64),
            0,
            "handlers of half the agent's patience: none, however slow claims are"
        );
        let mut none = prefetch_after_a_claim_of(MS, 0);
        none.handler_ran(Duration::from_micros(10));
        assert_eq!(none.window(16), 0, "an agent that asked for none");
    }

    #[test]
    fn slow_handlers_are_claimed_for_a_claim_before_they_end() {
        let mut slow = prefetch_after_a_claim_of(5 * MS, 64);
        slow.handler_ran(50 * MS);
        assert_eq!(slow.window(64), 0);
        assert_eq!(slow.reclaim_after(), Some(45 * MS));
        let mut fast = prefetch_after_a_claim_of(MS, 64);
        fast.handler_ran(MS);
        assert_eq!(fast.reclaim_after(), None, "fast handlers have a window");
        let mut slower_claims = prefetch_after_a_claim_of(30 * MS, 64);
        slower_claims.handler_ran(50 * MS);
        assert_eq!(
            slower_claims.reclaim_after(),
            None,
            "a handler shorter than two claims"
        );
        let mut none = prefetch_after_a_claim_of(5 * MS, 0);
        none.handler_ran(50 * MS);
        assert_eq!(none.reclaim_after(), None, "an agent that queues nothing");
        slow.gave_back(64);
        assert!(
            slow.reclaim_after().unwrap() > 300 * MS,
            "a give-back puts the next claim far after an attempt starts"
        );
    }

    #[test]
    fn a_give_back_closes_the_window_until_fast_results_reopen_it() {
        let mut prefetch = prefetch_after_a_claim_of(MS, 64);
        prefetch.handler_ran(Duration::from_micros(10));
        assert_eq!(prefetch.window(16), 64);
        prefetch.gave_back(16);
        assert_eq!(prefetch.window(16), 0);
        for _ in 0..30 {
            prefetch.handler_ran(Duration::from_micros(10));
        }
        assert_eq!(prefetch.window(16), 64);
    }

    #[test]
    fn slower_handlers_shrink_the_window_within_a_few_results() {
        let mut prefetch = prefetch_after_a_claim_of(MS, 256);
        for _ in 0..20 {
            prefetch.handler_ran(Duration::from_micros(50));
        }
        assert_eq!(prefetch.window(16), 256);
        for _ in 0..8 {
            prefetch.handler_ran(Duration::from_millis(200));
        }
        assert_eq!(prefetch.window(16), 0);
    }
}
