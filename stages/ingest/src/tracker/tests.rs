//! The tracker's unit tests.
use super::*;
use ftp_pooler_channel::{Direction, Route};
use ftp_pooler_contract::{DlqRecord, InvalidMessage, TransferTask};

const GEN: u64 = 42;

fn id(partition: i32, offset: i64) -> MessageId {
    MessageId {
        generation: GEN,
        partition,
        offset,
    }
}

fn job(partition: i32, offset: i64) -> Job {
    let task = TransferTask {
        task_id: format!("t-{partition}-{offset}"),
        src_id: "a".into(),
        src_path: "x".into(),
        dst_id: "l".into(),
        dst_path: "y".into(),
        checksum: None,
    };
    Job {
        suspect: false,
        enqueued_at: None,
        id: id(partition, offset),
        route: Route {
            direction: Direction::Download,
            remote_id: "a".into(),
            remote_path: "x".into(),
            local_id: "l".into(),
            local_path: "y".into(),
        },
        task,
    }
}

fn dlq(partition: i32, offset: i64) -> ToPublish {
    ToPublish::Dlq {
        id: id(partition, offset),
        record: DlqRecord::new(
            "t",
            partition,
            offset,
            None,
            Some(b"x"),
            &InvalidMessage("bad".into()),
        ),
        key: None,
    }
}

fn limits(window: usize) -> Limits {
    Limits {
        window: HashMap::new(),
        default_window: window,
        pod: 100,
        partition_backlog: 4,
        pod_bytes: usize::MAX,
    }
}

fn sent_offsets(out: &[Out]) -> Vec<i64> {
    out.iter()
        .map(|o| match o {
            Out::Transfer(_, j) => j.id.offset,
            Out::Publish(p) => p.id().offset,
        })
        .collect()
}

#[test]
fn commit_point_is_the_end_of_the_contiguous_completed_prefix() {
    let mut t = Tracker::new(GEN, limits(10), 3);
    for o in [10, 11, 13, 20] {
        t.track_job("a", job(0, o));
    }
    assert_eq!(t.commit_point(0), Some(10));
    t.ack(id(0, 11));
    t.ack(id(0, 13));
    assert_eq!(t.commit_point(0), Some(10), "10 is not done yet");
    t.ack(id(0, 10));
    assert_eq!(t.commit_point(0), Some(20), "gaps in offsets are fine");
    t.ack(id(0, 20));
    assert_eq!(t.commit_point(0), Some(21));
    assert!(t.is_empty());
    let points = t.commit_points();
    assert_eq!(points, BTreeMap::from([(0, 21)]));
    t.committed(&points);
    assert!(t.commit_points().is_empty(), "nothing new to commit");
}

#[test]
fn partitions_commit_independently() {
    let mut t = Tracker::new(GEN, limits(10), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(1, 0));
    t.track_direct(dlq(1, 1));
    t.ack(id(1, 0));
    t.ack(id(1, 1));
    assert_eq!(t.commit_points(), BTreeMap::from([(0, 0), (1, 2)]));
}

#[test]
fn acks_of_any_generation_complete_and_acks_ahead_skip_the_read() {
    let mut t = Tracker::new(GEN, limits(10), 3);
    t.track_job("a", job(0, 5));
    // The outcome of an earlier ingest's job for the same message.
    let old = MessageId {
        generation: GEN - 1,
        ..id(0, 5)
    };
    t.ack(old);
    assert_eq!(t.commit_point(0), Some(6));
    assert!(t.is_empty());
    // Acked before it is read (a job an earlier ingest left with a worker): skipped
    // when read, and the commit point moves past it.
    t.ack(id(0, 7));
    t.track_job("a", job(0, 6));
    assert!(t.track_job("a", job(0, 7)).is_empty());
    assert_eq!(t.skipped(), 1);
    assert_eq!(t.len(), 1);
    t.ack(id(0, 6));
    assert_eq!(t.commit_point(0), Some(8));
    // An ack for a partition not assigned here is kept, not committed or paused.
    t.ack(id(3, 0));
    assert!(!t.commit_points().contains_key(&3));
    assert_eq!(t.update_pauses(), (vec![], vec![]));
    t.assigned(&[3]);
    assert!(t.track_direct(dlq(3, 0)).is_empty(), "known done");
    assert_eq!(t.commit_points().get(&3), Some(&1));
    // A job of another generation is not admitted (only this ingest reads).
    let mut j = job(0, 9);
    j.id.generation = 1;
    assert!(t.track_job("a", j).is_empty());
    assert!(t.is_empty());
}

#[test]
fn learned_done_offsets_complete_tracked_ones_and_skip_the_rest() {
    let mut t = Tracker::new(GEN, limits(2), 3);
    t.assigned(&[0]);
    let mut sent = Vec::new();
    for o in 0..4 {
        sent.extend(sent_offsets(&t.track_job("a", job(0, o))));
    }
    assert_eq!(sent, [0, 1]);
    // 1 and 2 (running, backlogged) are done, and 5..=7 (not read yet).
    let done: OffsetSet = [1, 2, 5, 6, 7].into_iter().collect();
    assert_eq!(
        sent_offsets(&t.learn_done(0, &done)),
        [3],
        "slot of 1 refilled"
    );
    assert_eq!(t.len(), 2);
    t.track_job("a", job(0, 4));
    for o in 5..=7 {
        assert!(t.track_job("a", job(0, o)).is_empty());
    }
    assert_eq!(t.skipped(), 3);
    // What publish is told on connect: done above the commit point (0).
    assert_eq!(
        t.done_above_commit()[&0].ranges().collect::<Vec<_>>(),
        vec![(1, 2), (5, 7)]
    );
    for o in [0, 3, 4] {
        t.ack(id(0, o));
    }
    assert_eq!(t.commit_point(0), Some(8));
    assert!(t.done_above_commit().is_empty());
}

#[test]
fn a_worker_finishing_an_earlier_generations_job_frees_the_slot_of_the_reread() {
    let mut t = Tracker::new(GEN, limits(1), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(0, 1));
    let old = MessageId {
        generation: GEN - 1,
        ..id(0, 0)
    };
    assert!(
        t.finished("b", old).is_empty(),
        "not the worker it was sent to"
    );
    assert_eq!(sent_offsets(&t.finished("a", old)), [1]);
}

#[test]
fn the_window_bounds_dispatch_and_acks_refill_it_in_order() {
    let mut t = Tracker::new(GEN, limits(2), 3);
    let mut sent = Vec::new();
    for o in 0..5 {
        sent.extend(sent_offsets(&t.track_job("a", job(0, o))));
    }
    assert_eq!(sent, [0, 1]);
    assert_eq!(sent_offsets(&t.ack(id(0, 1))), [2]);
    assert_eq!(sent_offsets(&t.ack(id(0, 0))), [3]);
    // Another connection has its own window.
    assert_eq!(sent_offsets(&t.track_job("b", job(1, 0))), [0]);
    assert_eq!(t.pending_for_transfer("a").len(), 2);
    assert_eq!(t.pending_for_transfer("b").len(), 1);
}

#[test]
fn backlogged_partitions_pause_and_resume() {
    let mut t = Tracker::new(GEN, limits(1), 3);
    for o in 0..5 {
        t.track_job("a", job(0, o));
    }
    // 1 dispatched, 4 in backlog = partition_backlog.
    assert_eq!(t.update_pauses(), (vec![0], vec![]));
    assert_eq!(t.update_pauses(), (vec![], vec![]));
    t.ack(id(0, 0));
    t.ack(id(0, 1));
    assert_eq!(
        t.update_pauses(),
        (vec![], vec![]),
        "backlog 2 = hi/2: still paused"
    );
    t.ack(id(0, 2));
    assert_eq!(t.update_pauses(), (vec![], vec![0]));
}

#[test]
fn a_full_pod_pauses_everything() {
    let mut t = Tracker::new(
        GEN,
        Limits {
            pod: 4,
            ..limits(10)
        },
        3,
    );
    for o in 0..2 {
        t.track_job("a", job(0, o));
        t.track_job("a", job(1, o));
    }
    assert_eq!(t.update_pauses(), (vec![0, 1], vec![]));
    t.ack(id(0, 0));
    t.ack(id(0, 1));
    assert_eq!(t.update_pauses(), (vec![], vec![]), "2 >= half of 4");
    t.ack(id(1, 0));
    assert_eq!(t.update_pauses(), (vec![], vec![0, 1]));
}

#[test]
fn large_tracked_values_pause_everything_until_acked() {
    let mut t = Tracker::new(
        GEN,
        Limits {
            pod_bytes: 3 * 1024 * 1024,
            ..limits(10)
        },
        3,
    );
    let big = |partition: i32, offset: i64| ToPublish::Dlq {
        id: id(partition, offset),
        record: DlqRecord::new(
            "t",
            partition,
            offset,
            None,
            Some(&vec![b'v'; 1024 * 1024]),
            &InvalidMessage("bad".into()),
        ),
        key: None,
    };
    t.track_job("a", job(1, 0));
    t.track_direct(big(0, 0));
    t.track_direct(big(0, 1));
    assert_eq!(t.update_pauses(), (vec![], vec![]), "2 MiB < 3 MiB");
    t.track_direct(big(0, 2));
    assert_eq!(
        t.update_pauses(),
        (vec![0, 1], vec![]),
        "3 MiB of DLQ values: every partition pauses, though only 4 messages are tracked"
    );
    t.ack(id(0, 0));
    assert_eq!(
        t.update_pauses(),
        (vec![], vec![]),
        "2 MiB >= half of 3 MiB"
    );
    t.ack(id(0, 1));
    assert_eq!(t.update_pauses(), (vec![], vec![0, 1]));
    t.ack(id(0, 2));
    t.ack(id(1, 0));
    assert_eq!(t.bytes, 0, "every byte counted in is counted out");
}

fn failure_code(out: &Out) -> Option<ErrorCode> {
    match out {
        Out::Publish(ToPublish::Result { result, .. }) => result.error_code,
        _ => None,
    }
}

#[test]
fn a_lost_worker_gets_its_jobs_again_one_at_a_time_while_suspects_remain() {
    let mut t = Tracker::new(GEN, limits(3), 3);
    for o in 0..5 {
        t.track_job("a", job(0, o));
    }
    t.started("a", id(0, 1));
    // Worker dies with 0, 1, 2 dispatched: all three are suspects and run first,
    // one at a time, flagged so the worker reports their start before running them.
    assert_eq!(sent_offsets(&t.transfer_lost("a")), [0]);
    let again = t.pending_for_transfer("a");
    assert_eq!(again.len(), 1);
    assert!(again[0].suspect);
    assert_eq!(sent_offsets(&t.ack(id(0, 0))), [1]);
    assert_eq!(sent_offsets(&t.finished("a", id(0, 1))), [2]);
    // The last suspect done: back to the full window, in the original order.
    assert_eq!(sent_offsets(&t.finished("a", id(0, 2))), [3, 4]);
    assert!(!t.pending_for_transfer("a").iter().any(|j| j.suspect));
}

#[test]
fn poison_becomes_a_failure_and_its_neighbour_is_not_blamed() {
    let mut t = Tracker::new(GEN, limits(2), 3);
    t.track_job("a", job(0, 0)); // poison
    t.track_job("a", job(0, 1)); // innocent, running beside it
    t.track_job("a", job(0, 2));
    t.started("a", id(0, 0));
    t.started("a", id(0, 1));
    assert_eq!(
        sent_offsets(&t.transfer_lost("a")),
        [0],
        "suspects first, alone"
    );
    t.started("a", id(0, 0));
    assert_eq!(sent_offsets(&t.transfer_lost("a")), [0]);
    t.started("a", id(0, 0));
    let out = t.transfer_lost("a");
    // Third crash: a failure for publish; then the innocent suspect runs alone.
    assert_eq!(sent_offsets(&out), [0, 1]);
    assert_eq!(failure_code(&out[0]), Some(ErrorCode::UnknownError));
    match &out[0] {
        Out::Publish(ToPublish::Result { result, .. }) => assert_eq!(result.attempts, 3),
        other => panic!("{other:?}"),
    }
    t.started("a", id(0, 1));
    assert_eq!(
        sent_offsets(&t.ack(id(0, 1))),
        [2],
        "no suspects left: full window"
    );
    t.ack(id(0, 0));
    t.ack(id(0, 2));
    assert!(t.is_empty());
    assert_eq!(t.commit_point(0), Some(3));
}

#[test]
fn a_revoked_partition_finishes_what_was_read_and_forget_frees_the_window() {
    let mut t = Tracker::new(GEN, limits(1), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(0, 1));
    t.track_job("a", job(1, 0));
    t.revoke(&[0]);
    assert_eq!(
        t.in_flight(&[0]),
        2,
        "dispatched and backlogged are waited for"
    );
    // Messages of a revoked partition are not admitted.
    assert!(t.track_job("a", job(0, 2)).is_empty());
    assert_eq!(
        sent_offsets(&t.ack(id(0, 0))),
        [1],
        "the backlog keeps going"
    );
    assert_eq!(
        sent_offsets(&t.ack(id(0, 1))),
        [0],
        "then partition 1's job"
    );
    assert_eq!(t.in_flight(&[0]), 0);
    assert_eq!(t.commit_point(0), Some(2));
    assert!(t.forget(&[0], false).is_empty());
    assert_eq!(t.len(), 1);
    assert_eq!(t.commit_point(0), None);

    // A revoke that gave up waiting: the commit point stays at the first unfinished
    // message, and forgetting frees the slot of what was in flight.
    let mut t = Tracker::new(GEN, limits(1), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(0, 1));
    t.track_job("a", job(1, 0));
    t.revoke(&[0]);
    assert_eq!(t.commit_point(0), Some(0));
    assert_eq!(sent_offsets(&t.forget(&[0], false)), [0]);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_partition_whose_final_commit_failed_keeps_its_done_prefix_for_its_return() {
    let mut t = Tracker::new(GEN, limits(4), 3);
    for o in 0..4 {
        t.track_job("a", job(0, o));
    }
    t.revoke(&[0]);
    for o in [0, 1, 3] {
        t.ack(id(0, o));
    }
    // The revoke gave up with offset 2 unfinished, and its commit failed.
    assert_eq!(t.commit_point(0), Some(2));
    t.forget(&[0], true);
    assert_eq!(t.len(), 0);
    assert!(
        t.commit_points().is_empty(),
        "a parked partition is not committed"
    );
    t.assigned(&[0]);
    // Redelivered from the old committed offset: the done prefix is skipped, the rest
    // runs again (3 was done, but after the gap: at least once).
    assert!(t.track_job("a", job(0, 0)).is_empty());
    assert!(t.track_job("a", job(0, 1)).is_empty());
    assert_eq!(t.commit_points(), BTreeMap::from([(0, 2)]));
    assert_eq!(sent_offsets(&t.track_job("a", job(0, 2))), [2]);
    assert_eq!(sent_offsets(&t.track_job("a", job(0, 3))), [3]);
}

#[test]
fn a_parked_partition_keeps_what_it_knew_done_and_never_commits_below_its_group() {
    let mut t = Tracker::new(GEN, limits(4), 3);
    t.assigned(&[0]);
    t.track_job("a", job(0, 0));
    t.ack(id(0, 5)); // known done ahead
    t.revoke(&[0]);
    t.forget(&[0], true);
    t.assigned(&[0]);
    t.track_job("a", job(0, 0));
    t.ack(id(0, 0));
    assert!(t.track_job("a", job(0, 5)).is_empty(), "still known done");
    // Another owner committed up to 10 meanwhile (recall reads it at assignment): no
    // commit below that.
    t.committed(&BTreeMap::from([(0, 10)]));
    assert!(t.commit_points().is_empty(), "{:?}", t.commit_points());
}

#[test]
fn a_removed_connection_fails_what_it_still_had() {
    let mut t = Tracker::new(GEN, limits(1), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(0, 1));
    t.track_job("b", job(1, 0));
    let out = t.connection_removed("a");
    assert_eq!(sent_offsets(&out), [0, 1]);
    assert!(out
        .iter()
        .all(|o| failure_code(o) == Some(ErrorCode::InvalidConfig)));
    assert!(t.pending_for_transfer("a").is_empty());
    assert_eq!(t.pending_for_publish().len(), 2);
    t.ack(id(0, 0));
    t.ack(id(0, 1));
    assert_eq!(t.commit_point(0), Some(2));
    assert_eq!(t.pending_for_transfer("b").len(), 1, "b untouched");
}

#[test]
fn a_finished_job_frees_its_slot_before_publish_acks_it() {
    let mut t = Tracker::new(GEN, limits(1), 3);
    t.track_job("a", job(0, 0));
    t.track_job("a", job(0, 1));
    assert_eq!(
        sent_offsets(&t.finished("a", id(0, 0))),
        [1],
        "slot free at once"
    );
    assert_eq!(t.commit_point(0), Some(0), "still not committed");
    assert!(t.ack(id(0, 0)).is_empty());
    assert_eq!(t.commit_point(0), Some(1));
    // A worker that dies with a finished (unpublished) result runs it again.
    t.finished("a", id(0, 1));
    t.transfer_lost("a");
    assert_eq!(t.pending_for_transfer("a").len(), 1);
}

#[test]
fn rereads_of_done_messages_are_ignored() {
    let mut t = Tracker::new(GEN, limits(2), 3);
    t.track_job("a", job(0, 0));
    t.ack(id(0, 0));
    assert!(t.track_job("a", job(0, 0)).is_empty());
    assert_eq!(t.commit_point(0), Some(1));
}
