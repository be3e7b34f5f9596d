//! The ledger: which task messages publish has delivered an outcome for, as facts about
//! the Kafka message (partition, offset of the task topic), whichever ingest generation
//! read it. Pure bookkeeping, unit-tested.
//!
//! Why: a killed ingest leaves its partitions' commit points at their oldest unfinished
//! message, and the next ingest reads everything after it again. Publish outlives an
//! ingest crash, so it tells the next ingest what it delivered (`FromPublish::Done`), and
//! that ingest skips those messages instead of running them a second time.
//! Invariants:
//! - an offset enters when its outcome's delivery report came back (acks=all), when
//!   ingest says it is done (ingest tells each publish that connects, so a restarted
//!   publish knows again), or when publish finds it in the result topics at its start
//!   (what a killed publish had delivered without knowing);
//! - an item whose offset is in the ledger is not sent again (it would be a second
//!   result of the same task message): it is acked as delivered;
//! - it leaves when ingest reports a commit point past it: a committed offset is never
//!   read again by anyone, so nobody needs the fact;
//! - memory: offsets are kept as ranges ([`OffsetSet`]), so what is kept is about the
//!   holes (unfinished messages) above the commit points, not the count of messages.
//!   Facts about a partition that moved to another pod stay until it comes back and is
//!   committed past them (at most what was done above its commit point at the move).

use std::collections::BTreeMap;

use ftp_pooler_channel::{MessageId, OffsetSet};

#[derive(Debug, Default)]
pub struct Ledger {
    done: BTreeMap<i32, OffsetSet>,
    /// Per partition, the highest commit point reported (facts below it are dropped, and
    /// not taken again).
    committed: BTreeMap<i32, i64>,
}

impl Ledger {
    /// The outcome of `id`'s message is in Kafka.
    pub fn delivered(&mut self, id: MessageId) {
        if self
            .committed
            .get(&id.partition)
            .is_some_and(|&c| id.offset < c)
        {
            return;
        }
        self.done.entry(id.partition).or_default().insert(id.offset);
    }

    /// What ingest knows done (sent when it connects).
    pub fn merge(&mut self, done: &BTreeMap<i32, OffsetSet>) {
        for (&p, set) in done {
            let mine = self.done.entry(p).or_default();
            mine.extend(set);
            if let Some(&c) = self.committed.get(&p) {
                mine.remove_below(c);
            }
        }
        self.done.retain(|_, s| !s.is_empty());
    }

    /// The group committed these points.
    pub fn committed(&mut self, points: &BTreeMap<i32, i64>) {
        for (&p, &point) in points {
            let c = self.committed.entry(p).or_insert(point);
            *c = (*c).max(point);
            if let Some(set) = self.done.get_mut(&p) {
                set.remove_below(*c);
                if set.is_empty() {
                    self.done.remove(&p);
                }
            }
        }
    }

    /// Whether the outcome of `id`'s message is known to be in Kafka already.
    pub fn contains(&self, id: MessageId) -> bool {
        self.done
            .get(&id.partition)
            .is_some_and(|s| s.contains(id.offset))
    }

    /// Everything known done, for an ingest that connects.
    pub fn snapshot(&self) -> BTreeMap<i32, OffsetSet> {
        self.done.clone()
    }

    /// Offsets known done (for the stage's report).
    pub fn count(&self) -> u64 {
        self.done.values().map(OffsetSet::count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u64, partition: i32, offset: i64) -> MessageId {
        MessageId {
            generation,
            partition,
            offset,
        }
    }

    fn ranges(l: &Ledger, p: i32) -> Vec<(i64, i64)> {
        l.snapshot()
            .get(&p)
            .map(|s| s.ranges().collect())
            .unwrap_or_default()
    }

    #[test]
    fn deliveries_of_any_generation_are_kept_until_committed_past() {
        let mut l = Ledger::default();
        for (g, o) in [(1, 5), (1, 6), (2, 8), (2, 9)] {
            l.delivered(id(g, 0, o));
        }
        l.delivered(id(1, 1, 0));
        assert_eq!(ranges(&l, 0), vec![(5, 6), (8, 9)]);
        l.committed(&BTreeMap::from([(0, 7)]));
        assert_eq!(ranges(&l, 0), vec![(8, 9)]);
        // A late delivery below the commit point is not kept; an older point is ignored.
        l.delivered(id(3, 0, 4));
        l.committed(&BTreeMap::from([(0, 2)]));
        assert_eq!(ranges(&l, 0), vec![(8, 9)]);
        l.committed(&BTreeMap::from([(0, 10), (1, 1)]));
        assert!(l.snapshot().is_empty());
        assert_eq!(l.count(), 0);
    }

    #[test]
    fn what_ingest_knows_is_merged() {
        let mut l = Ledger::default();
        l.committed(&BTreeMap::from([(0, 3)]));
        l.delivered(id(1, 0, 3));
        let told: OffsetSet = [1, 2, 4, 5].into_iter().collect();
        l.merge(&BTreeMap::from([(0, told)]));
        assert_eq!(ranges(&l, 0), vec![(3, 5)]);
        assert_eq!(l.count(), 3);
        assert!(l.contains(id(9, 0, 4)) && !l.contains(id(1, 0, 2)) && !l.contains(id(1, 1, 4)));
    }
}
