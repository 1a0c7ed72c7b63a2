//! Live agent sessions on this replica, held in memory.
//!
//! A session is one `AgentService.Connect` stream. It tracks the agent's slots
//! (credit), the assignments it has not answered yet and the slots an
//! enqueue has reserved to hand it new tasks, so the server never has more
//! unfinished assignments on a session than the agent has slots and its
//! prefetch window (see [`crate::engine::prefetch`]).
//!
//! Assignments beyond the slots wait in the agent's queue, oldest first, and
//! the session keeps them in the same order: one starts when a running one
//! is answered. An attempt's timeout counts from its start, so the server
//! ends an attempt that overran it only once it has started.
//!
//! A session is *caught up* when its last claim came back short (nothing of
//! its types was ready) and no new work of its types was announced since.
//! Only a caught-up session takes tasks handed off at enqueue: with nothing
//! waiting before them, handing them over skips no one in the queue.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::prefetch::{ClaimTime, Prefetch};
use crate::error::Error;
use crate::model::{AgentSession, HandlerCheck, SessionStatus, Task};

/// What the server tells an agent on its stream. The API turns each into
/// a wire message (`api/agents.rs`); the engine builds none.
#[derive(Debug)]
pub enum ToAgent {
    /// Run this task, leased to the session until `lease_expires_at`.
    Assign {
        /// The task, RUNNING under the session's lease.
        task: Box<Task>,
        /// When the lease ends unless extended.
        lease_expires_at: DateTime<Utc>,
    },
    /// Stop this task if you can.
    Cancel {
        /// The task.
        task_id: Uuid,
        /// Why, in words.
        reason: String,
    },
    /// Your heartbeat arrived: proof to the agent that this server is
    /// alive.
    HeartbeatAck,
    /// The stream ends with this error.
    End(Error),
}

/// Where a session's outbound messages go.
pub type Outbound = mpsc::Sender<ToAgent>;

/// One connected agent stream.
pub struct Session {
    /// The stream's id.
    pub id: Uuid,
    /// The agent instance.
    pub agent_id: Uuid,
    /// The name the agent registered with.
    pub agent_name: String,
    /// Domains it serves.
    pub domains: Vec<String>,
    /// Task types it serves, in the order its claims take them.
    pub task_types: Vec<String>,
    /// The same types, to look one up: an agent may serve a thousand.
    serving: HashSet<String>,
    /// Labels it sent.
    pub labels: BTreeMap<String, String>,
    /// Feature flags it sent.
    pub feature_flags: BTreeMap<String, bool>,
    /// The handler versions it serves, per task type (see
    /// [`crate::engine::routing`]).
    pub handler_versions: BTreeMap<String, Vec<String>>,
    /// When it registered.
    pub connected_at: DateTime<Utc>,
    /// Messages to the agent.
    pub outbound: Outbound,
    /// Wakes the session's dispatcher (new work, freed slot, more credit).
    pub wake: Notify,
    /// Cancelled to end the session (silent agent) and when it ends.
    pub closed: CancellationToken,
    state: Mutex<SessionState>,
}

struct SessionState {
    slots: u32,
    in_flight: HashMap<Uuid, InFlight>,
    /// The assignments in flight that wait in the agent's queue, oldest
    /// first.
    queued: VecDeque<Uuid>,
    prefetch: Prefetch,
    /// Slots promised to tasks on their way (a claim running, a hand-off
    /// committing): counted as taken, so no two paths fill one slot.
    reserved: u32,
    /// Announcements of new work of the session's types so far.
    work_announced: u64,
    /// `work_announced` as it was when the last short claim began.
    caught_up_at: Option<u64>,
    draining: bool,
    last_seen_at: DateTime<Utc>,
    health: Vec<HandlerCheck>,
    health_checked_at: Option<DateTime<Utc>>,
}

/// An assignment the agent has not answered yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The attempt (the lease's fencing token).
    attempt: u32,
    /// How long after its start the server ends the attempt itself, if the
    /// agent has not answered: its timeout and a grace.
    answer_within: Duration,
    /// When it started; `None` while it waits in the agent's queue.
    started_at: Option<Instant>,
}

impl InFlight {
    fn overdue_at(&self) -> Option<Instant> {
        self.started_at.map(|started| started + self.answer_within)
    }
}

/// Everything a new session is made of.
pub struct NewSession {
    /// The agent instance.
    pub agent_id: Uuid,
    /// The name the agent registered with.
    pub agent_name: String,
    /// Domains it serves.
    pub domains: Vec<String>,
    /// Task types it serves.
    pub task_types: Vec<String>,
    /// Labels it sent.
    pub labels: BTreeMap<String, String>,
    /// Feature flags it sent.
    pub feature_flags: BTreeMap<String, bool>,
    /// The handler versions it serves, per task type.
    pub handler_versions: BTreeMap<String, Vec<String>>,
    /// Its slots.
    pub max_concurrency: u32,
    /// The most assignments it queues beyond its slots.
    pub max_prefetch: u32,
    /// How long claims take on this replica (it sizes the prefetch window).
    pub claim_time: Arc<ClaimTime>,
    /// Messages to the agent.
    pub outbound: Outbound,
}

impl Session {
    /// Creates a session with all its slots free.
    pub fn new(new: NewSession) -> Self {
        let now = Utc::now();
        Session {
            id: Uuid::now_v7(),
            agent_id: new.agent_id,
            agent_name: new.agent_name,
            domains: new.domains,
            serving: new.task_types.iter().cloned().collect(),
            task_types: new.task_types,
            labels: new.labels,
            feature_flags: new.feature_flags,
            handler_versions: new.handler_versions,
            connected_at: now,
            outbound: new.outbound,
            wake: Notify::new(),
            closed: CancellationToken::new(),
            state: Mutex::new(SessionState {
                slots: new.max_concurrency,
                in_flight: HashMap::new(),
                queued: VecDeque::new(),
                prefetch: Prefetch::new(new.max_prefetch, new.claim_time),
                reserved: 0,
                work_announced: 0,
                caught_up_at: None,
                draining: false,
                last_seen_at: now,
                health: Vec::new(),
                health_checked_at: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().expect("session state lock poisoned")
    }

    /// Room for new assignments: free slots and the prefetch window's room
    /// (0 while draining).
    pub fn free_slots(&self) -> u32 {
        self.state().free_slots()
    }

    /// Reserves every free slot (up to `most`) for a claim about to run, so
    /// that no hand-off fills them meanwhile; returns how many. Each claimed
    /// task then [`place`](Self::place)s into one, and the rest go back with
    /// [`unreserve`](Self::unreserve).
    pub fn reserve_free(&self, most: u32) -> u32 {
        let mut state = self.state();
        let free = state.free_slots().min(most);
        state.reserved += free;
        free
    }

    /// When a running attempt's slot may next be claimed for ahead of its
    /// end (slow handlers only; see [`Prefetch::reclaim_after`]): the
    /// dispatcher wakes then.
    pub fn next_reclaim(&self) -> Option<Instant> {
        self.state().next_reclaim()
    }

    /// Tells the session that work of its types may be waiting: it is no
    /// longer caught up, and its dispatcher wakes to claim.
    pub fn announce_work(&self) {
        self.state().work_announced += 1;
        self.wake.notify_one();
    }

    /// How many announcements of new work the session has had; read before
    /// a claim and passed to [`Session::caught_up`] if it comes back short.
    pub fn work_announced(&self) -> u64 {
        self.state().work_announced
    }

    /// Notes that a claim begun after `announced` announcements found
    /// nothing more of the session's types ready.
    pub fn caught_up(&self, announced: u64) {
        self.state().caught_up_at = Some(announced);
    }

    /// Whether the session's last claim came back short and no work of its
    /// types was announced since.
    pub fn is_caught_up(&self) -> bool {
        self.state().is_caught_up()
    }

    /// Reserves room for a task handed off at enqueue, if the session is
    /// caught up, open and not draining: a free slot, or room in the
    /// prefetch window. Filling windows at enqueue spreads a batch over
    /// every agent; left to claims, the agents already claiming take it
    /// all before the idle ones hear of it.
    pub fn reserve(&self) -> bool {
        let mut state = self.state();
        if self.hand_off_room(&state) == 0 {
            return false;
        }
        state.reserved += 1;
        true
    }

    /// How many tasks handed off at enqueue the session could take now:
    /// its free room if it is caught up and open, else none.
    fn hand_off_room(&self, state: &SessionState) -> u32 {
        if self.closed.is_cancelled() || !state.is_caught_up() {
            return 0;
        }
        state.free_slots()
    }

    /// Fills a reserved slot with an attempt sent to the agent. It starts
    /// at once if a slot is idle and nothing waits before it, else it
    /// waits its turn in the agent's queue. The server ends it itself if
    /// the agent has not answered `answer_within` after its start.
    pub fn place(&self, task_id: Uuid, attempt: u32, answer_within: Duration) {
        let mut state = self.state();
        state.reserved = state.reserved.saturating_sub(1);
        let starts = state.queued.is_empty() && state.running() < state.slots;
        state.in_flight.insert(
            task_id,
            InFlight {
                attempt,
                answer_within,
                started_at: starts.then(Instant::now),
            },
        );
        if !starts {
            state.queued.push_back(task_id);
        }
    }

    /// Gives back `count` reserved slots that no task filled after all.
    pub fn unreserve(&self, count: u32) {
        if count == 0 {
            return;
        }
        let mut state = self.state();
        state.reserved = state.reserved.saturating_sub(count);
        drop(state);
        self.wake.notify_one();
    }

    /// Ends the session from the server's side: tells the agent why, then
    /// closes the stream, which returns the session's tasks to the queue.
    pub fn close(&self, reason: Error) {
        let _ = self.outbound.try_send(ToAgent::End(reason));
        self.closed.cancel();
    }

    /// Forgets an assignment that ended without a result (cancelled, say),
    /// freeing its slot. Returns whether it was in flight.
    pub fn untrack(&self, task_id: Uuid) -> bool {
        let freed = self.state().remove(task_id).is_some();
        if freed {
            self.wake.notify_one();
        }
        freed
    }

    /// Forgets the assignment of this attempt, which the agent answered
    /// after its handler ran for `ran_for` (if it said), freeing its slot.
    /// A result for another attempt of the task (one whose lease expired
    /// and was leased again) leaves the current one tracked. Returns
    /// whether that attempt was in flight.
    pub fn untrack_attempt(&self, task_id: Uuid, attempt: u32, ran_for: Option<Duration>) -> bool {
        let mut state = self.state();
        let Some(answered) = state.remove_attempt(task_id, attempt) else {
            return false;
        };
        // An agent that does not say how long its handler ran: as long as
        // the server saw it run.
        if let Some(ran) = ran_for.or(answered.started_at.map(|started| started.elapsed())) {
            state.prefetch.handler_ran(ran);
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Forgets a queued assignment its agent gave back unstarted, and
    /// closes the prefetch window (see [`Prefetch::gave_back`]). Returns
    /// whether that attempt was in flight.
    pub fn given_back(&self, task_id: Uuid, attempt: u32) -> bool {
        let mut state = self.state();
        if state.remove_attempt(task_id, attempt).is_none() {
            return false;
        }
        let slots = state.slots;
        state.prefetch.gave_back(slots);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// The started attempts past their timeout and grace, oldest first.
    pub fn overdue(&self, now: Instant) -> Vec<(Uuid, u32)> {
        let state = self.state();
        let mut overdue: Vec<_> = state
            .in_flight
            .iter()
            .filter_map(|(id, f)| Some((f.overdue_at()?, *id, f.attempt)))
            .filter(|(overdue_at, _, _)| *overdue_at <= now)
            .collect();
        overdue.sort();
        overdue
            .into_iter()
            .map(|(_, id, attempt)| (id, attempt))
            .collect()
    }

    /// Whether this session's agent serves `task_type`.
    pub fn serves(&self, task_type: &str) -> bool {
        self.serving.contains(task_type)
    }

    /// Whether this session holds the task (at any attempt).
    pub fn holds(&self, task_id: Uuid) -> bool {
        self.state().in_flight.contains_key(&task_id)
    }

    /// True when the agent holds an attempt of the task newer than
    /// `attempt` (the task came back to it after that attempt's lease was
    /// lost).
    pub fn holds_newer(&self, task_id: Uuid, attempt: u32) -> bool {
        self.state()
            .in_flight
            .get(&task_id)
            .is_some_and(|held| held.attempt > attempt)
    }

    /// Sets the agent's slots (credit); 0 pauses delivery.
    pub fn set_slots(&self, slots: u32) {
        let mut state = self.state();
        state.slots = slots;
        state.start_queued();
        drop(state);
        self.wake.notify_one();
    }

    /// Stops new assignments; running ones finish.
    pub fn drain(&self) {
        self.state().draining = true;
    }

    /// Notes that the agent spoke.
    pub fn seen(&self) {
        self.state().last_seen_at = Utc::now();
    }

    /// Records the handlers' self-checks from a heartbeat.
    pub fn set_health(&self, health: Vec<HandlerCheck>) {
        let mut state = self.state();
        state.health = health;
        state.health_checked_at = Some(Utc::now());
    }

    /// The session's state now.
    pub fn status(&self) -> SessionStatus {
        let state = self.state();
        SessionStatus {
            slots: state.slots,
            running: state.running(),
            draining: state.draining,
            last_seen_at: state.last_seen_at,
            health: state.health.clone(),
            health_checked_at: state.health_checked_at,
        }
    }

    /// The session as every replica sees it.
    pub fn describe(&self) -> AgentSession {
        AgentSession {
            session_id: self.id,
            agent_id: self.agent_id,
            agent_name: self.agent_name.clone(),
            domains: self.domains.clone(),
            task_types: self.task_types.clone(),
            labels: self.labels.clone(),
            feature_flags: self.feature_flags.clone(),
            handler_versions: self.handler_versions.clone(),
            connected_at: self.connected_at,
            status: self.status(),
        }
    }
}

impl SessionState {
    fn is_caught_up(&self) -> bool {
        self.caught_up_at == Some(self.work_announced)
    }

    /// Assignments started and not answered.
    fn running(&self) -> u32 {
        (self.in_flight.len() - self.queued.len()) as u32
    }

    /// Room for new assignments, in the slots and the prefetch window, or,
    /// for slow handlers, in the slots of attempts due to end within a
    /// claim (see [`Prefetch::reclaim_after`]).
    fn free_slots(&self) -> u32 {
        if self.draining {
            return 0;
        }
        let beyond = match self.prefetch.reclaim_after() {
            Some(after) => self.started_before(after).min(self.prefetch.most()),
            None => self.prefetch.window(self.slots),
        };
        (self.slots + beyond).saturating_sub(self.in_flight.len() as u32 + self.reserved)
    }

    /// The running attempts that started at least `ago`.
    fn started_before(&self, ago: Duration) -> u32 {
        self.in_flight
            .values()
            .filter_map(|attempt| attempt.started_at)
            .filter(|started| started.elapsed() >= ago)
            .count() as u32
    }

    /// When the next running attempt's slot may be claimed for, if the
    /// handlers are slow enough to be claimed for ahead and one is yet to
    /// reach that point.
    fn next_reclaim(&self) -> Option<Instant> {
        let after = self.prefetch.reclaim_after()?;
        let now = Instant::now();
        self.in_flight
            .values()
            .filter_map(|attempt| attempt.started_at)
            .map(|started| started + after)
            .filter(|at| *at > now)
            .min()
    }

    /// Forgets an assignment; a queued one's turn comes when a running one
    /// ends (the agent starts the oldest as a handler returns).
    fn remove(&mut self, task_id: Uuid) -> Option<InFlight> {
        let removed = self.in_flight.remove(&task_id)?;
        if removed.started_at.is_none() {
            self.queued.retain(|queued| *queued != task_id);
        }
        self.start_queued();
        Some(removed)
    }

    /// Forgets the assignment if it is this attempt of the task (not an
    /// older or newer one).
    fn remove_attempt(&mut self, task_id: Uuid, attempt: u32) -> Option<InFlight> {
        if self.in_flight.get(&task_id)?.attempt != attempt {
            return None;
        }
        self.remove(task_id)
    }

    /// Starts the oldest queued assignments while slots are idle, as the
    /// agent does.
    fn start_queued(&mut self) {
        while self.running() < self.slots {
            let Some(next) = self.queued.pop_front() else {
                return;
            };
            if let Some(next) = self.in_flight.get_mut(&next) {
                next.started_at = Some(Instant::now());
            }
        }
    }
}

/// Every live session on this replica.
#[derive(Default)]
pub struct Sessions {
    sessions: RwLock<HashMap<Uuid, Arc<Session>>>,
}

impl Sessions {
    /// Adds a registered session.
    pub fn insert(&self, session: Arc<Session>) {
        self.write().insert(session.id, session);
    }

    /// Removes an ended session.
    pub fn remove(&self, id: Uuid) {
        self.write().remove(&id);
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut sessions: Vec<_> = self.read().values().cloned().collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// Announces work to the sessions that serve any of these types.
    pub fn wake_for<'a>(&self, task_types: impl IntoIterator<Item = &'a str>) {
        let task_types: HashSet<&str> = task_types.into_iter().collect();
        for session in self.read().values() {
            if task_types.iter().any(|t| session.serves(t)) {
                session.announce_work();
            }
        }
    }

    /// Announces work to every session (leases expired: any type may have
    /// tasks back in the queue).
    pub fn wake_all(&self) {
        for session in self.read().values() {
            session.announce_work();
        }
    }

    /// Reserves room for a task of this type on the caught-up session
    /// serving it that has the most free room, if any. A session busy
    /// claiming is passed over, however much room it has: it is not caught
    /// up, and its claim finds the task if no other session takes it.
    pub fn reserve_for(&self, task_type: &str) -> Option<Arc<Session>> {
        let session = self
            .read()
            .values()
            .filter(|s| s.serves(task_type))
            .map(|s| (s.hand_off_room(&s.state()), s))
            .filter(|(room, _)| *room > 0)
            .max_by_key(|(room, _)| *room)
            .map(|(_, s)| Arc::clone(s))?;
        session.reserve().then_some(session)
    }

    /// The live session `id`, if it is on this replica.
    pub fn get(&self, id: Uuid) -> Option<Arc<Session>> {
        self.read().get(&id).cloned()
    }

    /// The session holding a task's lease, if it is on this replica.
    pub fn holder_of(&self, task_id: Uuid) -> Option<Arc<Session>> {
        self.read().values().find(|s| s.holds(task_id)).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, Arc<Session>>> {
        self.sessions.read().expect("sessions lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Arc<Session>>> {
        self.sessions.write().expect("sessions lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn session(slots: u32) -> Session {
        prefetching_session(slots, 0).0
    }

    /// A session and the claim time that sizes its window.
    fn prefetching_session(slots: u32, max_prefetch: u32) -> (Session, Arc<ClaimTime>) {
        session_serving(slots, max_prefetch, &[])
    }

    /// A session of `task_types` and the claim time that sizes its window.
    fn session_serving(
        slots: u32,
        max_prefetch: u32,
        task_types: &[&str],
    ) -> (Session, Arc<ClaimTime>) {
        let (outbound, _) = tokio::sync::mpsc::channel(1);
        let claim_time = Arc::new(ClaimTime::default());
        let session = Session::new(NewSession {
            agent_id: Uuid::now_v7(),
            agent_name: "test".into(),
            domains: vec![],
            task_types: task_types.iter().map(ToString::to_string).collect(),
            labels: BTreeMap::new(),
            feature_flags: BTreeMap::new(),
            handler_versions: BTreeMap::new(),
            max_concurrency: slots,
            max_prefetch,
            claim_time: claim_time.clone(),
            outbound,
        });
        (session, claim_time)
    }

    #[test]
    fn a_slow_handlers_slot_is_claimed_for_a_claim_before_it_is_due_to_end() {
        let (session, claim_time) = prefetching_session(2, 8);
        claim_time.took(Duration::from_millis(5));
        let task = Uuid::now_v7();
        session.place(task, 1, MINUTE);
        assert!(session.untrack_attempt(task, 1, Some(Duration::from_millis(50))));
        assert_eq!(session.next_reclaim(), None, "nothing runs");

        let placed = Instant::now();
        let [first, second] = [Uuid::now_v7(), Uuid::now_v7()];
        session.place(first, 1, MINUTE);
        session.place(second, 1, MINUTE);
        let after_placing = Instant::now();
        assert_eq!(session.free_slots(), 0, "both slots run, no window");
        let due = session.next_reclaim().expect("a slot comes due");
        let lead = Duration::from_millis(45);
        assert!(due >= placed + lead && due <= after_placing + lead);

        std::thread::sleep(lead + Duration::from_millis(1));
        assert_eq!(session.free_slots(), 2, "both slots are due within a claim");
        assert_eq!(session.next_reclaim(), None);
        let [third, fourth] = [Uuid::now_v7(), Uuid::now_v7()];
        session.place(third, 1, MINUTE);
        session.place(fourth, 1, MINUTE);
        assert_eq!(
            session.status().running,
            2,
            "the next tasks wait their turn"
        );
        assert_eq!(session.free_slots(), 0, "one task claimed ahead per slot");
        assert!(session.untrack_attempt(first, 1, Some(Duration::from_millis(50))));
        assert_eq!(session.status().running, 2, "the next one starts at once");
        assert_eq!(session.free_slots(), 0);
    }

    #[test]
    fn queued_assignments_start_in_order_as_running_ones_are_answered() {
        let (session, claim_time) = prefetching_session(1, 8);
        assert_eq!(session.free_slots(), 1, "no window before any timing");
        claim_time.took(Duration::from_millis(1));
        let task = Uuid::now_v7();
        session.place(task, 1, MINUTE);
        assert!(session.untrack_attempt(task, 1, Some(Duration::from_micros(100))));
        assert_eq!(session.free_slots(), 9, "fast handlers: the whole window");

        let [first, second, third] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        for task in [first, second, third] {
            assert_eq!(session.reserve_free(1), 1);
            session.place(task, 1, Duration::ZERO);
        }
        assert_eq!(session.status().running, 1, "one slot: one runs, two wait");
        let later = Instant::now() + MINUTE;
        assert_eq!(
            session.overdue(later),
            vec![(first, 1)],
            "only a started attempt can overrun its timeout"
        );
        assert!(session.untrack_attempt(first, 1, Some(Duration::from_micros(100))));
        assert_eq!(session.overdue(later), vec![(second, 1)]);
        // A queued one that is cancelled leaves the queue; the next waits on.
        assert!(session.untrack(third));
        assert_eq!(session.overdue(later), vec![(second, 1)]);
        assert_eq!(session.status().running, 1);
    }

    #[test]
    fn hand_offs_fill_the_window_too() {
        let (session, claim_time) = prefetching_session(1, 2);
        claim_time.took(Duration::from_millis(1));
        let task = Uuid::now_v7();
        session.place(task, 1, MINUTE);
        assert!(session.untrack_attempt(task, 1, Some(Duration::from_micros(100))));
        session.caught_up(session.work_announced());
        for _ in 0..3 {
            assert!(session.reserve(), "one slot and a window of two");
        }
        assert!(!session.reserve(), "no room left");
    }

    #[test]
    fn a_stale_attempts_result_leaves_the_current_attempt_tracked() {
        let session = session(2);
        let task = Uuid::now_v7();
        // Attempt 1's lease expired and the same session leased attempt 2.
        assert_eq!(session.reserve_free(10), 2);
        session.place(task, 2, MINUTE);
        session.unreserve(1);
        assert!(!session.untrack_attempt(task, 1, None));
        assert!(session.holds(task));
        assert_eq!(session.free_slots(), 1);
        assert!(session.untrack_attempt(task, 2, None));
        assert!(!session.holds(task));
        assert_eq!(session.free_slots(), 2);
    }

    #[test]
    fn only_a_caught_up_session_takes_hand_offs_and_reserved_slots_are_not_claimed() {
        let session = session(2);
        assert!(
            !session.reserve(),
            "a session that never claimed is not caught up"
        );
        let before_claim = session.work_announced();
        session.caught_up(before_claim);
        assert!(session.reserve());
        assert_eq!(session.free_slots(), 1, "the dispatcher claims around it");

        // Work announced while a claim ran: that claim's shortness says
        // nothing about the new work, so the session is not caught up.
        let before_claim = session.work_announced();
        session.announce_work();
        session.caught_up(before_claim);
        assert!(!session.is_caught_up());
        assert!(!session.reserve());
        session.caught_up(session.work_announced());
        assert!(session.reserve());
        assert!(!session.reserve(), "no free slot left");

        let task = Uuid::now_v7();
        session.place(task, 1, MINUTE);
        assert!(session.holds(task));
        session.unreserve(1);
        assert_eq!(session.free_slots(), 1);
        session.drain();
        assert!(!session.reserve(), "a draining session takes nothing new");
    }

    #[test]
    fn a_hand_off_passes_over_a_session_busy_claiming_for_a_caught_up_one() {
        let sessions = Sessions::default();
        let claiming = Arc::new(session_serving(4, 0, &["a"]).0);
        let idle = Arc::new(session_serving(2, 0, &["a"]).0);
        idle.caught_up(idle.work_announced());
        sessions.insert(claiming.clone());
        sessions.insert(idle.clone());

        let chosen = sessions
            .reserve_for("a")
            .expect("the caught-up session has room, though less");
        assert!(Arc::ptr_eq(&chosen, &idle));
        assert_eq!((idle.free_slots(), claiming.free_slots()), (1, 4));
        assert!(sessions.reserve_for("b").is_none(), "nobody serves b");

        // Caught up, the session with the most room takes the next one.
        claiming.caught_up(claiming.work_announced());
        let chosen = sessions.reserve_for("a").expect("both have room");
        assert!(Arc::ptr_eq(&chosen, &claiming));
        assert_eq!(claiming.free_slots(), 3);
    }
}
