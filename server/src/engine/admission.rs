//! Which ready tasks a keyed claim of a limited type takes
//! ([`KeyedAdmission`]), the same on both backends.
//!
//! A claim of a type with a limit per concurrency key, or a rate limit per
//! key, reads the type's ready tasks in delivery order (priority, then age)
//! with each task's key values, and asks, task by task, whether it may
//! start: its concurrency key must have fewer than `max_running_per_key`
//! running or already taken, and its rate key's bucket must hold a token.
//! A task that may not start is skipped, so one key's flood never holds
//! back the others.
//!
//! A rate key's bucket is kept in `rate_buckets` (tokens, last refill), one
//! row per key that started recently. A key without a row has a full
//! bucket: rows are written only when tokens are spent, and a row whose
//! bucket has had time to fill again is deleted (`prune_rate_buckets`), so
//! the table holds only the keys that started within a fill time. Tasks
//! without the key's field share one key, the empty string.

use std::collections::HashMap;

use super::flow::{FlowPolicy, RateLimit};

/// How many tasks run per concurrency key value (`None`: tasks without
/// the key's field).
pub type RunningPerKey = HashMap<Option<String>, u32>;

/// A rate key's bucket as stored: tokens, and when they were counted
/// (Unix milliseconds).
pub type StoredBucket = (f64, i64);

/// The admission of one keyed claim: what runs per concurrency key, and
/// the rate buckets of the keys met so far.
#[derive(Debug)]
pub struct KeyedAdmission {
    per_key: Option<u32>,
    taken: RunningPerKey,
    rate: Option<RateLimit>,
    /// Each rate key's tokens now, and how many this claim spent.
    buckets: HashMap<String, (f64, u32)>,
    now_ms: i64,
}

impl KeyedAdmission {
    /// The admission of a claim at `now_ms` under `policy`, given how many
    /// tasks run per concurrency key.
    pub fn new(policy: &FlowPolicy, running: RunningPerKey, now_ms: i64) -> Self {
        KeyedAdmission {
            per_key: policy.limited_key().and(policy.max_running_per_key),
            taken: running,
            rate: policy.rate_key().and(policy.rate_limit),
            buckets: HashMap::new(),
            now_ms,
        }
    }

    /// True when the claim needs to know how many run per concurrency key.
    pub fn counts_running(&self) -> bool {
        self.per_key.is_some()
    }

    /// True when the claim must load `rate_key`'s bucket (see
    /// [`KeyedAdmission::load_bucket`]) before asking about a task of it.
    pub fn needs_bucket(&self, rate_key: Option<&str>) -> bool {
        self.rate.is_some() && !self.buckets.contains_key(rate_key.unwrap_or_default())
    }

    /// Takes `rate_key`'s bucket as stored; `None` when it has no row, which
    /// is a full bucket.
    pub fn load_bucket(&mut self, rate_key: Option<&str>, stored: Option<StoredBucket>) {
        let Some(rate) = self.rate else {
            return;
        };
        let tokens = stored.map_or(rate.capacity(), |(tokens, refilled_ms)| {
            rate.refill(tokens, refilled_ms, self.now_ms)
        });
        self.buckets
            .insert(rate_key.unwrap_or_default().to_owned(), (tokens, 0));
    }

    /// Whether a ready task with these key values may start; if so, it
    /// counts against its keys. Its rate key's bucket must be loaded.
    pub fn admit(&mut self, concurrency_key: Option<String>, rate_key: Option<&str>) -> bool {
        let bucket = match self.rate {
            Some(_) => {
                let bucket = self
                    .buckets
                    .get(rate_key.unwrap_or_default())
                    .expect("the claim loads a rate key's bucket before asking");
                if bucket.0 < 1.0 {
                    return false;
                }
                Some(rate_key.unwrap_or_default())
            }
            None => None,
        };
        if let Some(per_key) = self.per_key {
            let taken = self.taken.entry(concurrency_key).or_default();
            if *taken >= per_key {
                return false;
            }
            *taken += 1;
        }
        if let Some(key) = bucket {
            let bucket = self.buckets.get_mut(key).expect("checked above");
            bucket.0 -= 1.0;
            bucket.1 += 1;
        }
        true
    }

    /// The buckets this claim spent from, with their tokens left: what the
    /// claim writes back, at `now_ms`.
    pub fn spent(&self) -> Vec<(String, f64)> {
        self.buckets
            .iter()
            .filter(|(_, (_, spent))| *spent > 0)
            .map(|(key, (tokens, _))| (key.clone(), *tokens))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::flow::KeyPath;

    fn key(path: &str) -> Option<KeyPath> {
        Some(KeyPath::parse("rate_limit_key", path).unwrap())
    }

    #[test]
    fn each_rate_key_has_its_own_bucket_full_until_spent() {
        let policy = FlowPolicy {
            rate_limit: Some(RateLimit::parse("2/second").unwrap()),
            rate_limit_key: key("payload.customer"),
            ..FlowPolicy::default()
        };
        let mut admission = KeyedAdmission::new(&policy, HashMap::new(), 10_000);
        assert!(!admission.counts_running());
        assert!(admission.needs_bucket(Some("a")));
        admission.load_bucket(Some("a"), None);
        // b spent its two tokens 250 ms ago: half a token is back.
        admission.load_bucket(Some("b"), Some((0.0, 9_750)));
        admission.load_bucket(None, None);
        assert!(!admission.needs_bucket(Some("a")));
        let started: Vec<bool> = [Some("a"), Some("b"), Some("a"), Some("a"), None]
            .into_iter()
            .map(|rate_key| admission.admit(None, rate_key))
            .collect();
        assert_eq!(started, [true, false, true, false, true]);
        let mut spent = admission.spent();
        spent.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(spent, [(String::new(), 1.0), ("a".to_owned(), 0.0)]);
    }

    #[test]
    fn a_concurrency_key_and_a_rate_key_must_both_have_room() {
        let policy = FlowPolicy {
            concurrency_key: key("payload.customer"),
            max_running_per_key: Some(1),
            rate_limit: Some(RateLimit::parse("10/second").unwrap()),
            rate_limit_key: key("payload.region"),
            ..FlowPolicy::default()
        };
        let running = [(Some("x".to_owned()), 1)].into();
        let mut admission = KeyedAdmission::new(&policy, running, 0);
        assert!(admission.counts_running());
        admission.load_bucket(Some("eu"), Some((1.0, 0)));
        admission.load_bucket(Some("us"), None);
        assert!(!admission.admit(Some("x".into()), Some("eu")), "x runs one");
        assert!(admission.admit(Some("y".into()), Some("eu")));
        assert!(
            !admission.admit(Some("z".into()), Some("eu")),
            "eu is spent"
        );
        assert!(admission.admit(Some("z".into()), Some("us")));
        assert!(!admission.admit(Some("y".into()), Some("us")), "y took one");
    }
}
