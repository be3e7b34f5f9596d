//! Golden bytes of the channel format: a change here is a protocol change (bump
//! PROTOCOL_VERSION). Also the codec's refusals: oversized, empty, truncated and trailing
//! frames, strangers and other versions.

use ftp_pooler_channel::frame::{check_len, decode_payload, encode_frame, Handshake, MAGIC};
use ftp_pooler_channel::*;
use ftp_pooler_contract::TransferTask;

fn id() -> MessageId {
    MessageId {
        generation: 7,
        partition: 2,
        offset: 300,
    }
}

#[test]
fn handshake_bytes() {
    let h = Handshake::new(Role::Transfer).to_bytes();
    assert_eq!(&h, b"FTPPOOLR\x00\x0a\x03\x00");
    assert_eq!(Handshake::parse(&h).unwrap().role, Role::Transfer);
}

#[test]
fn ack_frame_bytes() {
    // length 6; variant 0; generation 7; partition zigzag(2)=4; offset zigzag(300)=600 as
    // 0xfb + u16 LE.
    let frame = encode_frame(&FromPublish::Acked(id())).unwrap();
    assert_eq!(frame, [0, 0, 0, 6, 0x00, 0x07, 0x04, 0xfb, 0x58, 0x02]);
}

#[test]
fn done_and_commit_frame_bytes() {
    // FromPublish::Done: variant 1; map of 1: partition zigzag(2)=4 -> 2 ranges
    // (1,3), (5,5) as zigzag pairs.
    let done: OffsetSet = [1, 2, 3, 5].into_iter().collect();
    let frame = encode_frame(&FromPublish::Done([(2, done)].into())).unwrap();
    assert_eq!(frame, [0, 0, 0, 8, 0x01, 1, 0x04, 2, 2, 6, 10, 10]);
    assert_eq!(
        encode_frame(&FromPublish::HandedOver).unwrap(),
        [0, 0, 0, 1, 0x02]
    );
    // IngestToPublish::Committed: variant 1; partition 4 (2) -> offset 600 (300).
    let frame = encode_frame(&IngestToPublish::Committed([(2, 300)].into())).unwrap();
    assert_eq!(frame, [0, 0, 0, 6, 0x01, 1, 0x04, 0xfb, 0x58, 0x02]);
}

#[test]
fn job_frame_bytes() {
    let job = IngestToTransfer::Job(Job {
        id: id(),
        task: TransferTask {
            task_id: "t1".into(),
            src_id: "a".into(),
            src_path: "/x".into(),
            dst_id: "l".into(),
            dst_path: "y".into(),
            checksum: None,
        },
        route: Route {
            direction: Direction::Download,
            remote_id: "a".into(),
            remote_path: "/x".into(),
            local_id: "l".into(),
            local_path: "y".into(),
        },
        suspect: true,
        enqueued_at: Some(EnqueuedAt(1000)),
    });
    let frame = encode_frame(&job).unwrap();
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0, 0, 0, 34,
        0x00,                               // IngestToTransfer::Job
        0x07, 0x04, 0xfb, 0x58, 0x02,       // MessageId
        2, b't', b'1', 1, b'a', 2, b'/', b'x', 1, b'l', 1, b'y', // task
        0,                                  // task.checksum: None (issue 21)
        0x00,                               // Direction::Download
        1, b'a', 2, b'/', b'x', 1, b'l', 1, b'y', // route
        1,                                  // suspect
        1, 0xfb, 0xd0, 0x07,                // Some(EnqueuedAt(zigzag(1000) = 2000))
    ];
    assert_eq!(frame, expected);
    let back: IngestToTransfer = decode_payload(&frame[4..]).unwrap();
    assert_eq!(back, job);
}

#[test]
fn lengths_are_checked_before_allocation() {
    assert!(matches!(check_len(0), Err(ChannelError::Empty)));
    assert!(matches!(
        check_len(MAX_FRAME + 1),
        Err(ChannelError::TooLarge { .. })
    ));
    assert!(matches!(
        check_len(u32::MAX),
        Err(ChannelError::TooLarge { .. })
    ));
    assert_eq!(check_len(MAX_FRAME).unwrap(), MAX_FRAME as usize);
}

#[test]
fn trailing_bytes_and_garbage_are_refused() {
    let mut payload = encode_frame(&FromPublish::Acked(id())).unwrap()[4..].to_vec();
    payload.push(0);
    assert!(matches!(
        decode_payload::<FromPublish>(&payload),
        Err(ChannelError::Decode(_))
    ));
    assert!(decode_payload::<FromPublish>(&[9, 9, 9]).is_err());
}

#[test]
fn strangers_and_other_versions_are_refused() {
    let mut b = Handshake::new(Role::Ingest).to_bytes();
    b[0] = b'G';
    assert!(matches!(
        Handshake::parse(&b),
        Err(ChannelError::BadMagic(_))
    ));
    let mut b = Handshake::new(Role::Ingest).to_bytes();
    b[9] = 99;
    assert!(matches!(
        Handshake::parse(&b),
        Err(ChannelError::Version { theirs: 99, .. })
    ));
    let mut b = Handshake::new(Role::Ingest).to_bytes();
    b[10] = 42;
    assert!(matches!(
        Handshake::parse(&b),
        Err(ChannelError::UnknownRole(42))
    ));
    assert_eq!(&b[..8], &MAGIC);
}

#[tokio::test]
async fn a_connection_carries_frames_both_ways_and_refuses_wrong_roles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.sock");
    let listener = bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (role, mut r, mut w) = accept(s, Role::Publish, &[Role::Transfer, Role::Ingest])
            .await
            .unwrap();
        assert_eq!(role, Role::Transfer);
        let hello: Hello = r.recv().await.unwrap().unwrap();
        assert_eq!(hello.name, "transfer:a");
        let msg: ToPublish = r.recv().await.unwrap().unwrap();
        w.send(&FromPublish::Acked(msg.id())).await.unwrap();
        assert!(r.recv::<ToPublish>().await.unwrap().is_none(), "clean EOF");
        // A ctl peer is refused on this socket.
        let (s, _) = listener.accept().await.unwrap();
        let err = accept(s, Role::Publish, &[Role::Transfer])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ChannelError::UnexpectedRole { got: Role::Ctl, .. }
        ));
    });
    {
        let (mut r, mut w) = connect(&path, Role::Transfer, Role::Publish).await.unwrap();
        w.send(&Hello {
            name: "transfer:a".into(),
            pid: 1,
            generation: 0,
        })
        .await
        .unwrap();
        let result = ftp_pooler_contract::TransferResult::failure(
            &TransferTask {
                task_id: "t".into(),
                src_id: "a".into(),
                src_path: "p".into(),
                dst_id: "l".into(),
                dst_path: "q".into(),
                checksum: None,
            },
            ftp_pooler_contract::ErrorCode::FileNotFound,
            "550",
            3,
            1,
        );
        w.send(&ToPublish::Result {
            id: id(),
            result,
            direction: None,
            enqueued_at: None,
        })
        .await
        .unwrap();
        let ack: FromPublish = r.recv().await.unwrap().unwrap();
        assert_eq!(ack, FromPublish::Acked(id()));
    }
    let _ = connect(&path, Role::Ctl, Role::Publish).await;
    server.await.unwrap();
}

#[test]
fn the_configuration_in_force_crosses_a_frame_whole() {
    use ftp_pooler_config::{Registry, Settings};
    let dir = tempfile::tempdir().unwrap();
    let ini = format!(
        "[a]\ntype = ftp\nhost = h\nport = 2121\nuser = u\npass = s3cret\ntls = explicit\npassive = false\nactive_port_range = 50000-50010\nmax_sessions = 3\n\n[l]\ntype = local\nbase_path = {}\n",
        dir.path().display()
    );
    let mut settings = Settings::default();
    settings
        .kafka
        .consumer_config
        .insert("sasl.password".into(), "p".into());
    let config = ftp_pooler_config::Config {
        settings,
        registry: Registry::parse(std::path::Path::new("c.ini"), &ini).unwrap(),
        config_file: Some("/etc/ftp-pooler/config.yaml".into()),
        connections_file: "/etc/ftp-pooler/connections.ini".into(),
    };
    let msg = SupervisorToStage::Config(Box::new(ConfigInForce {
        generation: 3,
        config,
    }));
    let frame = encode_frame(&msg).unwrap();
    let back: SupervisorToStage = decode_payload(&frame[4..]).unwrap();
    assert_eq!(back, msg);
    let SupervisorToStage::Config(c) = back else {
        unreachable!()
    };
    let ids: Vec<&str> = c.config.registry.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "l"], "file order kept");
    // Debug (what a log could show) never holds the secrets.
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("\"p\""),
        "{shown}"
    );
}
