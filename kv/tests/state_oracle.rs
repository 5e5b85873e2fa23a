//! `KvStateMachine` against a dumb oracle (a `BTreeMap` and a per-session table), with
//! snapshot/restore as "reboot" and retries of the last request; plus the session rules.

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_kv::state::{Command, KvError, KvStateMachine, Op, Outcome, SessionConfig};
use raftkv_raft::StateMachine;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Action {
    Register,
    Request {
        session: usize,
        op: u8,
        key: u8,
        value: u8,
        version: Option<u64>,
    },
    Retry {
        session: usize,
    },
    Reboot,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => Just(Action::Register),
        8 => (0..4usize, 0..4u8, 0..4u8, any::<u8>(), proptest::option::of(0..4u64)).prop_map(
            |(session, op, key, value, version)| Action::Request { session, op, key, value, version }
        ),
        2 => (0..4usize).prop_map(|session| Action::Retry { session }),
        1 => Just(Action::Reboot),
    ]
}

/// The oracle: the 6.5840 rules written as plainly as possible.
#[derive(Default)]
struct Oracle {
    data: BTreeMap<Bytes, (Bytes, u64)>,
}

impl Oracle {
    fn run(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Get { key } => match self.data.get(key) {
                Some((v, n)) => Outcome::Value {
                    value: v.clone(),
                    version: *n,
                },
                None => Outcome::Err(KvError::NoKey),
            },
            Op::Put {
                key,
                value,
                version,
            } => {
                let current = self.data.get(key).map_or(0, |(_, n)| *n);
                if let Some(v) = version {
                    if current == 0 && *v > 0 {
                        return Outcome::Err(KvError::NoKey);
                    }
                    if *v != current {
                        return Outcome::Err(KvError::Version { current });
                    }
                }
                self.data.insert(key.clone(), (value.clone(), current + 1));
                Outcome::Written {
                    version: current + 1,
                }
            }
            Op::Append { key, value } => {
                let (old, n) = self.data.get(key).cloned().unwrap_or_default();
                let joined = Bytes::from([old.as_ref(), value.as_ref()].concat());
                self.data.insert(key.clone(), (joined, n + 1));
                Outcome::Written { version: n + 1 }
            }
            Op::Delete { key } => match self.data.remove(key) {
                Some(_) => Outcome::Deleted,
                None => Outcome::Err(KvError::NoKey),
            },
        }
    }
}

fn make_op(op: u8, key: u8, value: u8, version: Option<u64>) -> Op {
    let key = Bytes::from(vec![b'k', key]);
    let value = Bytes::from(vec![value]);
    match op {
        0 => Op::Get { key },
        1 => Op::Put {
            key,
            value,
            version,
        },
        2 => Op::Append { key, value },
        _ => Op::Delete { key },
    }
}

/// Per client: session id, next seq, last request and the outcome it got.
type Client = (u64, u64, Option<(Command, Outcome)>);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn kv_state_machine_matches_the_oracle(actions in proptest::collection::vec(action(), 1..120)) {
        let mut sm = KvStateMachine::new(SessionConfig::default());
        let mut oracle = Oracle::default();
        let mut clients: Vec<Client> = Vec::new();
        let mut index = 0u64;
        for a in actions {
            match a {
                Action::Register => {
                    index += 1;
                    let out = sm.apply(index, &Command::Register { now_ms: index }.encode());
                    prop_assert_eq!(out, Outcome::Registered { session: index });
                    clients.push((index, 1, None));
                }
                Action::Request { session, op, key, value, version } => {
                    let Some(c) = clients.get_mut(session) else { continue };
                    let op = make_op(op, key, value, version);
                    let cmd = Command::Request { session: c.0, seq: c.1, now_ms: index, op: op.clone() };
                    index += 1;
                    let out = sm.apply(index, &cmd.encode());
                    prop_assert_eq!(&out, &oracle.run(&op));
                    c.1 += 1;
                    c.2 = Some((cmd, out));
                }
                Action::Retry { session } => {
                    let Some((_, _, Some((cmd, first)))) = clients.get(session).cloned() else { continue };
                    index += 1;
                    let again = sm.apply(index, &cmd.encode());
                    // thesis §6.3: a retried write is answered from the table, not re-applied;
                    // a retried read is served again (reads are idempotent).
                    match &cmd {
                        Command::Request { op: get @ Op::Get { .. }, .. } => prop_assert_eq!(again, oracle.run(get)),
                        _ => prop_assert_eq!(again, first),
                    }
                }
                Action::Reboot => {
                    let snapshot = sm.snapshot();
                    let mut fresh = KvStateMachine::default();
                    fresh.restore(&snapshot).map_err(TestCaseError::fail)?;
                    prop_assert_eq!(&fresh, &sm);
                    sm = fresh;
                }
            }
            sm.check_invariants();
        }
        for (key, (value, version)) in &oracle.data {
            prop_assert_eq!(sm.get(key), Outcome::Value { value: value.clone(), version: *version });
        }
        prop_assert_eq!(sm.len(), oracle.data.len());
    }
}

fn request(session: u64, seq: u64, now_ms: u64, op: Op) -> Bytes {
    Command::Request {
        session,
        seq,
        now_ms,
        op,
    }
    .encode()
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        version: None,
    }
}

#[test]
fn an_idle_session_expires_on_every_replica_alike() {
    let config = SessionConfig {
        ttl_ms: 1_000,
        sessions_max: 10,
    };
    let mut a = KvStateMachine::new(config);
    a.apply(1, &Command::Register { now_ms: 0 }.encode());
    a.apply(2, &Command::Register { now_ms: 500 }.encode());
    let mut b = a.clone();
    // Time passes in the log (another client's traffic), past session 1's TTL.
    let log = [
        request(2, 1, 1_200, put("x", "1")),
        request(1, 1, 1_300, put("x", "2")),
    ];
    let outs_a: Vec<Outcome> = log
        .iter()
        .enumerate()
        .map(|(i, c)| a.apply(3 + i as u64, c))
        .collect();
    let outs_b: Vec<Outcome> = log
        .iter()
        .enumerate()
        .map(|(i, c)| b.apply(3 + i as u64, c))
        .collect();
    assert_eq!(outs_a, outs_b, "the same decision on every replica");
    assert_eq!(outs_a[1], Outcome::Err(KvError::SessionExpired));
    assert_eq!(
        a.get(b"x"),
        Outcome::Value {
            value: Bytes::from_static(b"1"),
            version: 1
        },
        "never applied"
    );
}

#[test]
fn the_session_table_is_bounded_least_recently_active_first() {
    let mut sm = KvStateMachine::new(SessionConfig {
        ttl_ms: u64::MAX / 2,
        sessions_max: 2,
    });
    sm.apply(1, &Command::Register { now_ms: 1 }.encode());
    sm.apply(2, &Command::Register { now_ms: 2 }.encode());
    sm.apply(3, &request(1, 1, 3, put("a", "1"))); // session 1 is now the most recent
    sm.apply(4, &Command::Register { now_ms: 4 }.encode()); // evicts session 2
    assert_eq!(sm.sessions(), 2);
    assert_eq!(
        sm.apply(5, &request(2, 1, 5, put("b", "1"))),
        Outcome::Err(KvError::SessionExpired)
    );
    assert_eq!(
        sm.apply(6, &request(1, 2, 6, put("a", "2"))),
        Outcome::Written { version: 2 }
    );
    sm.check_invariants();
}

#[test]
fn a_retry_of_a_conditional_put_is_answered_not_reapplied() {
    let mut sm = KvStateMachine::default();
    sm.apply(1, &Command::Register { now_ms: 0 }.encode());
    let cput = Op::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        version: Some(0),
    };
    assert_eq!(
        sm.apply(2, &request(1, 1, 0, cput.clone())),
        Outcome::Written { version: 1 }
    );
    // The same request again (the reply was lost): the same answer, not a false Version error.
    assert_eq!(
        sm.apply(3, &request(1, 1, 0, cput)),
        Outcome::Written { version: 1 }
    );
    assert_eq!(
        sm.get(b"k"),
        Outcome::Value {
            value: Bytes::from_static(b"v"),
            version: 1
        }
    );
}

#[test]
fn malformed_commands_are_an_error_on_every_replica() {
    let mut sm = KvStateMachine::default();
    assert_eq!(
        sm.apply(1, b"\xff\xff\xff garbage"),
        Outcome::Err(KvError::Malformed)
    );
    assert_eq!(sm.query(b"\xff"), Outcome::Err(KvError::Malformed));
}
