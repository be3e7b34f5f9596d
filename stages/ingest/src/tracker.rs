//! The in-flight tracker of the ingest stage: pure bookkeeping, no I/O, unit-tested.
//!
//! Every Kafka message read is tracked from the moment it is read until publish confirms
//! that its outcome (result or DLQ record) is in Kafka. Invariants:
//! - the commit point of a partition is the smallest offset still tracked, or one past
//!   the highest offset seen when nothing is: an offset is committed only when the
//!   outcomes of it and of every earlier message of its partition are in Kafka
//!   (completions arrive in any order; offsets need not be consecutive);
//! - at most `window(conn)` jobs are dispatched to a transfer worker at once; more wait
//!   in a per-connection FIFO backlog here, and a partition whose backlog reaches
//!   `partition_backlog` is paused, as are all partitions when `pod` messages, or
//!   `pod_bytes` of their text, are tracked (with hysteresis: resumed below half the
//!   backlog bound, or half the pod bounds, so a resume has time to fetch before the
//!   work runs out); the byte bound is what holds memory when the messages are large
//!   (a DLQ record keeps a malformed value of up to tens of MiB until publish acks it);
//! - a message is known by its (partition, offset), whatever ingest generation read it:
//!   publish's ack of a result that an earlier ingest's job produced completes the same
//!   message here. An ack or [`Tracker::learn_done`] for an offset not yet read is kept
//!   (`done_ahead`) and the message is skipped when it is read: a restarted ingest does not
//!   run again what is already done (its worker's `finished` too is matched by offset and
//!   connection); acks for messages read and completed already are ignored;
//! - poison: the jobs running when a worker died become suspects; while a connection has
//!   suspects, it runs one job at a time, suspects first, so a crash during a suspect's
//!   solo run is its own; a job that was running at `poison_limit` crashes becomes a
//!   failure result (`UNKNOWN_ERROR`) instead of being re-sent forever, and a job that
//!   merely ran beside a poison one is not blamed for more than its first crash.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ftp_pooler_channel::{Job, MessageId, OffsetSet, ToPublish};
use ftp_pooler_contract::{ErrorCode, TransferResult};

/// Bounds of in-flight work.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Jobs dispatched at once per transfer worker (by connection id).
    pub window: HashMap<String, usize>,
    /// Used for a connection missing from `window`.
    pub default_window: usize,
    /// Messages tracked at once by this ingest (all partitions).
    pub pod: usize,
    /// Backlogged messages of one partition before it is paused.
    pub partition_backlog: usize,
    /// Bytes of tracked text (paths, ids, the values of DLQ records) before every
    /// partition is paused.
    pub pod_bytes: usize,
}

/// Something to send as a result of a tracker change.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A job for the transfer worker of this connection.
    Transfer(String, Job),
    /// A result or DLQ record for publish.
    Publish(ToPublish),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a window slot of its connection.
    Backlog,
    /// Handed to its transfer worker (or to publish, for direct items).
    Sent,
    /// The worker said it began.
    Started,
    /// The worker finished and handed the result to publish: out of the window (the
    /// worker's slot is free), still tracked until publish acks it.
    Finished,
}

#[derive(Debug)]
enum Kind {
    Job { conn: String, job: Job },
    Direct(ToPublish),
}

impl Kind {
    /// The memory an entry holds, roughly: its variable-length text plus a fixed
    /// overhead. Counted against [`Limits::pod_bytes`].
    fn bytes(&self) -> usize {
        let text = match self {
            Kind::Job { conn, job } => return job_bytes(conn, job),
            Kind::Direct(ToPublish::Result { result: r, .. }) => {
                r.task_id.len()
                    + r.src_id.len()
                    + r.src_path.len()
                    + r.dst_id.len()
                    + r.dst_path.len()
                    + r.error_message.as_ref().map_or(0, String::len)
            }
            Kind::Direct(ToPublish::Dlq { record, key, .. }) => {
                record.original_value.as_ref().map_or(0, String::len)
                    + record.original_key.as_ref().map_or(0, String::len)
                    + record.error_message.len()
                    + key.as_ref().map_or(0, Vec::len)
            }
        };
        ENTRY_OVERHEAD + text
    }

    /// Swaps in `kind` (a job that became a result), keeping `bytes` in step.
    fn replace(entry: &mut Entry, kind: Kind, bytes: &mut usize) {
        *bytes = *bytes + kind.bytes() - entry.kind.bytes();
        entry.kind = kind;
    }
}

/// Fixed part of [`Kind::bytes`].
const ENTRY_OVERHEAD: usize = 256;

/// [`Kind::bytes`] of a job, without building the entry.
fn job_bytes(conn: &str, job: &Job) -> usize {
    let t = &job.task;
    let r = &job.route;
    ENTRY_OVERHEAD
        + conn.len()
        + t.task_id.len()
        + t.src_id.len()
        + t.src_path.len()
        + t.dst_id.len()
        + t.dst_path.len()
        + r.remote_id.len()
        + r.remote_path.len()
        + r.local_id.len()
        + r.local_path.len()
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    state: State,
    crashes: u32,
    suspect: bool,
}

#[derive(Debug, Default)]
struct Partition {
    entries: BTreeMap<i64, Entry>,
    max_seen: Option<i64>,
    committed: Option<i64>,
    backlog: usize,
    paused: bool,
    revoked: bool,
    /// Revoked, and its final commit failed (the group had already moved on, e.g. while
    /// the broker was down): only its done prefix is kept (`max_seen`), to skip re-reads
    /// and commit it if the partition comes back. Not committed while parked.
    parked: bool,
    /// Offsets above `max_seen` whose outcome is already in Kafka (told by publish, or
    /// found in the result topics): skipped when read.
    done_ahead: OffsetSet,
}

impl Partition {
    fn commit_point(&self) -> Option<i64> {
        match self.entries.keys().next() {
            Some(&first) => Some(first),
            None => self.max_seen.map(|m| m + 1),
        }
    }
}

#[derive(Debug, Default)]
struct Conn {
    dispatched: usize,
    backlog: VecDeque<MessageId>,
    /// Suspects waiting for their solo run (dispatched before the backlog).
    suspects: VecDeque<MessageId>,
    /// Suspect entries not yet complete: while > 0 the window is 1.
    suspects_pending: usize,
}

#[derive(Debug)]
pub struct Tracker {
    generation: u64,
    limits: Limits,
    poison_limit: u32,
    partitions: BTreeMap<i32, Partition>,
    conns: HashMap<String, Conn>,
    total: usize,
    /// Sum of the tracked entries' [`Kind::bytes`].
    bytes: usize,
    pod_paused: bool,
    skipped: u64,
}

impl Tracker {
    pub fn new(generation: u64, limits: Limits, poison_limit: u32) -> Tracker {
        Tracker {
            generation,
            limits,
            poison_limit: poison_limit.max(1),
            partitions: BTreeMap::new(),
            conns: HashMap::new(),
            total: 0,
            bytes: 0,
            pod_paused: false,
            skipped: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Messages tracked (read, outcome not yet confirmed).
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn window(&self, conn: &str) -> usize {
        if self.conns.get(conn).is_some_and(|c| c.suspects_pending > 0) {
            return 1;
        }
        self.limits
            .window
            .get(conn)
            .copied()
            .unwrap_or(self.limits.default_window)
            .max(1)
    }

    /// Starts tracking a message; false when it is already tracked or already done.
    fn admit(&mut self, id: MessageId) -> bool {
        let p = self.partitions.entry(id.partition).or_default();
        if p.revoked || p.entries.contains_key(&id.offset) {
            return false;
        }
        if matches!(p.max_seen, Some(m) if id.offset <= m) {
            // Seen and completed already (a re-read after a seek): nothing to do.
            return false;
        }
        p.max_seen = Some(id.offset);
        if !p.done_ahead.is_empty() {
            let done = p.done_ahead.contains(id.offset);
            p.done_ahead.remove_below(id.offset + 1);
            if done {
                // Its outcome is in Kafka already (an earlier ingest's work).
                self.skipped += 1;
                return false;
            }
        }
        true
    }

    /// The partition to keep facts about (what is done) in: one that is not assigned here
    /// (yet, or any more) is kept as revoked, so nothing of it is admitted, paused or
    /// committed before it is assigned.
    fn facts_of(&mut self, partition: i32) -> &mut Partition {
        self.partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                revoked: true,
                ..Partition::default()
            })
    }

    /// Messages skipped when read because their outcome was already in Kafka.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The outcomes of these offsets of `partition` are in Kafka (publish says so after a
    /// restart of this stage, or they were found in the result topics): tracked ones are
    /// complete (as by [`Tracker::ack`]), ones not read yet will be skipped.
    pub fn learn_done(&mut self, partition: i32, done: &OffsetSet) -> Vec<Out> {
        let p = self.facts_of(partition);
        let tracked: Vec<i64> = done
            .ranges()
            .flat_map(|(a, b)| p.entries.range(a..=b).map(|(&o, _)| o))
            .collect();
        let above = p.max_seen.map_or(i64::MIN, |m| m + 1);
        for (a, b) in done.ranges() {
            p.done_ahead.insert_range(a.max(above), b);
        }
        // Every known-done entry goes before any slot is refilled: a refill must not
        // dispatch one of them.
        let mut conns: Vec<String> = tracked
            .into_iter()
            .filter_map(|offset| self.remove(partition, offset))
            .collect();
        conns.sort();
        conns.dedup();
        conns.iter().flat_map(|c| self.refill(c)).collect()
    }

    /// Per partition: the offsets above its commit point whose outcome is in Kafka (what
    /// was acked out of order, and what is known done ahead). Told to publish when it
    /// (re)connects, so it can tell a restarted ingest.
    pub fn done_above_commit(&self) -> BTreeMap<i32, OffsetSet> {
        let mut all = BTreeMap::new();
        for (&n, p) in &self.partitions {
            let mut done = p.done_ahead.clone();
            if let (Some(&first), Some(max)) = (p.entries.keys().next(), p.max_seen) {
                let mut prev = first;
                for &o in p.entries.keys().skip(1) {
                    done.insert_range(prev + 1, o - 1);
                    prev = o;
                }
                done.insert_range(prev + 1, max);
            }
            if !done.is_empty() {
                all.insert(n, done);
            }
        }
        all
    }

    /// A valid task for the transfer worker of `conn`.
    pub fn track_job(&mut self, conn: &str, job: Job) -> Vec<Out> {
        let id = job.id;
        if id.generation != self.generation || !self.admit(id) {
            return Vec::new();
        }
        self.total += 1;
        self.bytes += job_bytes(conn, &job);
        let window = self.window(conn);
        let c = self.conns.entry(conn.to_string()).or_default();
        let p = self.partitions.get_mut(&id.partition).expect("admitted");
        if c.backlog.is_empty() && c.dispatched < window {
            c.dispatched += 1;
            p.entries.insert(
                id.offset,
                Entry {
                    kind: Kind::Job {
                        conn: conn.to_string(),
                        job: job.clone(),
                    },
                    state: State::Sent,
                    crashes: 0,
                    suspect: false,
                },
            );
            vec![Out::Transfer(conn.to_string(), job)]
        } else {
            c.backlog.push_back(id);
            p.backlog += 1;
            p.entries.insert(
                id.offset,
                Entry {
                    kind: Kind::Job {
                        conn: conn.to_string(),
                        job,
                    },
                    state: State::Backlog,
                    crashes: 0,
                    suspect: false,
                },
            );
            Vec::new()
        }
    }

    /// A result decided here (invalid task) or a DLQ record: straight to publish.
    pub fn track_direct(&mut self, item: ToPublish) -> Vec<Out> {
        let id = item.id();
        if id.generation != self.generation || !self.admit(id) {
            return Vec::new();
        }
        self.total += 1;
        let kind = Kind::Direct(item.clone());
        self.bytes += kind.bytes();
        let p = self.partitions.get_mut(&id.partition).expect("admitted");
        p.entries.insert(
            id.offset,
            Entry {
                kind,
                state: State::Sent,
                crashes: 0,
                suspect: false,
            },
        );
        vec![Out::Publish(item)]
    }

    /// The worker of `conn` began `id` (of any generation: see the module's header).
    pub fn started(&mut self, conn: &str, id: MessageId) {
        if let Some(e) = self
            .partitions
            .get_mut(&id.partition)
            .and_then(|p| p.entries.get_mut(&id.offset))
        {
            if e.state == State::Sent && matches!(&e.kind, Kind::Job { conn: c, .. } if c == conn) {
                e.state = State::Started;
            }
        }
    }

    /// The worker finished `id` and handed its result to publish: its window slot is
    /// free (the message stays tracked until publish acks it). A job that ran to the end
    /// is no longer a poison suspect. `id` may be of an earlier generation: a job the
    /// worker of `conn` was still running when this ingest re-read its message.
    pub fn finished(&mut self, conn: &str, id: MessageId) -> Vec<Out> {
        let Some(p) = self.partitions.get_mut(&id.partition) else {
            return Vec::new();
        };
        let Some(e) = p.entries.get_mut(&id.offset) else {
            return Vec::new();
        };
        let Kind::Job { conn: c, .. } = &e.kind else {
            return Vec::new();
        };
        if c != conn || !matches!(e.state, State::Sent | State::Started) {
            return Vec::new();
        }
        let conn = conn.to_string();
        e.state = State::Finished;
        let was_suspect = std::mem::replace(&mut e.suspect, false);
        if let Kind::Job { job, .. } = &mut e.kind {
            job.suspect = false;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.dispatched -= 1;
            if was_suspect {
                c.suspects_pending -= 1;
            }
        }
        self.refill(&conn)
    }

    /// Publish confirmed `id`'s outcome is in Kafka: the message is complete (whichever
    /// generation produced the outcome); one not read yet will be skipped when it is.
    pub fn ack(&mut self, id: MessageId) -> Vec<Out> {
        let p = self.facts_of(id.partition);
        if !p.entries.contains_key(&id.offset) {
            if p.max_seen.is_none_or(|m| id.offset > m) {
                p.done_ahead.insert(id.offset);
            }
            return Vec::new();
        }
        self.complete(id.partition, id.offset)
    }

    /// A tracked message is complete: forget it, free its slot.
    fn complete(&mut self, partition: i32, offset: i64) -> Vec<Out> {
        match self.remove(partition, offset) {
            Some(conn) => self.refill(&conn),
            None => Vec::new(),
        }
    }

    /// Removes a tracked message; the connection whose window it frees, if any.
    fn remove(&mut self, partition: i32, offset: i64) -> Option<String> {
        let p = self.partitions.get_mut(&partition)?;
        let entry = p.entries.remove(&offset)?;
        self.total -= 1;
        self.bytes -= entry.kind.bytes();
        debug_assert!(
            self.total > 0 || self.bytes == 0,
            "tracked bytes out of step"
        );
        if entry.suspect {
            if let Kind::Job { conn, .. } = &entry.kind {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.suspects_pending -= 1;
                }
            }
        }
        match (entry.kind, entry.state) {
            (Kind::Job { .. }, State::Finished) => None,
            (Kind::Job { conn, .. }, State::Sent | State::Started) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.dispatched -= 1;
                }
                Some(conn)
            }
            (Kind::Job { conn, .. }, State::Backlog) => {
                // Acked before it was dispatched again (an outcome of an earlier attempt).
                p.backlog -= 1;
                Some(conn)
            }
            (Kind::Direct(_), _) => None,
        }
    }

    /// Dispatches backlogged jobs of `conn` while its window has room.
    fn refill(&mut self, conn: &str) -> Vec<Out> {
        let window = self.window(conn);
        let mut out = Vec::new();
        let Some(c) = self.conns.get_mut(conn) else {
            return out;
        };
        while c.dispatched < window {
            let Some(id) = c.suspects.pop_front().or_else(|| c.backlog.pop_front()) else {
                break;
            };
            let Some(p) = self.partitions.get_mut(&id.partition) else {
                continue;
            };
            let Some(e) = p.entries.get_mut(&id.offset) else {
                continue;
            };
            if e.state != State::Backlog {
                continue;
            }
            if let Kind::Job { job, .. } = &e.kind {
                e.state = State::Sent;
                p.backlog -= 1;
                c.dispatched += 1;
                out.push(Out::Transfer(conn.to_string(), job.clone()));
            }
        }
        out
    }

    /// The transfer worker of `conn` died (its connection broke). Jobs it had started
    /// count a crash and become suspects; those at the poison limit become failure
    /// results. Everything else it had goes back to the front of the backlog, and the
    /// connection runs one job at a time, suspects first, until no suspect is left.
    pub fn transfer_lost(&mut self, conn: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let mut requeue: Vec<MessageId> = Vec::new();
        let mut suspects: Vec<MessageId> = Vec::new();
        let mut new_suspects = 0usize;
        let mut cleared_suspects = 0usize;
        for p in self.partitions.values_mut() {
            for e in p.entries.values_mut() {
                let Kind::Job { conn: c, job } = &e.kind else {
                    continue;
                };
                if c != conn || e.state == State::Backlog {
                    continue;
                }
                let id = job.id;
                // Every job the worker had (queued or running) may be what killed it: a
                // crash counts against each, and each then runs alone (see `refill`).
                if matches!(e.state, State::Started | State::Sent) {
                    e.crashes += 1;
                    if !e.suspect {
                        e.suspect = true;
                        new_suspects += 1;
                    }
                    if e.crashes >= self.poison_limit {
                        let result = TransferResult::failure(
                            &job.task,
                            ErrorCode::UnknownError,
                            format!(
                                "the transfer worker of {conn:?} died {} times while running this task; given up",
                                e.crashes
                            ),
                            0,
                            e.crashes,
                        );
                        let item = ToPublish::Result {
                            id,
                            result,
                            direction: Some(job.route.direction),
                            enqueued_at: job.enqueued_at,
                        };
                        out.push(Out::Publish(item.clone()));
                        Kind::replace(e, Kind::Direct(item), &mut self.bytes);
                        e.state = State::Sent;
                        e.suspect = false;
                        cleared_suspects += 1;
                        continue;
                    }
                }
                e.state = State::Backlog;
                p.backlog += 1;
                if e.suspect {
                    if let Kind::Job { job, .. } = &mut e.kind {
                        job.suspect = true;
                    }
                    suspects.push(id);
                } else {
                    requeue.push(id);
                }
            }
        }
        let c = self.conns.entry(conn.to_string()).or_default();
        c.dispatched = 0;
        c.suspects_pending = c.suspects_pending + new_suspects - cleared_suspects;
        let rest: Vec<MessageId> = c.suspects.drain(..).collect();
        c.suspects = suspects.into_iter().chain(rest).collect();
        for id in requeue.into_iter().rev() {
            c.backlog.push_front(id);
        }
        out.extend(self.refill(conn));
        out
    }

    /// New per-connection windows (a reload changed the budget).
    pub fn set_windows(&mut self, window: HashMap<String, usize>) {
        self.limits.window = window;
    }

    /// `conn` was removed by a reload and its worker has stopped: every job of it still
    /// tracked never ran to a result here and becomes an INVALID_CONFIG failure.
    pub fn connection_removed(&mut self, conn: &str) -> Vec<Out> {
        let mut out = Vec::new();
        for p in self.partitions.values_mut() {
            for e in p.entries.values_mut() {
                let Kind::Job { conn: c, job } = &e.kind else {
                    continue;
                };
                // Finished ones: their results are on the way to Kafka.
                if c != conn || e.state == State::Finished {
                    continue;
                }
                let result = TransferResult::failure(
                    &job.task,
                    ErrorCode::InvalidConfig,
                    format!("connection {conn:?} was removed from the connections file before this task ran"),
                    0,
                    0,
                );
                let item = ToPublish::Result {
                    id: job.id,
                    result,
                    direction: Some(job.route.direction),
                    enqueued_at: job.enqueued_at,
                };
                if e.state == State::Backlog {
                    p.backlog -= 1;
                }
                out.push(Out::Publish(item.clone()));
                Kind::replace(e, Kind::Direct(item), &mut self.bytes);
                e.state = State::Sent;
                e.suspect = false;
            }
        }
        self.conns.remove(conn);
        out
    }

    /// Jobs the worker of `conn` must have: sent or started, not yet confirmed.
    pub fn pending_for_transfer(&self, conn: &str) -> Vec<Job> {
        let mut jobs = Vec::new();
        for p in self.partitions.values() {
            for e in p.entries.values() {
                if let Kind::Job { conn: c, job } = &e.kind {
                    if c == conn && matches!(e.state, State::Sent | State::Started) {
                        jobs.push(job.clone());
                    }
                }
            }
        }
        jobs
    }

    /// Results and DLQ records publish must have.
    pub fn pending_for_publish(&self) -> Vec<ToPublish> {
        let mut items = Vec::new();
        for p in self.partitions.values() {
            for e in p.entries.values() {
                if let Kind::Direct(item) = &e.kind {
                    items.push(item.clone());
                }
            }
        }
        items
    }

    /// Partitions whose commit point moved past what was last committed.
    pub fn commit_points(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .filter_map(|(&n, p)| {
                let point = p.commit_point().filter(|_| !p.parked)?;
                (p.committed.is_none_or(|c| point > c)).then_some((n, point))
            })
            .collect()
    }

    /// The commit point of one partition (None: nothing read from it).
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.commit_point()
    }

    /// Partitions currently paused.
    pub fn paused(&self) -> usize {
        self.partitions.values().filter(|p| p.paused).count()
    }

    /// Records a successful commit.
    pub fn committed(&mut self, points: &BTreeMap<i32, i64>) {
        for (n, &point) in points {
            if let Some(p) = self.partitions.get_mut(n) {
                p.committed = Some(p.committed.map_or(point, |c| c.max(point)));
            }
        }
    }

    /// The partitions are being revoked: no new message of theirs is admitted. What was
    /// already read (dispatched or backlogged) keeps going, so the revoke can wait for it
    /// and commit past it: dropping the backlog would stop the commit point at its first
    /// message and make the next owner redo everything completed after it.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for n in partitions {
            if let Some(p) = self.partitions.get_mut(n) {
                p.revoked = true;
            }
        }
    }

    /// Messages of these partitions still waiting for their outcome.
    pub fn in_flight(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|n| self.partitions.get(n))
            .map(|p| p.entries.len())
            .sum()
    }

    /// Stops tracking revoked partitions (after their final commit); frees their slots.
    /// `park`: the final commit failed, so keep the contiguous done prefix of each (see
    /// [`Partition::parked`]): if the partition is assigned here again, messages of that
    /// prefix are not run again and the prefix is committed under the new membership.
    /// Every offset in it has its outcome in Kafka, so committing it later is safe.
    pub fn forget(&mut self, partitions: &[i32], park: bool) -> Vec<Out> {
        let mut touched = Vec::new();
        for n in partitions {
            if let Some(p) = self.partitions.remove(n) {
                if park {
                    if let Some(point) = p.commit_point() {
                        self.partitions.insert(
                            *n,
                            Partition {
                                max_seen: Some(point - 1),
                                committed: p.committed,
                                revoked: true,
                                parked: true,
                                done_ahead: p.done_ahead.clone(),
                                ..Partition::default()
                            },
                        );
                    }
                }
                for e in p.entries.values() {
                    self.total -= 1;
                    self.bytes -= e.kind.bytes();
                    if let Kind::Job { conn, .. } = &e.kind {
                        if let Some(c) = self.conns.get_mut(conn) {
                            if e.suspect {
                                c.suspects_pending -= 1;
                            }
                            if matches!(e.state, State::Sent | State::Started) {
                                c.dispatched -= 1;
                            }
                        }
                        touched.push(conn.clone());
                    }
                }
            }
        }
        touched.sort();
        touched.dedup();
        touched.iter().flat_map(|c| self.refill(c)).collect()
    }

    /// Which partitions to pause and which to resume now (flow control).
    pub fn update_pauses(&mut self) -> (Vec<i32>, Vec<i32>) {
        let pod = self.limits.pod.max(1);
        let pod_bytes = self.limits.pod_bytes.max(1);
        if self.pod_paused {
            self.pod_paused = self.total >= pod / 2 || self.bytes >= pod_bytes / 2;
        } else {
            self.pod_paused = self.total >= pod || self.bytes >= pod_bytes;
        }
        let hi = self.limits.partition_backlog.max(1);
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for (&n, p) in self.partitions.iter_mut() {
            let own = if p.paused {
                p.backlog >= hi / 2
            } else {
                p.backlog >= hi
            };
            let want = (self.pod_paused || own) && !p.revoked;
            if want != p.paused {
                p.paused = want;
                if want {
                    pause.push(n);
                } else {
                    resume.push(n);
                }
            }
        }
        (pause, resume)
    }

    /// Marks partitions as newly assigned (not paused, not revoked).
    pub fn assigned(&mut self, partitions: &[i32]) {
        for n in partitions {
            let p = self.partitions.entry(*n).or_default();
            p.revoked = false;
            p.paused = false;
            p.parked = false;
        }
    }
}

#[cfg(test)]
mod tests;
