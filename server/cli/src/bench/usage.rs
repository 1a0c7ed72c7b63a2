//! What this process has used so far: CPU time and peak resident memory.
//! The benchmark's server, agents, clients and (with SQLite) the database
//! all run in this process, so CPU time per task is the cost of the whole
//! path, and it is steadier than wall-clock rates on a shared machine:
//! time spent waiting for a core does not count.

use std::time::Duration;

/// A reading of `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time of every thread so far.
    pub cpu: Duration,
    /// The largest resident set so far, in MiB.
    pub peak_rss_mib: f64,
}

impl Usage {
    /// Reads this process's usage now.
    pub fn now() -> Self {
        // SAFETY: `getrusage` only writes the `rusage` it is given, which
        // lives on this stack frame and is fully initialised (zeroed) first.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Usage {
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            // Linux reports `ru_maxrss` in KiB.
            peak_rss_mib: (usage.ru_maxrss as f64 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_memory_is_reported() {
        let before = Usage::now();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = Usage::now();
        assert!(after.cpu > before.cpu, "{before:?} → {after:?}");
        assert!(after.peak_rss_mib > 1.0, "{after:?}");
    }
}
