//! [`Answers`]: the record headers naming the task message a result, failure or DLQ
//! record answers (issue 18).
//!
//! Publish puts them on every record it writes; a restarted or newly assigned ingest reads
//! them back from the result topics to learn which task offsets above its group's commit
//! point are already done. They are additions to the Kafka contract: the JSON payloads do
//! not change, and a client that ignores headers sees nothing new. Invariants:
//! - values are UTF-8 text (`ftp-tasks`, `2`, `1234`), readable in any Kafka tool;
//! - [`Answers::parse`] accepts a record only when the topic, partition and offset are all
//!   present and well formed (a partition >= 0, an offset >= 0): a record without them
//!   (written by an older version, or by someone else) is no fact, never a wrong one.

/// Header: the topic of the task message answered.
pub const TASK_TOPIC: &str = "ftp-pooler-task-topic";
/// Header: its partition (decimal text).
pub const TASK_PARTITION: &str = "ftp-pooler-task-partition";
/// Header: its offset (decimal text).
pub const TASK_OFFSET: &str = "ftp-pooler-task-offset";
/// Header: the consumer group that read it (two services may share a task topic under
/// different groups and write to the same result topics).
pub const TASK_GROUP: &str = "ftp-pooler-group";

/// The task message a record answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub group: String,
}

impl Answers {
    /// The headers, in a fixed order: (name, UTF-8 value).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (TASK_TOPIC, self.topic.clone()),
            (TASK_PARTITION, self.partition.to_string()),
            (TASK_OFFSET, self.offset.to_string()),
            (TASK_GROUP, self.group.clone()),
        ]
    }

    /// Reads the headers of a record (name, value; other headers are ignored, the last of
    /// a repeated name wins). None unless topic, partition and offset are present and
    /// valid; a missing group reads as empty.
    pub fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Option<Answers> {
        let (mut topic, mut partition, mut offset, mut group) = (None, None, None, None);
        for (name, value) in headers {
            let slot = match name {
                TASK_TOPIC => &mut topic,
                TASK_PARTITION => &mut partition,
                TASK_OFFSET => &mut offset,
                TASK_GROUP => &mut group,
                _ => continue,
            };
            *slot = value.and_then(|v| std::str::from_utf8(v).ok());
        }
        let partition: i32 = partition?.parse().ok().filter(|p| *p >= 0)?;
        let offset: i64 = offset?.parse().ok().filter(|o| *o >= 0)?;
        let topic = topic.filter(|t| !t.is_empty())?;
        Some(Answers {
            topic: topic.to_string(),
            partition,
            offset,
            group: group.unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(h: &[(&str, &str)]) -> Option<Answers> {
        Answers::parse(h.iter().map(|(n, v)| (*n, Some(v.as_bytes()))))
    }

    #[test]
    fn headers_read_back_as_written() {
        let a = Answers {
            topic: "ftp-tasks".into(),
            partition: 2,
            offset: 1234,
            group: "ftp-pooler".into(),
        };
        let h = a.headers();
        let pairs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(pairs[1], ("ftp-pooler-task-partition", "2"));
        assert_eq!(parse(&pairs), Some(a));
    }

    #[test]
    fn incomplete_or_malformed_headers_are_no_fact() {
        let full = [(TASK_TOPIC, "t"), (TASK_PARTITION, "0"), (TASK_OFFSET, "7")];
        assert_eq!(parse(&full).unwrap().group, "");
        for drop in 0..3 {
            let some: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, h)| *h)
                .collect();
            assert_eq!(parse(&some), None, "without {:?}", full[drop]);
        }
        for (name, bad) in [
            (TASK_PARTITION, "-1"),
            (TASK_PARTITION, "x"),
            (TASK_OFFSET, "-5"),
            (TASK_OFFSET, " 7"),
            (TASK_TOPIC, ""),
        ] {
            let mut h = full.to_vec();
            h.push((name, bad));
            assert_eq!(parse(&h), None, "{name}={bad:?}");
        }
        // A header without a value, and a value that is not UTF-8.
        let mut h: Vec<(&str, Option<&[u8]>)> =
            full.iter().map(|(n, v)| (*n, Some(v.as_bytes()))).collect();
        h.push((TASK_OFFSET, None));
        assert_eq!(Answers::parse(h.clone()), None);
        h.pop();
        h.push((TASK_TOPIC, Some(&[0xff, 0xfe])));
        assert_eq!(Answers::parse(h), None);
    }
}
