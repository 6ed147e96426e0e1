//! Crash test: two agents exchange 200 messages in each direction; both are killed with SIGKILL
//! while messages are in flight, restarted, and every message must reach the other side's sink
//! exactly once: one spool entry and one sidecar per Message-ID, the sets equal to what was sent,
//! and every outbound entry `sent`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use direct_agent::address::DirectAddress;
use direct_agent::agent::Context;
use direct_agent::agent::outbound::seal_and_queue;
use direct_agent::message::SealOptions;
use direct_agent::spool::{InboundState, OutboundKind, OutboundState, Spool, SqliteSpool};

use support::agents::{AgentSetup, Extra, sidecars, start, two_agents, wait_until};

const N: usize = 200;

fn queue_many(s: &AgentSetup, from: &str, to: &str) -> BTreeSet<String> {
    let ctx = Context::load(Some(&s.config)).unwrap();
    let spool = SqliteSpool::open(&s.data_dir).unwrap();
    let from = DirectAddress::parse(from).unwrap();
    let to = [DirectAddress::parse(to).unwrap()];
    let payload = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/vxu-v04.hl7"),
    )
    .unwrap();
    (0..N)
        .map(|_| {
            seal_and_queue(&ctx, &spool, &from, &to, &payload, &SealOptions::default())
                .unwrap()
                .message_id
        })
        .collect()
}

fn sidecar_ids(s: &AgentSetup) -> Vec<String> {
    sidecars(&s.inbox)
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            v["metadata"]["message_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn kill_9_with_messages_in_flight_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let to_b = queue_many(&a, "ehr@hisp-a.example", "iis@hisp-b.example");
    let to_a = queue_many(&b, "iis@hisp-b.example", "ehr@hisp-a.example");
    assert_eq!((to_b.len(), to_a.len()), (N, N), "Message-IDs are unique");

    let mut ra = start(&a);
    let mut rb = start(&b);
    let mid_flight = wait_until(Duration::from_secs(120), || {
        sidecars(&b.inbox).len() >= N / 5 || sidecars(&a.inbox).len() >= N / 5
    });
    assert!(
        mid_flight,
        "nothing delivered; A log:\n{}\nB log:\n{}",
        ra.log_text(),
        rb.log_text()
    );
    ra.kill9();
    rb.kill9();
    let at_kill = (sidecars(&a.inbox).len(), sidecars(&b.inbox).len());
    assert!(
        at_kill.0 < N || at_kill.1 < N,
        "the kill came too late to test anything: {at_kill:?}"
    );
    eprintln!(
        "killed with {} of {N} delivered to A and {} of {N} to B",
        at_kill.0, at_kill.1
    );

    let ra = start(&a);
    let rb = start(&b);
    let done = wait_until(Duration::from_secs(300), || {
        sidecars(&a.inbox).len() >= N && sidecars(&b.inbox).len() >= N
    });
    assert!(
        done,
        "after restart: {} to A, {} to B; A log:\n{}\nB log:\n{}",
        sidecars(&a.inbox).len(),
        sidecars(&b.inbox).len(),
        ra.log_text(),
        rb.log_text()
    );

    // A sink writes the sidecar before the spool records the delivery: let the last records land.
    let recorded = wait_until(Duration::from_secs(30), || {
        [(&b, &to_b), (&a, &to_a)].iter().all(|(receiver, sent)| {
            SqliteSpool::open(&receiver.data_dir)
                .and_then(|s| s.list_inbound(None))
                .is_ok_and(|entries| {
                    entries
                        .iter()
                        .filter(|e| e.message_id.as_ref().is_some_and(|id| sent.contains(id)))
                        .all(|e| e.state == InboundState::Delivered)
                })
        })
    });
    assert!(
        recorded,
        "deliveries not recorded in the spools within 30 s"
    );

    for (receiver, sender, sent) in [(&b, &a, &to_b), (&a, &b, &to_a)] {
        // The sink: one sidecar per message, exactly the sent set.
        let ids = sidecar_ids(receiver);
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            ids.len(),
            unique.len(),
            "{}: a message reached the sink twice",
            receiver.name
        );
        assert_eq!(
            &unique, sent,
            "{}: sink holds a different set than was sent",
            receiver.name
        );
        // The receiving spool: one entry per message, all delivered (duplicates from senders
        // that lost a 250 in the crash were recognised and not stored again).
        let spool = SqliteSpool::open(&receiver.data_dir).unwrap();
        let inbound = spool.list_inbound(None).unwrap();
        // (The spool also holds the MDNs the other side sent about its own messages.)
        let stored: Vec<String> = inbound
            .iter()
            .filter_map(|e| e.message_id.clone())
            .filter(|id| sent.contains(id))
            .collect();
        let stored_unique: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(stored.len(), N, "{}: spool entries", receiver.name);
        assert_eq!(&stored_unique, sent);
        let ours: Vec<_> = inbound
            .iter()
            .filter(|e| e.message_id.as_ref().is_some_and(|id| sent.contains(id)))
            .collect();
        assert!(
            ours.iter().all(|e| e.state == InboundState::Delivered),
            "{}: {:?}",
            receiver.name,
            ours.iter()
                .filter(|e| e.state != InboundState::Delivered)
                .map(|e| (e.id, e.state, e.reason.clone()))
                .collect::<Vec<_>>()
        );
        // Notifications about the receiver's own messages are never quarantined.
        let refused: Vec<_> = inbound
            .iter()
            .filter(|e| e.state == InboundState::Quarantined)
            .map(|e| (e.id, e.reason_kind.clone(), e.reason.clone()))
            .collect();
        assert!(
            refused.is_empty(),
            "{}: quarantined: {refused:?}",
            receiver.name
        );
        // The sender: every entry sent.
        let out = SqliteSpool::open(&sender.data_dir).unwrap();
        let entries: Vec<_> = out
            .list_outbound(None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == OutboundKind::Message)
            .collect();
        assert_eq!(entries.len(), N);
        assert!(
            entries.iter().all(|e| e.state == OutboundState::Sent),
            "{}: not all sent: {:?}",
            sender.name,
            entries
                .iter()
                .filter(|e| e.state != OutboundState::Sent)
                .map(|e| (e.id, e.state, e.last_error.clone()))
                .collect::<Vec<_>>()
        );
    }
    let duplicates = ra
        .log_text()
        .matches("duplicate of a message already stored")
        .count()
        + rb.log_text()
            .matches("duplicate of a message already stored")
            .count();
    eprintln!("duplicate transmissions recognised after the crash: {duplicates}");
}
