//! Transports on 127.0.0.1 exchanging messages: two and three nodes (on smol and on tokio), a
//! late peer, a peer that restarts on the same port, a peer that stops reading, the fault
//! filter, bounded queues and shutdown.

mod common;

use common::*;
use raftkv_raft::{Body, LogId, Message, Transport};
use raftkv_transport_tcp::{FaultFilter, TcpTransport};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn two_transports_exchange_messages_both_ways() {
    exchange_both_ways(cluster(&[1, 2], None));
}

#[test]
fn two_transports_exchange_messages_both_ways_on_tokio() {
    exchange_both_ways(cluster_on(tokio(), &[1, 2], None));
}

fn exchange_both_ways(mut c: BTreeMap<u64, TcpTransport>) {
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
    drain(c.get_mut(&1).unwrap(), Duration::from_millis(50));
    drain(c.get_mut(&2).unwrap(), Duration::from_millis(50));
    // Connected: a burst arrives complete and in order.
    for seq in 0..500 {
        c.get_mut(&1).unwrap().send(msg(1, 2, seq));
        c.get_mut(&2).unwrap().send(msg(2, 1, seq));
    }
    for (to, from) in [(2, 1), (1, 2)] {
        let got = drain(c.get_mut(&to).unwrap(), Duration::from_millis(500));
        let expected: Vec<_> = (0..500).map(|seq| msg(from, to, seq)).collect();
        assert_eq!(got, expected, "n{from} → n{to}");
    }
    let stats = c[&1].stats();
    assert!(stats.frames_sent >= 501, "{stats:?}");
    assert!(stats.frames_received >= 501, "{stats:?}");
    assert_eq!(stats.connections_accepted, 1, "{stats:?}");
    assert_eq!(stats.connections_refused, 0, "{stats:?}");
}

#[test]
fn three_transports_exchange_messages_between_every_pair() {
    let mut c = cluster(&[1, 2, 3], None);
    for from in 1..=3 {
        for to in 1..=3 {
            if from != to {
                send_until_received(&mut c, from, to, 5 * SECOND);
            }
        }
    }
    for t in c.values_mut() {
        drain(t, Duration::from_millis(50));
    }
    for from in 1..=3 {
        for to in (1..=3).filter(|&to| to != from) {
            for seq in 0..20 {
                c.get_mut(&from).unwrap().send(msg(from, to, seq));
            }
        }
    }
    for to in 1..=3 {
        let got = drain(c.get_mut(&to).unwrap(), Duration::from_millis(300));
        for from in (1..=3).filter(|&from| from != to) {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|m| m.from == from)
                .map(|m| match m.body {
                    raftkv_raft::Body::Heartbeat { read_seq, .. } => read_seq,
                    _ => unreachable!(),
                })
                .collect();
            assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "n{from} → n{to}");
        }
    }
}

#[test]
fn a_peer_that_starts_late_is_reached() {
    let addr2 = free_addr();
    let listener1 = bind();
    let addr1 = listener1.local_addr().unwrap();
    let mut t1 = TcpTransport::start_on(
        runtime(),
        config(1, BTreeMap::from([(2, addr2)])),
        listener1,
    )
    .unwrap();
    // Nobody listens yet: n1's writer fails and backs off.
    for seq in 0..20 {
        t1.send(msg(1, 2, seq));
        std::thread::sleep(Duration::from_millis(15));
    }
    let stats = t1.stats();
    assert!(stats.connect_failures >= 2, "{stats:?}");
    assert_eq!(stats.frames_sent, 0);

    let listener2 = TcpListener::bind(addr2).expect("rebind the released port");
    let t2 = TcpTransport::start_on(
        runtime(),
        config(2, BTreeMap::from([(1, addr1)])),
        listener2,
    )
    .unwrap();
    let mut c = BTreeMap::from([(1, t1), (2, t2)]);
    // Backoff is capped at 200 ms in tests.
    let took = send_until_received(&mut c, 1, 2, 5 * SECOND);
    assert!(took < 2 * SECOND, "reached after {took:?}");
    send_until_received(&mut c, 2, 1, 5 * SECOND);
}

#[test]
fn a_peer_that_restarts_on_the_same_port_is_reached_again() {
    let mut c = cluster(&[1, 2], None);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
    let addr2 = c[&2].local_addr();
    let addr1 = c[&1].local_addr();

    let mut old = c.remove(&2).unwrap();
    old.shutdown();
    drop(old);
    // n1 notices the loss when it writes; what it sends meanwhile is lost (Raft retransmits).
    for seq in 0..10 {
        c.get_mut(&1).unwrap().send(msg(1, 2, seq));
        std::thread::sleep(Duration::from_millis(10));
    }
    let listener = TcpListener::bind(addr2).expect("rebind n2's port");
    let t2 = TcpTransport::start_on(runtime(), config(2, BTreeMap::from([(1, addr1)])), listener)
        .unwrap();
    c.insert(2, t2);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
    let stats = c[&1].stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    // n2's new connection to n1 replaced the old one.
    assert!(stats.connections_accepted >= 2, "{stats:?}");
}

/// A snapshot chunk of `data` from `from` to `to`: a large message.
fn chunk(from: u64, to: u64, offset: u64, data: bytes::Bytes) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: Body::InstallSnapshot {
            last: LogId::new(1, 1),
            membership: Default::default(),
            offset,
            data,
            done: false,
            len: 1 << 20,
            crc32c: 0,
        },
    }
}

#[test]
fn a_peer_that_stops_reading_holds_up_only_its_own_queue() {
    // n3 is a listener that never accepts: the OS completes the connection and buffers what
    // it can, then n1's writes to it stall.
    let stalled = bind();
    let (l1, l2) = (bind(), bind());
    let (addr1, addr2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let mut config1 = config(
        1,
        BTreeMap::from([(2, addr2), (3, stalled.local_addr().unwrap())]),
    );
    config1.outbound_queue_len_max = 16;
    config1.write_timeout = Duration::from_millis(300);
    let t1 = TcpTransport::start_on(tokio(), config1, l1).unwrap();
    let t2 = TcpTransport::start_on(tokio(), config(2, BTreeMap::from([(1, addr1)])), l2).unwrap();
    let mut c = BTreeMap::from([(1, t1), (2, t2)]);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    drain(c.get_mut(&2).unwrap(), Duration::from_millis(50));

    // 32 MiB for n3, far beyond what the socket buffers take; a heartbeat to n2 meanwhile.
    let data = bytes::Bytes::from(vec![7u8; 256 << 10]);
    let mut slowest_send = Duration::ZERO;
    let mut slowest_delivery = Duration::ZERO;
    for seq in 0..128 {
        let start = Instant::now();
        c.get_mut(&1).unwrap().send(chunk(1, 3, seq, data.clone()));
        c.get_mut(&1).unwrap().send(msg(1, 2, seq));
        slowest_send = slowest_send.max(start.elapsed());
        let got = recv_timeout(c.get_mut(&2).unwrap(), 2 * SECOND);
        assert_eq!(got, Some(msg(1, 2, seq)), "n1 → n2 while n3 stalls");
        slowest_delivery = slowest_delivery.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        slowest_send < Duration::from_millis(50),
        "send blocked for {slowest_send:?}"
    );
    assert!(
        slowest_delivery < Duration::from_millis(500),
        "n1 → n2 held up for {slowest_delivery:?}"
    );

    // The stalled write times out: the connection is dropped with what it carried, and the
    // writer connects again.
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let stats = c[&1].stats();
        if stats.reconnects >= 1 && stats.dropped_unreachable >= 1 {
            assert!(stats.dropped_queue_full >= 1, "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no write timeout: {stats:?}");
        c.get_mut(&1).unwrap().send(chunk(1, 3, 0, data.clone()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    for t in c.values_mut() {
        t.shutdown();
    }
    assert!(
        start.elapsed() < SECOND,
        "shutdown took {:?}",
        start.elapsed()
    );
}

/// Sends `n` messages `from → to` and returns how many arrive within `window`.
fn count_delivered(
    c: &mut BTreeMap<u64, TcpTransport>,
    from: u64,
    to: u64,
    n: u64,
    window: Duration,
) -> usize {
    for seq in 0..n {
        c.get_mut(&from).unwrap().send(msg(from, to, seq));
    }
    drain(c.get_mut(&to).unwrap(), window).len()
}

fn connected_pair(filter: &FaultFilter) -> BTreeMap<u64, TcpTransport> {
    let mut c = cluster(&[1, 2], Some(filter.clone()));
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    send_until_received(&mut c, 2, 1, 5 * SECOND);
    for t in c.values_mut() {
        drain(t, Duration::from_millis(50));
    }
    c
}

#[test]
fn a_blocked_direction_drops_only_that_direction() {
    let filter = FaultFilter::new(3);
    let mut c = connected_pair(&filter);
    filter.block(1, 2);
    let window = Duration::from_millis(200);
    assert_eq!(count_delivered(&mut c, 1, 2, 10, window), 0);
    assert_eq!(count_delivered(&mut c, 2, 1, 10, window), 10);
    assert_eq!(c[&1].stats().dropped_filter, 10);
    filter.unblock(1, 2);
    assert_eq!(count_delivered(&mut c, 1, 2, 10, window), 10);
}

#[test]
fn drop_probability_one_drops_everything_and_zero_drops_nothing() {
    let filter = FaultFilter::new(4);
    let mut c = connected_pair(&filter);
    let window = Duration::from_millis(200);
    filter.set_drop_probability(1, 2, 1.0);
    assert_eq!(count_delivered(&mut c, 1, 2, 100, window), 0);
    assert_eq!(c[&1].stats().dropped_filter, 100);
    filter.set_drop_probability(1, 2, 0.0);
    assert_eq!(count_delivered(&mut c, 1, 2, 100, window), 100);
    filter.set_drop_probability(1, 2, 0.5);
    let delivered = count_delivered(&mut c, 1, 2, 200, window);
    assert!((40..160).contains(&delivered), "{delivered} of 200");
}

#[test]
fn a_delay_holds_messages_back_without_blocking_other_links() {
    let filter = FaultFilter::new(5);
    let mut c = cluster(&[1, 2, 3], Some(filter.clone()));
    for (from, to) in [(1, 2), (1, 3)] {
        send_until_received(&mut c, from, to, 5 * SECOND);
    }
    for t in c.values_mut() {
        drain(t, Duration::from_millis(50));
    }
    filter.set_delay_ms(1, 2, 500, 500);
    let start = Instant::now();
    c.get_mut(&1).unwrap().send(msg(1, 2, 1));
    c.get_mut(&1).unwrap().send(msg(1, 3, 2));
    // The undelayed link is not held up by the delayed one.
    let m = recv_timeout(c.get_mut(&3).unwrap(), SECOND).expect("n1 → n3");
    assert_eq!(m, msg(1, 3, 2));
    assert!(start.elapsed() < Duration::from_millis(400));
    let m = recv_timeout(c.get_mut(&2).unwrap(), 2 * SECOND).expect("n1 → n2");
    assert_eq!(m, msg(1, 2, 1));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500), "delayed only {took:?}");
    // Heal removes the delay.
    filter.heal();
    let start = Instant::now();
    c.get_mut(&1).unwrap().send(msg(1, 2, 3));
    recv_timeout(c.get_mut(&2).unwrap(), SECOND).expect("n1 → n2 after heal");
    assert!(start.elapsed() < Duration::from_millis(400));
}

#[test]
fn isolate_and_block_all_from_then_heal() {
    let filter = FaultFilter::new(6);
    let mut c = connected_pair(&filter);
    let window = Duration::from_millis(150);
    filter.isolate(2);
    assert_eq!(count_delivered(&mut c, 1, 2, 5, window), 0);
    assert_eq!(count_delivered(&mut c, 2, 1, 5, window), 0);
    filter.heal();
    filter.block_all_from(1);
    assert_eq!(count_delivered(&mut c, 1, 2, 5, window), 0);
    assert_eq!(count_delivered(&mut c, 2, 1, 5, window), 5);
    filter.heal();
    assert_eq!(count_delivered(&mut c, 1, 2, 5, window), 5);
    assert_eq!(count_delivered(&mut c, 2, 1, 5, window), 5);
}

#[test]
fn a_dead_peer_never_blocks_send_and_its_queue_stays_bounded() {
    let listener = bind();
    let mut config = config(1, BTreeMap::from([(2, free_addr())]));
    config.outbound_queue_len_max = 8;
    let mut t = TcpTransport::start_on(runtime(), config, listener).unwrap();
    let start = Instant::now();
    for seq in 0..100_000 {
        t.send(msg(1, 2, seq));
    }
    assert!(
        start.elapsed() < SECOND,
        "send blocked: {:?}",
        start.elapsed()
    );
    let stats = t.stats();
    // Everything beyond the 8 queued was refused at once (or dropped as unreachable).
    assert!(
        stats.dropped_queue_full + stats.dropped_unreachable >= 100_000 - 8,
        "{stats:?}"
    );
    // A message to an unknown node is dropped, not queued.
    t.send(msg(1, 9, 0));
    assert!(t.stats().dropped_unreachable >= 1);
}

#[test]
fn after_shutdown_recv_returns_none_and_send_is_dropped() {
    let mut c = cluster(&[1, 2], None);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    let mut t1 = c.remove(&1).unwrap();
    let start = Instant::now();
    t1.shutdown();
    assert!(
        start.elapsed() < SECOND,
        "shutdown took {:?}",
        start.elapsed()
    );
    assert!(t1.is_shut_down());
    assert_eq!(futures::executor::block_on(t1.recv()), None);
    t1.send(msg(1, 2, 0));
    t1.shutdown(); // idempotent
                   // n2 keeps running and notices n1 is gone (its writer fails to reconnect).
    c.get_mut(&2).unwrap().send(msg(2, 1, 0));
}

#[test]
fn recv_wakes_an_async_task() {
    let mut c = cluster(&[1, 2], None);
    send_until_received(&mut c, 1, 2, 5 * SECOND);
    drain(c.get_mut(&2).unwrap(), Duration::from_millis(50));
    let mut t2 = c.remove(&2).unwrap();
    let waiter = std::thread::spawn(move || {
        let m = futures::executor::block_on(t2.recv());
        (m, t2)
    });
    std::thread::sleep(Duration::from_millis(50));
    c.get_mut(&1).unwrap().send(msg(1, 2, 77));
    let (m, _t2) = waiter.join().unwrap();
    assert_eq!(m, Some(msg(1, 2, 77)));
}

#[test]
fn inbound_connections_beyond_the_bound_are_refused() {
    let listener = bind();
    let addr = listener.local_addr().unwrap();
    let mut config = config(1, BTreeMap::from([(2, free_addr())]));
    config.inbound_connections_max = 2;
    config.handshake_timeout = 2 * SECOND;
    let t = TcpTransport::start_on(runtime(), config, listener).unwrap();
    // Two silent connections hold both slots until their handshake times out.
    let _held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = std::net::TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(SECOND)).unwrap();
    use std::io::Read;
    let closed = match third.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "the third connection was not refused");
    assert_eq!(t.stats().connections_refused, 1);
}
