//! The I/O shell of recall: short-lived Kafka clients that read what [`super`] decides.
//!
//! [`recall`] makes one client (role [`Role::Recall`]: the operator's consumer settings,
//! security included, apply) for the group's committed offsets, the offsets of every
//! partition involved (batched `ListOffsets`: starts, end hints, time-to-offset hints) and the
//! timestamps of the tasks at the commit points; then one client per result topic, on a
//! thread each, to read the [`Scan`]s of that topic's partitions. Invariants: the clients
//! only `assign` (never subscribe: they join no group and take no partition from
//! anyone), never commit (auto commit and offset store are pinned off), and are dropped
//! when the recall returns; one client per topic, because librdkafka reports the end of a
//! partition by its number only.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::{ClientLog, Role};
use ftp_pooler_config::KafkaSettings;
use ftp_pooler_contract::Answers;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{over_budget, Facts, Report, Scan, TaskStart, Wanted, CLOCK_MARGIN, TO_THE_END};

/// Each broker request (offsets, committed offsets) may take this long.
const REQUEST: Duration = Duration::from_secs(10);

struct RecallContext {
    log: ClientLog,
}

impl ClientContext for RecallContext {
    crate::forward_client_log!(log);
}

impl ConsumerContext for RecallContext {}

type Client = BaseConsumer<RecallContext>;

fn client(kafka: &KafkaSettings) -> KafkaResult<Client> {
    let mut config = crate::client_config(kafka, Role::Recall);
    // The end of a range may be the end of the partition.
    config.set("enable.partition.eof", "true");
    config.create_with_context(RecallContext {
        log: ClientLog::new(Role::Recall),
    })
}

/// The result topics a recall reads: results, failures, the DLQ (without repeats).
pub fn result_topics(kafka: &KafkaSettings) -> Vec<String> {
    let mut topics = vec![
        kafka.result_topic.clone(),
        kafka.fail_topic.clone(),
        kafka.dlq_topic.clone(),
    ];
    topics.dedup();
    topics.sort();
    topics.dedup();
    topics
}

/// Which offsets of `partitions` (of `kafka.input_topic`) at or above the group's commit
/// point already have a record in the result topics.
pub fn recall(kafka: &KafkaSettings, partitions: &[i32]) -> KafkaResult<(Facts, Report)> {
    let started = Instant::now();
    let mut report = Report::default();
    if partitions.is_empty() {
        return Ok((Facts::default(), report));
    }
    let c = client(kafka)?;
    let task = kafka.input_topic.as_str();
    let committed = crate::committed(&c, task, partitions, REQUEST)?;
    report.committed = committed
        .iter()
        .filter_map(|(&p, o)| o.map(|o| (p, o)))
        .collect();
    let tasks: Vec<(String, i32)> = partitions.iter().map(|&p| (task.into(), p)).collect();
    let low = list(&c, &tasks, Offset::Beginning)?;
    // Where reading resumes; whether a task is there is for the read to find (no end
    // offset is trusted: see the module header of `recall`).
    let from: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|&p| {
            let lo = low.get(&(task.to_string(), p)).copied();
            (p, committed.get(&p).copied().flatten().max(lo).unwrap_or(0))
        })
        .collect();
    let starts = first_timestamps(&c, task, &from, started + super::MAX_TIME)?;
    let wanted = Wanted::new(task, &kafka.consumer_group, &starts, CLOCK_MARGIN);
    let Some(read_from_ms) = wanted.read_from_ms() else {
        report.elapsed = started.elapsed();
        return Ok((Facts::default(), report));
    };
    scan_results(kafka, c, &wanted, read_from_ms, started, report)
}

/// Which offsets of the task topic, at or above the group's commit point of each
/// partition, have a record in the result topics written at `since_ms` or later: what a
/// publish that starts learns its killed predecessor delivered (the records it had in
/// flight may be in Kafka without their senders knowing: they send them again). The same
/// bounds as [`recall`]; a short window (seconds) keeps the read short.
pub fn recall_recent(kafka: &KafkaSettings, since_ms: i64) -> KafkaResult<(Facts, Report)> {
    let started = Instant::now();
    let c = client(kafka)?;
    let task = kafka.input_topic.as_str();
    let partitions: Vec<i32> = topic_partitions(&c, &[task.to_string()])?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let committed = crate::committed(&c, task, &partitions, REQUEST)?;
    let starts: Vec<TaskStart> = partitions
        .iter()
        .map(|&p| TaskStart {
            partition: p,
            from: committed.get(&p).copied().flatten().unwrap_or(0),
            timestamp_ms: since_ms,
        })
        .collect();
    let wanted = Wanted::new(task, &kafka.consumer_group, &starts, Duration::ZERO);
    let read_from_ms = wanted.read_from_ms().unwrap_or(since_ms);
    scan_results(kafka, c, &wanted, read_from_ms, started, Report::default())
}

/// Reads every result partition from its end back to `read_from_ms` (each result topic
/// on a thread and a client of its own), collecting the facts `wanted` names.
fn scan_results(
    kafka: &KafkaSettings,
    c: Client,
    wanted: &Wanted,
    read_from_ms: i64,
    started: Instant,
    mut report: Report,
) -> KafkaResult<(Facts, Report)> {
    let mut scans: BTreeMap<String, Vec<(i32, Scan)>> = BTreeMap::new();
    let parts = topic_partitions(&c, &result_topics(kafka))?;
    let (low, high) = (
        list(&c, &parts, Offset::Beginning)?,
        list(&c, &parts, Offset::End)?,
    );
    let hints = list(&c, &parts, Offset::Offset(read_from_ms))?;
    for key in &parts {
        let lo = low.get(key).copied().unwrap_or(0);
        let end = high.get(key).copied().unwrap_or(lo);
        let scan = Scan::new(lo, end, read_from_ms, hints.get(key).copied());
        scans.entry(key.0.clone()).or_default().push((key.1, scan));
    }
    drop(c);
    report.partitions = parts.len();
    let results: Vec<KafkaResult<(Facts, u64, bool)>> = std::thread::scope(|s| {
        let handles: Vec<_> = scans
            .into_iter()
            .map(|(topic, scans)| {
                s.spawn(move || scan_topic(kafka, &topic, scans, wanted, started))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(KafkaError::Canceled)))
            .collect()
    });
    let mut facts = Facts::default();
    for r in results {
        let (f, records, bounded) = r?;
        facts.extend(f);
        report.records += records;
        report.bounded |= bounded;
    }
    report.facts = facts.count();
    report.elapsed = started.elapsed();
    Ok((facts, report))
}

/// The partitions of `topics` (from the cluster's metadata).
fn topic_partitions(c: &Client, topics: &[String]) -> KafkaResult<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), REQUEST)?;
        for topic in md.topics() {
            out.extend(topic.partitions().iter().map(|p| (t.clone(), p.id())));
        }
    }
    Ok(out)
}

/// One batched `ListOffsets`: for each partition, the offset `at` (a timestamp in ms,
/// or [`Offset::Beginning`] / [`Offset::End`] for the log start / end). Partitions the
/// broker gives no offset for are left out.
fn list(
    c: &Client,
    parts: &[(String, i32)],
    at: Offset,
) -> KafkaResult<HashMap<(String, i32), i64>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, at)?;
    }
    let got = c.offsets_for_times(tpl, REQUEST)?;
    Ok(got
        .elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// The timestamp of the first task message at or after `from[p]`, per partition (a
/// partition whose message cannot be read in time is left out: no facts for it).
fn first_timestamps(
    c: &Client,
    task: &str,
    from: &BTreeMap<i32, i64>,
    deadline: Instant,
) -> KafkaResult<Vec<TaskStart>> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in from {
        tpl.add_partition_offset(task, p, Offset::Offset(o))?;
    }
    c.assign(&tpl)?;
    let mut starts = BTreeMap::new();
    let mut ended = std::collections::BTreeSet::new();
    while (starts
        .keys()
        .chain(&ended)
        .collect::<std::collections::BTreeSet<_>>()
        .len())
        < from.len()
        && Instant::now() < deadline
    {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == task && from.contains_key(&m.partition()) => {
                let (p, t) = (m.partition(), m.timestamp().to_millis());
                if let (Some(t), None) = (t, starts.get(&p)) {
                    starts.insert(
                        p,
                        TaskStart {
                            partition: p,
                            from: from[&p],
                            timestamp_ms: t,
                        },
                    );
                }
            }
            // The end before a message at or after `from`: it went (retention) meanwhile.
            Some(Err(KafkaError::PartitionEOF(p))) if !starts.contains_key(&p) => {
                ended.insert(p);
            }
            Some(Err(e)) => c.context().log.error(&e, "recall: reading tasks"),
            _ => {}
        }
    }
    c.unassign()?;
    Ok(starts.into_values().collect())
}

/// The range a partition is reading now, and what it found so far.
struct Reading {
    range: (i64, i64),
    /// The range runs to the end of the partition ([`TO_THE_END`]): an end-of-partition
    /// event completes it. (Any other range ends at a record that exists, and an event
    /// seen while reading it is left over from the range before.)
    to_the_end: bool,
    lowest_ms: Option<i64>,
    complete: bool,
}

/// Reads the scans of one topic's partitions round by round (every partition's next
/// range at once) until all are over or the budget is spent; the facts, the records
/// read, and whether the budget stopped it.
fn scan_topic(
    kafka: &KafkaSettings,
    topic: &str,
    mut scans: Vec<(i32, Scan)>,
    wanted: &Wanted,
    started: Instant,
) -> KafkaResult<(Facts, u64, bool)> {
    let c = client(kafka)?;
    let mut facts = Facts::default();
    let mut records = 0u64;
    loop {
        let mut reading: BTreeMap<i32, Reading> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (p, scan) in &scans {
            if let Some(range) = scan.next_range() {
                tpl.add_partition_offset(topic, *p, Offset::Offset(range.0))?;
                let complete = range.0 >= range.1;
                reading.insert(
                    *p,
                    Reading {
                        range,
                        to_the_end: range.1 == TO_THE_END,
                        lowest_ms: None,
                        complete,
                    },
                );
            }
        }
        if reading.is_empty() {
            return Ok((facts, records, false));
        }
        c.assign(&tpl)?;
        // librdkafka may keep a partition paused (below) across a new assignment.
        c.resume(&tpl)?;
        while reading.values().any(|r| !r.complete) {
            if over_budget(records, started.elapsed()) {
                return Ok((facts, records, true));
            }
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Some(r) = reading.get_mut(&m.partition()) {
                        records += take(&m, r, wanted, &mut facts, &c, topic);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(r) = reading.get_mut(&p).filter(|r| r.to_the_end) {
                        r.complete = true;
                    }
                }
                Some(Err(e)) => c.context().log.error(&e, "recall: reading results"),
                None => {}
            }
        }
        for (p, scan) in scans.iter_mut() {
            if let Some(r) = reading.get(p) {
                scan.read(r.range, r.lowest_ms);
            }
        }
    }
}

/// One record of a range being read: a fact if it is one; 1 if it counts as read.
fn take(
    m: &BorrowedMessage<'_>,
    r: &mut Reading,
    wanted: &Wanted,
    facts: &mut Facts,
    c: &Client,
    topic: &str,
) -> u64 {
    let o = m.offset();
    if r.complete || o < r.range.0 {
        return 0;
    }
    if o >= r.range.1 {
        r.complete = true;
        return 0;
    }
    let t = m.timestamp().to_millis();
    if r.lowest_ms.is_none() {
        r.lowest_ms = t.or(Some(i64::MAX));
    }
    if o + 1 >= r.range.1 {
        r.complete = true;
        let _ = c.pause(&{
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, m.partition());
            tpl
        });
    }
    let answers = m
        .headers()
        .and_then(|h| Answers::parse(h.iter().map(|h| (h.key, h.value))));
    if let Some(fact) = answers.and_then(|a| wanted.fact(&a, t)) {
        facts.add(fact);
    }
    1
}
