//! An agent's slots, changed while it runs: [`Concurrency`] is a handle to
//! them, taken from [`Agent::concurrency`](crate::Agent::concurrency)
//! before [`Agent::run`](crate::Agent::run). A change applies at once to
//! the session connected (the agent starts queued tasks in new slots and
//! sends the server a `credit` message, so it sends more, or fewer, tasks)
//! and to every session after a reconnect, whose registration carries it.

use taskplane_proto::limits::MAX_CONCURRENCY;
use tokio::sync::watch;

use crate::runtime::AgentError;

/// A handle to an agent's slots: how many tasks it runs at once.
#[derive(Clone, Debug)]
pub struct Concurrency {
    slots: watch::Sender<u32>,
}

impl Concurrency {
    /// `slots` to begin with.
    pub(crate) fn new(slots: u32) -> Self {
        Concurrency {
            slots: watch::channel(slots).0,
        }
    }

    /// How many tasks the agent runs at once now.
    pub fn get(&self) -> u32 {
        *self.slots.borrow()
    }

    /// Runs up to `slots` tasks at once from now on. 0 pauses: running
    /// handlers finish and no task starts until the slots rise again.
    /// Fewer slots than handlers running lets those finish. More than the
    /// server accepts ([`MAX_CONCURRENCY`]) is refused and changes nothing.
    pub fn set(&self, slots: u32) -> Result<(), AgentError> {
        check_slots(slots)?;
        self.slots.send_replace(slots);
        Ok(())
    }

    /// Follows the slots, for a session.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u32> {
        self.slots.subscribe()
    }
}

/// `slots`, if the server accepts that many for one agent.
pub(crate) fn check_slots(slots: u32) -> Result<u32, AgentError> {
    if slots > MAX_CONCURRENCY {
        return Err(AgentError::TooManySlots(slots));
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_change_within_the_servers_limit_and_not_beyond() {
        let concurrency = Concurrency::new(4);
        let mut follower = concurrency.subscribe();
        concurrency.set(0).unwrap();
        assert_eq!(concurrency.get(), 0);
        assert!(follower.has_changed().unwrap());
        assert_eq!(*follower.borrow_and_update(), 0);
        let refused = concurrency.set(MAX_CONCURRENCY + 1).unwrap_err();
        assert!(
            refused.to_string().contains(&MAX_CONCURRENCY.to_string()),
            "{refused}"
        );
        assert_eq!(concurrency.get(), 0);
        assert!(!follower.has_changed().unwrap());
        concurrency.set(MAX_CONCURRENCY).unwrap();
        assert_eq!(concurrency.get(), MAX_CONCURRENCY);
    }
}
