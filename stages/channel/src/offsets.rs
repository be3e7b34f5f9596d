//! [`OffsetSet`]: a set of Kafka offsets of one partition, kept as inclusive ranges.
//!
//! What ingest and publish say to each other about work that is done ("the outcome of
//! these messages is in Kafka") is mostly long runs of consecutive offsets with a few
//! holes (the messages still running), so it is kept and sent as ranges: a million
//! finished offsets cost one range. Built on `rangemap` (adjacent ranges merge).
//! Invariant: the wire form is a list of disjoint, ascending, inclusive `(first, last)`
//! pairs; a malformed list from a peer (reversed or overlapping pairs) is repaired on
//! decoding, never trusted to be sorted.

use rangemap::RangeInclusiveSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetSet(RangeInclusiveSet<i64>);

impl OffsetSet {
    pub fn new() -> OffsetSet {
        OffsetSet::default()
    }

    pub fn insert(&mut self, offset: i64) {
        self.0.insert(offset..=offset);
    }

    pub fn insert_range(&mut self, first: i64, last: i64) {
        if first <= last {
            self.0.insert(first..=last);
        }
    }

    pub fn remove(&mut self, offset: i64) {
        self.0.remove(offset..=offset);
    }

    pub fn contains(&self, offset: i64) -> bool {
        self.0.contains(&offset)
    }

    /// Forgets every offset below `point` (a commit point: everything below it is
    /// committed, so nobody needs to know it is done).
    pub fn remove_below(&mut self, point: i64) {
        if point > i64::MIN {
            self.0.remove(i64::MIN..=point - 1);
        }
    }

    /// Adds every offset of `other`.
    pub fn extend(&mut self, other: &OffsetSet) {
        for r in other.0.iter() {
            self.0.insert(r.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inclusive ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|r| (*r.start(), *r.end()))
    }

    /// How many offsets (not ranges) the set holds.
    pub fn count(&self) -> u64 {
        self.ranges().map(|(a, b)| (b - a) as u64 + 1).sum()
    }
}

impl FromIterator<i64> for OffsetSet {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> OffsetSet {
        let mut s = OffsetSet::new();
        for o in iter {
            s.insert(o);
        }
        s
    }
}

impl Serialize for OffsetSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.ranges())
    }
}

impl<'de> Deserialize<'de> for OffsetSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OffsetSet, D::Error> {
        let pairs = Vec::<(i64, i64)>::deserialize(d)?;
        let mut s = OffsetSet::new();
        for (a, b) in pairs {
            s.insert_range(a.min(b), a.max(b));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetSet;

    #[test]
    fn runs_merge_and_holes_stay() {
        let mut s: OffsetSet = [1, 2, 3, 5, 6, 9].into_iter().collect();
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(1, 3), (5, 6), (9, 9)]);
        s.insert(4);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(1, 6), (9, 9)]);
        assert_eq!(s.count(), 7);
        s.remove_below(5);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(5, 6), (9, 9)]);
        s.remove(9);
        assert!(!s.contains(9) && s.contains(6) && !s.contains(4));
    }

    #[test]
    fn a_malformed_wire_list_is_repaired() {
        let s: OffsetSet = serde_json::from_str("[[7,3],[5,10],[20,20]]").unwrap();
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(3, 10), (20, 20)]);
        let back: OffsetSet = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
