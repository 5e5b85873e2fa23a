//! Bad input on a real socket: each kind closes only that connection, with exactly one
//! `warn!` line, and the node keeps delivering between good peers. One test in this binary,
//! so that the process-wide log counter, thread count and descriptor count see nothing else.

mod common;

use common::*;
use raftkv_raft::{Body, Message, NetRuntime, Runtime, Transport, WIRE_VALUE_MAX};
use raftkv_transport_tcp::{Codec, Frame, Hello, TcpTransport};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

static WARNINGS: AtomicUsize = AtomicUsize::new(0);
static WARNING_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A minimal subscriber that counts (and keeps) `warn!` lines.
struct WarnCounter;

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for WarnCounter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::WARN || *metadata.level() == Level::ERROR
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(format!("{}", event.metadata().level()));
        event.record(&mut line);
        eprintln!("{}", line.0);
        WARNING_LINES.lock().unwrap().push(line.0);
        WARNINGS.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors (sockets included) of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Starts what the runtime starts once per process (smol's executor thread, its reactor and
/// their descriptors), so that the counts before and after see only the transports.
fn warm_up_runtime() {
    let runtime = runtime();
    let (tx, rx) = std::sync::mpsc::channel();
    let sleeper = runtime.clone();
    runtime.spawn(async move {
        sleeper.sleep(Duration::from_millis(1)).await;
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the runtime runs tasks");
    let listener = bind();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    drop(
        runtime
            .register(stream)
            .expect("the reactor takes a socket"),
    );
}

fn frame(frame: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    Codec::default().encode(frame, &mut buf).unwrap();
    buf
}

fn hello(cluster_id: u64, node_id: u64) -> Vec<u8> {
    frame(&Frame::Hello(Hello::new(cluster_id, node_id)))
}

/// Waits until the node closes `s` (EOF or reset); panics if it stays open.
fn assert_closed_by_node(s: &mut TcpStream, case: &str) {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => panic!("{case}: the node wrote to an inbound connection"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{case}: the connection is still open")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return, // reset
        }
    }
}

fn assert_open(s: &mut TcpStream, case: &str) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    match s.read(&mut [0u8; 1]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{case}: expected the connection to stay open, got {other:?}"),
    }
}

fn wait_for_warnings(expected: usize, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while WARNINGS.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Give a second line, if there were one, the time to show up.
    std::thread::sleep(Duration::from_millis(30));
    let got = WARNINGS.load(Ordering::SeqCst);
    assert_eq!(
        got,
        expected,
        "{case}: expected exactly one warning; lines: {:#?}",
        WARNING_LINES.lock().unwrap()
    );
}

fn raft(from: u64, to: u64, term: u64) -> Vec<u8> {
    frame(&Frame::Raft(Message {
        from,
        to,
        term,
        body: Body::VoteResponse { granted: true },
    }))
}

/// One way of misbehaving, as the bytes written (then optionally half-closing).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    close_after_write: bool,
}

fn cases() -> Vec<Case> {
    let after_hello = |tail: &[u8]| [hello(CLUSTER, 3), tail.to_vec()].concat();
    let mut wrong_magic = Hello::new(CLUSTER, 3);
    wrong_magic.magic = *b"GET ";
    let mut wrong_version = Hello::new(CLUSTER, 3);
    wrong_version.protocol_version = 99;
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[7; 10]);
    let garbage_body = [8u32.to_be_bytes().to_vec(), vec![0xff; 8]].concat();
    let case = |name, bytes, close_after_write| Case {
        name,
        bytes,
        close_after_write,
    };
    let mut rng = raftkv_raft::Rng::new(99);
    vec![
        case(
            "garbage bytes",
            (0..64).map(|_| rng.next_u64() as u8).collect(),
            false,
        ),
        case("an HTTP request", b"GET / HTTP/1.1\r\n\r\n".to_vec(), false),
        case("a wrong cluster id", hello(CLUSTER + 1, 3), false),
        case(
            "a wrong magic",
            frame(&Frame::Hello(wrong_magic.clone())),
            false,
        ),
        case(
            "a wrong protocol version",
            frame(&Frame::Hello(wrong_version)),
            false,
        ),
        case("an unknown node id", hello(CLUSTER, 9), false),
        case("a Raft frame before the hello", raft(3, 1, 1), false),
        case(
            "an oversized length prefix before the hello",
            u32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        case(
            "a truncated hello, then close",
            hello(CLUSTER, 3)[..7].to_vec(),
            true,
        ),
        case("a silent connection", Vec::new(), false),
        case("a close before any byte", Vec::new(), true),
        case(
            "an oversized length prefix after the hello",
            after_hello(&(2u32 << 20).to_be_bytes()),
            false,
        ),
        case(
            "a truncated frame after the hello, then close",
            after_hello(&truncated),
            true,
        ),
        case(
            "a garbage body after the hello",
            after_hello(&garbage_body),
            false,
        ),
        case("a second hello", after_hello(&hello(CLUSTER, 3)), false),
        // Issue 21 #13: within the byte bound, but more entries than frame_items_max.
        case(
            "more entries than frame_items_max after the hello",
            after_hello(&many_noop_entries(3, 1, ITEMS_MAX + 1)),
            false,
        ),
    ]
}

/// The node's bound on the entries one frame decodes to, in this test.
const ITEMS_MAX: usize = 1_000;

fn many_noop_entries(from: u64, to: u64, n: usize) -> Vec<u8> {
    let entries = (1..=n as u64)
        .map(|index| raftkv_raft::Entry {
            term: 1,
            index,
            payload: raftkv_raft::Payload::Noop,
        })
        .collect();
    frame(&Frame::Raft(Message {
        from,
        to,
        term: 1,
        body: Body::Append {
            base: raftkv_raft::LogId::default(),
            entries,
            commit: 0,
        },
    }))
}

#[test]
fn bad_input_closes_only_that_connection_with_one_log_line() {
    tracing::subscriber::set_global_default(WarnCounter).unwrap();
    warm_up_runtime();
    let threads_before = thread_count();
    let fds_before = fd_count();
    {
        // n1 knows n2 (real) and n3, whose identity the attacker borrows (nothing listens at
        // n3's address).
        let (l1, l2) = (bind(), bind());
        let (addr1, addr2): (SocketAddr, SocketAddr) =
            (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let mut config1 = config(1, BTreeMap::from([(2, addr2), (3, free_addr())]));
        config1.frame_bytes_max = 1 << 20;
        config1.frame_items_max = ITEMS_MAX;
        config1.handshake_timeout = Duration::from_millis(300);
        let t1 = TcpTransport::start_on(runtime(), config1, l1).unwrap();
        let t2 =
            TcpTransport::start_on(runtime(), config(2, BTreeMap::from([(1, addr1)])), l2).unwrap();
        assert!(thread_count() > threads_before);
        let mut c = BTreeMap::from([(1, t1), (2, t2)]);
        send_until_received(&mut c, 1, 2, Duration::from_secs(5));
        send_until_received(&mut c, 2, 1, Duration::from_secs(5));
        for t in c.values_mut() {
            drain(t, Duration::from_millis(50));
        }
        // An established peer connection survives all of it.
        let accepted = c[&1].stats().connections_accepted;

        for (i, case) in cases().into_iter().enumerate() {
            let warnings = WARNINGS.load(Ordering::SeqCst);
            let refused = c[&1].stats().connections_refused;
            let mut s = TcpStream::connect(addr1).unwrap();
            let _ = s.write_all(&case.bytes);
            if case.close_after_write {
                let _ = s.shutdown(Shutdown::Write);
            }
            assert_closed_by_node(&mut s, case.name);
            wait_for_warnings(warnings + 1, case.name);
            assert_eq!(
                c[&1].stats().connections_refused,
                refused + 1,
                "{}",
                case.name
            );
            // The good peers still talk, both ways, on the connections they had.
            for (from, to) in [(1, 2), (2, 1)] {
                let seq = 1000 + i as u64;
                c.get_mut(&from).unwrap().send(msg(from, to, seq));
                let got = recv_timeout(c.get_mut(&to).unwrap(), Duration::from_secs(2));
                assert_eq!(got, Some(msg(from, to, seq)), "after {}", case.name);
            }
        }
        // Only the five attacks that got past the hello were accepted; n2 never reconnected.
        assert_eq!(c[&1].stats().connections_accepted, accepted + 5);
        assert_eq!(c[&2].stats().reconnects, 0);

        // Misaddressed and ill-formed messages are dropped and counted; the connection stays.
        let warnings = WARNINGS.load(Ordering::SeqCst);
        let dropped = c[&1].stats().dropped_inbound;
        let mut s = TcpStream::connect(addr1).unwrap();
        let bytes = [
            hello(CLUSTER, 3),
            raft(2, 1, 1),              // not from the handshake's node
            raft(3, 7, 1),              // not to this node
            raft(3, 1, WIRE_VALUE_MAX), // a term out of range
            raft(3, 1, 5),              // fine
        ]
        .concat();
        s.write_all(&bytes).unwrap();
        let got = recv_timeout(c.get_mut(&1).unwrap(), Duration::from_secs(2)).unwrap();
        assert_eq!((got.from, got.to, got.term), (3, 1, 5));
        assert_eq!(c[&1].stats().dropped_inbound, dropped + 3);
        assert_open(&mut s, "misaddressed messages");
        assert_eq!(WARNINGS.load(Ordering::SeqCst), warnings);
        drop(s);

        for t in c.values_mut() {
            t.shutdown();
            assert_eq!(futures::executor::block_on(t.recv()), None);
        }
    }
    // Every thread ended, and every task: their sockets are closed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while (thread_count(), fd_count()) != (threads_before, fds_before) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(thread_count(), threads_before, "threads leaked");
    assert_eq!(fd_count(), fds_before, "sockets leaked");
}
