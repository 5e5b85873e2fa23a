//! `set_peers`: a transport follows the cluster's configuration: it reaches a peer added
//! after it started, lets a removed one go (stops sending, closes the connections, refuses
//! new ones), follows an address change, ignores an empty set and stays bounded.

mod common;

use common::*;
use raftkv_raft::Transport;
use raftkv_transport_tcp::{TcpTransport, PEERS_MAX, PEER_ADDR_BYTES_MAX};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn addrs(pairs: &[(u64, &TcpTransport)]) -> BTreeMap<u64, String> {
    pairs
        .iter()
        .map(|(id, t)| (*id, t.local_addr().to_string()))
        .collect()
}

/// Polls `cond` until it holds, or panics after `timeout`.
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_peer_added_by_set_peers_is_reached_both_ways() {
    let mut c = cluster(&[1, 2], None);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    // n3 starts knowing n1 (as a joining node knows whom it joins); n1 learns of it.
    let t1_addr = c[&1].local_addr();
    let t3 = TcpTransport::start_on(runtime(), config(3, BTreeMap::from([(1, t1_addr)])), bind())
        .unwrap();
    let mut peers = addrs(&[(3, &t3)]);
    peers.insert(2, String::new()); // no address recorded: keep the configured one
    c.get_mut(&1).unwrap().set_peers(&peers);
    assert_eq!(c[&1].peers()[&2], c[&2].local_addr().to_string());
    c.insert(3, t3);
    send_until_received(&mut c, 1, 3, 5 * SECOND);
    send_until_received(&mut c, 3, 1, 5 * SECOND);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
}

#[test]
fn a_removed_peer_is_disconnected_and_refused() {
    let mut c = cluster(&[1, 2, 3], None);
    for (from, to) in [(1, 3), (3, 1), (1, 2)] {
        send_until_received(&mut c, from, to, 5 * SECOND);
    }
    let peers = BTreeMap::from([(2, String::new())]);
    c.get_mut(&1).unwrap().set_peers(&peers);
    assert_eq!(c[&1].peers().keys().copied().collect::<Vec<_>>(), vec![2]);

    // n1 no longer sends to n3: dropped at once, counted as unreachable.
    let before = c[&1].stats().dropped_unreachable;
    c.get_mut(&1).unwrap().send(msg(1, 3, 99));
    assert_eq!(c[&1].stats().dropped_unreachable, before + 1);
    assert!(drain(c.get_mut(&3).unwrap(), Duration::from_millis(300))
        .iter()
        .all(|m| m.from != 1 || m.body != msg(1, 3, 99).body));

    // n3's connection to n1 was closed, and its reconnections are refused.
    eventually("n3's reconnection refused by n1", 5 * SECOND, || {
        c.get_mut(&3).unwrap().send(msg(3, 1, 1));
        c[&1].stats().connections_refused >= 1
    });
    let got = drain(c.get_mut(&1).unwrap(), Duration::from_millis(300));
    assert!(
        got.iter().all(|m| m.from != 3),
        "n1 took from a removed peer: {got:?}"
    );
    // n2 is unaffected.
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
}

#[test]
fn a_changed_address_is_followed() {
    let mut c = cluster(&[1, 2], None);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    // n2 moves: a new transport on another port.
    let addr1 = c[&1].local_addr();
    let mut old = c.remove(&2).unwrap();
    old.shutdown();
    let t2 =
        TcpTransport::start_on(runtime(), config(2, BTreeMap::from([(1, addr1)])), bind()).unwrap();
    let peers = addrs(&[(2, &t2)]);
    c.get_mut(&1).unwrap().set_peers(&peers);
    assert_eq!(c[&1].peers()[&2], t2.local_addr().to_string());
    c.insert(2, t2);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
}

#[test]
fn an_empty_peer_set_changes_nothing() {
    let mut c = cluster(&[1, 2], None);
    c.get_mut(&1).unwrap().set_peers(&BTreeMap::new());
    c.get_mut(&1)
        .unwrap()
        .set_peers(&BTreeMap::from([(1, "ignored:1".to_string())]));
    assert_eq!(c[&1].peers().len(), 1);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
}

#[test]
fn set_peers_is_bounded() {
    let mut c = cluster(&[1], None);
    let t = c.get_mut(&1).unwrap();
    // Too many peers: the first PEERS_MAX are taken (unreachable addresses: their writers
    // just back off).
    let many: BTreeMap<u64, String> = (2..PEERS_MAX as u64 + 100)
        .map(|id| (id, free_addr().to_string()))
        .collect();
    t.set_peers(&many);
    assert_eq!(t.peers().len(), PEERS_MAX);
    // An oversized address is ignored (the peer has no address: nothing is sent to it).
    let long = BTreeMap::from([(5_000, "x".repeat(PEER_ADDR_BYTES_MAX + 1))]);
    t.set_peers(&long);
    assert!(t.peers().is_empty(), "{:?}", t.peers().len());
    t.shutdown();
}

#[test]
fn an_unresolvable_address_only_fails_to_connect() {
    let mut c = cluster(&[1], None);
    let t = c.get_mut(&1).unwrap();
    t.set_peers(&BTreeMap::from([(2, "no-such-host.invalid:1".to_string())]));
    t.send(msg(1, 2, 1));
    eventually("a connect failure counted", 10 * SECOND, || {
        t.stats().connect_failures >= 1
    });
}

/// Regression (issue 16, the leader-transfer bug): a joining node dials the members it was
/// started with before they know it, so they refuse its connections. Its writers did not
/// notice (a one-way connection learns of a close only when a write fails), and the first
/// message each sent later went into the closed socket: a transfer target lost the vote
/// answers of every other new member, its election failed and the old leader was re-elected.
/// A writer now watches its socket: a refused connection is redialled at once, so that the
/// first message sent after the peer learns of us arrives.
#[test]
fn a_connection_refused_before_the_peer_knows_us_is_redialled_before_the_next_message() {
    for rt in ["smol", "tokio"] {
        let t1 = bind();
        let t1_addr = t1.local_addr().unwrap();
        // n1 knows only n3 (which never runs): it refuses n2's first connections.
        let mut n1 = match rt {
            "smol" => {
                TcpTransport::start_on(runtime(), config(1, BTreeMap::from([(3, free_addr())])), t1)
            }
            _ => TcpTransport::start_on(tokio(), config(1, BTreeMap::from([(3, free_addr())])), t1),
        }
        .unwrap();
        let n2_config = config(2, BTreeMap::from([(1, t1_addr)]));
        let mut n2 = match rt {
            "smol" => TcpTransport::start_on(runtime(), n2_config, bind()),
            _ => TcpTransport::start_on(tokio(), n2_config, bind()),
        }
        .unwrap();
        eventually("n1 refuses n2", 5 * SECOND, || {
            n1.stats().connections_refused >= 1
        });
        // n1 learns of n2 (the configuration that adds it); n2's writer redials meanwhile.
        n1.set_peers(&BTreeMap::from([(2, n2.local_addr().to_string())]));
        eventually("n2 reconnected to n1", 5 * SECOND, || {
            n1.stats().connections_accepted >= 1
        });
        // One message only: it must not go into the refused connection.
        n2.send(msg(2, 1, 7));
        let got = recv_timeout(&mut n1, 2 * SECOND);
        assert_eq!(
            got.as_ref().map(|m| &m.body),
            Some(&msg(2, 1, 7).body),
            "{rt}: the first message after the refusal was lost: {:?}",
            n2.stats()
        );
    }
}
