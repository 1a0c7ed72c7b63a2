//! Transient storage faults seen on the write paths (enqueues and results),
//! so that the health check reports NOT_SERVING as soon as the database
//! refuses work, not only when its own probe fails.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// Whether a write path met a transient storage fault since the health check
/// last looked.
#[derive(Debug, Default)]
pub struct StorageFaults {
    seen: AtomicBool,
}

impl StorageFaults {
    /// Notes `error` if it is a transient storage fault.
    pub fn note(&self, error: &Error) {
        if error.is_transient() {
            self.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a fault was noted since the last call, forgetting it.
    pub fn take(&self) -> bool {
        self.seen.swap(false, Ordering::Relaxed)
    }
}
