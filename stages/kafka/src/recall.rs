//! Recall (issue 18): on partition assignment, learn from the result topics themselves
//! which task offsets at or above the group's commit point are already done.
//!
//! After a whole-pod kill -9, a rebalance or a broker restart, a partition's committed
//! offset is its oldest unfinished task, and everything published after it would be run
//! again. Publish names the task message on every record it writes (headers:
//! [`ftp_pooler_contract::answers`]), so the new owner scans the tail of the result,
//! failure and DLQ topics for records answering its partitions and hands those offsets to
//! the ingest tracker's `learn_done` before it handles any message of them; publish, at
//! its start, learns the same way what its killed predecessor had delivered
//! ([`read::recall_recent`]).
//!
//! This module is the pure core: where a scan starts and stops, which records are facts,
//! and the bounds; [`read`] is the I/O shell (its own short-lived clients, never
//! subscribed, never committing). Invariants:
//! - a fact is only ever a record that is in Kafka and answers (topic, group, partition,
//!   offset) of ours: a missed record costs a duplicate, never a lost task;
//! - a result of the task at offset `o` is written after that task was appended, so its
//!   timestamp is at least the timestamp of the task at the commit point, less the
//!   clocks' disagreement ([`CLOCK_MARGIN`]); a result partition is read from the
//!   broker's end offset to the end, then backwards in chunks, until the lowest record of
//!   a range is older than that ([`Scan`]);
//! - the scan is bounded ([`MAX_RECORDS`], [`MAX_TIME`]); a bounded scan says so.
//!
//! Where Tansu 0.6.0 differs from Apache Kafka (docs/NOTES.md, "Kafka (Tansu)"):
//! - its end offset (`ListOffsets` latest, which librdkafka's watermarks use too) can be
//!   far too low: 1 for a partition holding 20 records produced in one batch. So no end
//!   offset is trusted: each scan first reads from it to the end of the partition as the
//!   fetches find it (`enable.partition.eof`); Kafka's exact answer makes that read empty;
//! - `offsets_for_times` is wrong both ways (a timestamp before every record answers the
//!   end offset, one in the future answers 0; Kafka answers the first offset at or after
//!   the time, and the end past the last record). The answer is used only as a hint, a
//!   chunk boundary checked like any other: a right answer (Kafka) saves reading up to one
//!   chunk; Tansu's end offset costs one extra one-record read; Tansu's 0 nothing;
//! - commit metadata is dropped, so no scan position is kept there: each scan starts from
//!   the end of the result partitions;
//! - timestamps and headers are stored and returned as sent (what the scan rests on).

pub mod read;

use std::collections::BTreeMap;
use std::time::Duration;

use ftp_pooler_channel::OffsetSet;
use ftp_pooler_contract::Answers;

/// How far a result's timestamp may be behind its task's: the producers of tasks and the
/// service may run on hosts whose clocks disagree (NTP keeps them within a second; a
/// minute is many times that). Each minute of margin costs reading a minute of results.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(60);
/// Records read per chunk of a result partition: about one fetch of small results
/// (librdkafka's `max.partition.fetch.bytes`, 1 MiB, holds about 2,500 of them).
pub const CHUNK: i64 = 2_000;
/// Records read in one recall, at most. Reading one costs microseconds, redoing a task
/// milliseconds to minutes, so the bound is far above a normal tail (thousands of
/// results): it is there for a topic the margin does not cut (a clock far behind).
pub const MAX_RECORDS: u64 = 1_000_000;
/// Time one recall may take, at most: it holds the consumer thread in the rebalance
/// callback (below `max.poll.interval.ms`, 300 s by default), and past it the tasks it
/// would have skipped are cheaper to run again than to wait for.
pub const MAX_TIME: Duration = Duration::from_secs(20);

/// One assigned task partition, as found at assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStart {
    pub partition: i32,
    /// Where reading resumes: the committed offset (or the log start without one).
    pub from: i64,
    /// The timestamp (ms) of the first task message at or after `from`.
    pub timestamp_ms: i64,
}

/// Which records are facts: answers to our topic and group, for an assigned partition,
/// at or above its `from`, written no earlier than its task's timestamp less the margin
/// (an older one answers a topic of the same name that was deleted and made again).
#[derive(Debug, Clone)]
pub struct Wanted {
    pub task_topic: String,
    pub group: String,
    starts: BTreeMap<i32, TaskStart>,
    margin_ms: i64,
}

impl Wanted {
    pub fn new(task_topic: &str, group: &str, starts: &[TaskStart], margin: Duration) -> Wanted {
        Wanted {
            task_topic: task_topic.to_string(),
            group: group.to_string(),
            starts: starts.iter().map(|s| (s.partition, *s)).collect(),
            margin_ms: margin.as_millis() as i64,
        }
    }

    /// The timestamp (ms) from which result records must be read: the oldest task
    /// timestamp less the margin. None: nothing to recall (no partition has unread tasks).
    pub fn read_from_ms(&self) -> Option<i64> {
        self.starts
            .values()
            .map(|s| s.timestamp_ms.saturating_sub(self.margin_ms))
            .min()
    }

    /// The (partition, offset) a record is a fact about, if it is one.
    pub fn fact(&self, answers: &Answers, record_ms: Option<i64>) -> Option<(i32, i64)> {
        if answers.topic != self.task_topic || answers.group != self.group {
            return None;
        }
        let start = self.starts.get(&answers.partition)?;
        let recent = record_ms.is_none_or(|t| t >= start.timestamp_ms - self.margin_ms);
        (answers.offset >= start.from && recent).then_some((answers.partition, answers.offset))
    }
}

/// The facts found, by task partition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts(pub BTreeMap<i32, OffsetSet>);

impl Facts {
    pub fn add(&mut self, (partition, offset): (i32, i64)) {
        self.0.entry(partition).or_default().insert(offset);
    }

    pub fn extend(&mut self, other: Facts) {
        for (p, set) in other.0 {
            self.0.entry(p).or_default().extend(&set);
        }
    }

    /// Distinct task offsets known done.
    pub fn count(&self) -> u64 {
        self.0.values().map(OffsetSet::count).sum()
    }
}

/// The end of a range that runs to the end of the partition (see [`Scan`]).
pub const TO_THE_END: i64 = i64::MAX;

/// The scan of one result partition: which range to read next, and when to stop.
///
/// First `[end_hint, TO_THE_END)`: from the broker's end offset to the end of the
/// partition as the fetches find it (Tansu's end offset can be far too low: see the
/// module header). Then backwards from `end_hint` in chunks, until the lowest record of a
/// range is older than `read_from_ms`, or the log start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    low: i64,
    /// Everything from `unread_below` to the end has been read (once `forward_read`).
    unread_below: i64,
    forward_read: bool,
    read_from_ms: i64,
    /// The broker's answer to "first offset at or after `read_from_ms`" (see the module
    /// header: a hint, checked like any chunk boundary).
    hint: Option<i64>,
    done: bool,
}

impl Scan {
    /// `low`: the partition's log start; `end_hint`: its end offset as the broker says.
    pub fn new(low: i64, end_hint: i64, read_from_ms: i64, hint: Option<i64>) -> Scan {
        Scan {
            low,
            unread_below: end_hint.max(low),
            forward_read: false,
            read_from_ms,
            hint,
            done: false,
        }
    }

    /// The next range `[first, end)` to read (`end` may be [`TO_THE_END`]), None when the
    /// scan is over. A chunk containing the record just before the hint ends there, so a
    /// right hint stops the scan exactly at the first record at or after the time.
    pub fn next_range(&self) -> Option<(i64, i64)> {
        if self.done {
            return None;
        }
        let end = self.unread_below;
        if !self.forward_read {
            return Some((end, TO_THE_END));
        }
        let mut first = (end - CHUNK).max(self.low);
        if let Some(cut) = self.hint.map(|h| h - 1) {
            if cut >= first && cut < end {
                first = cut;
            }
        }
        Some((first, end))
    }

    /// `range` was read; `lowest_ms` is the timestamp of its lowest record (None: it held
    /// none). The scan is over once a range starts before the time, or at the log start.
    pub fn read(&mut self, range: (i64, i64), lowest_ms: Option<i64>) {
        self.forward_read = true;
        self.unread_below = range.0.min(self.unread_below);
        if self.unread_below <= self.low || lowest_ms.is_some_and(|t| t < self.read_from_ms) {
            self.done = true;
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// What one recall did, for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Result-topic records read.
    pub records: u64,
    /// Distinct task offsets found done.
    pub facts: u64,
    pub elapsed: Duration,
    /// A bound ([`MAX_RECORDS`], [`MAX_TIME`]) stopped the scan before its end: some done
    /// tasks may run again.
    pub bounded: bool,
    /// Result-topic partitions scanned.
    pub partitions: usize,
    /// The group's committed offsets of the task partitions, as read at the start (a
    /// partition without one is left out).
    pub committed: BTreeMap<i32, i64>,
}

/// True when a recall that read `records` in `elapsed` must stop.
pub fn over_budget(records: u64, elapsed: Duration) -> bool {
    records >= MAX_RECORDS || elapsed >= MAX_TIME
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(topic: &str, group: &str, partition: i32, offset: i64) -> Answers {
        Answers {
            topic: topic.into(),
            group: group.into(),
            partition,
            offset,
        }
    }

    fn starts() -> Vec<TaskStart> {
        vec![
            TaskStart {
                partition: 0,
                from: 100,
                timestamp_ms: 1_000_000,
            },
            TaskStart {
                partition: 2,
                from: 7,
                timestamp_ms: 900_000,
            },
        ]
    }

    #[test]
    fn facts_are_our_topic_group_and_partitions_at_or_above_their_start() {
        let w = Wanted::new("tasks", "g", &starts(), Duration::from_secs(60));
        assert_eq!(w.read_from_ms(), Some(840_000));
        let t = Some(1_000_000);
        assert_eq!(w.fact(&answers("tasks", "g", 0, 100), t), Some((0, 100)));
        assert_eq!(w.fact(&answers("tasks", "g", 0, 99), t), None, "below");
        assert_eq!(w.fact(&answers("tasks", "g", 2, 7), t), Some((2, 7)));
        assert_eq!(w.fact(&answers("tasks", "g", 1, 500), t), None, "not ours");
        assert_eq!(w.fact(&answers("other", "g", 0, 500), t), None);
        assert_eq!(w.fact(&answers("tasks", "h", 0, 500), t), None);
        assert_eq!(w.fact(&answers("tasks", "", 0, 500), t), None);
        // Written within the margin before its task: a clock behind. Long before: an
        // earlier topic of the same name.
        assert_eq!(
            w.fact(&answers("tasks", "g", 0, 100), Some(940_000)),
            Some((0, 100))
        );
        assert_eq!(w.fact(&answers("tasks", "g", 0, 100), Some(939_999)), None);
        assert_eq!(w.fact(&answers("tasks", "g", 0, 100), None), Some((0, 100)));
        assert_eq!(
            Wanted::new("t", "g", &[], CLOCK_MARGIN).read_from_ms(),
            None
        );
    }

    #[test]
    fn facts_merge_into_ranges() {
        let mut f = Facts::default();
        for o in [5, 6, 7, 9] {
            f.add((1, o));
        }
        let mut g = Facts::default();
        g.add((1, 8));
        g.add((3, 0));
        f.extend(g);
        assert_eq!(f.count(), 6);
        assert_eq!(f.0[&1].ranges().collect::<Vec<_>>(), vec![(5, 9)]);
    }

    /// Runs a scan over a partition of offsets `0..end` whose record at offset `o` has
    /// timestamp `o`; returns the ranges read.
    fn run(mut s: Scan, end: i64) -> Vec<(i64, i64)> {
        let mut ranges = Vec::new();
        while let Some(r) = s.next_range() {
            ranges.push(r);
            let first = r.0.max(0);
            s.read(r, (first < r.1.min(end)).then_some(first));
            assert!(ranges.len() < 100, "{ranges:?}");
        }
        ranges
    }

    const END: i64 = TO_THE_END;

    #[test]
    fn a_scan_reads_to_the_end_then_back_in_chunks_until_a_range_starts_before_the_time() {
        // Offsets 0..10_000; results from 6_500 on are wanted; the broker's end is right.
        let ranges = run(Scan::new(0, 10_000, 6_500, None), 10_000);
        assert_eq!(ranges, vec![(10_000, END), (8_000, 10_000), (6_000, 8_000)]);
        // Everything is newer: down to the log start (here 1_000, after retention).
        let ranges = run(Scan::new(1_000, 4_500, 0, None), 4_500);
        assert_eq!(ranges, vec![(4_500, END), (2_500, 4_500), (1_000, 2_500)]);
        // Nothing newer: the forward read and one chunk.
        assert_eq!(run(Scan::new(0, 10_000, 20_000, None), 10_000).len(), 2);
        // An empty partition: the forward read only.
        assert_eq!(run(Scan::new(5, 5, 0, None), 5), vec![(5, END)]);
    }

    #[test]
    fn an_end_offset_far_too_low_costs_a_longer_forward_read_only() {
        // Tansu answered 1 for a partition of 10_000 records: the forward read finds
        // them all (its lowest record, offset 1, is older than the time: done).
        let ranges = run(Scan::new(0, 1, 6_500, None), 10_000);
        assert_eq!(ranges, vec![(1, END)]);
        // ... and, when everything is newer, the rest below it.
        let ranges = run(Scan::new(0, 1, 0, None), 10_000);
        assert_eq!(ranges, vec![(1, END), (0, 1)]);
    }

    #[test]
    fn the_brokers_time_answer_is_a_hint_checked_like_any_boundary() {
        // Kafka's answer (first offset at or after the time): the scan stops right there.
        let ranges = run(Scan::new(0, 10_000, 6_500, Some(6_500)), 10_000);
        assert_eq!(ranges, vec![(10_000, END), (8_000, 10_000), (6_499, 8_000)]);
        // Tansu's end offset for an old time: one extra one-record read, then chunks.
        let ranges = run(Scan::new(0, 10_000, 6_500, Some(10_000)), 10_000);
        assert_eq!(
            ranges,
            vec![
                (10_000, END),
                (9_999, 10_000),
                (7_999, 9_999),
                (5_999, 7_999)
            ]
        );
        // Tansu's 0 for a future time: a boundary never reached.
        let ranges = run(Scan::new(0, 10_000, 6_500, Some(0)), 10_000);
        assert_eq!(ranges, vec![(10_000, END), (8_000, 10_000), (6_000, 8_000)]);
        // An answer past the time (wrong the other way): the scan goes on past it.
        let ranges = run(Scan::new(0, 10_000, 6_500, Some(9_000)), 10_000);
        assert_eq!(
            ranges,
            vec![
                (10_000, END),
                (8_999, 10_000),
                (6_999, 8_999),
                (4_999, 6_999)
            ]
        );
    }

    #[test]
    fn a_range_without_records_does_not_stop_the_scan() {
        let mut s = Scan::new(0, 5_000, 100, None);
        s.read(s.next_range().unwrap(), None);
        let r = s.next_range().unwrap();
        assert_eq!(r, (3_000, 5_000));
        s.read(r, None);
        assert!(!s.is_done());
        assert_eq!(s.next_range(), Some((1_000, 3_000)));
    }

    #[test]
    fn the_budget_bounds_records_and_time() {
        assert!(!over_budget(0, Duration::ZERO));
        assert!(over_budget(MAX_RECORDS, Duration::ZERO));
        assert!(over_budget(0, MAX_TIME));
    }
}
