//! Exactly-once changes when a change is delivered twice and its session expires between the
//! copies (issue 21 #12, found again in the controller): the late copy must not be taken for
//! "never applied", or the Clerk sends it again and it is applied twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkv_kv::clerk::{CallError, ClerkConfig, Connector};
use raftkv_kv::state::SessionConfig;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_shard::clerk::{ControllerClerk, CtrlClerkError};
use raftkv_shard::protocol::{CtrlReply, CtrlRequestBody};
use raftkv_shard::state::{Command, CtrlOp, Outcome};
use raftkv_shard::{ControllerConfig, ControllerStateMachine, CtrlError};

const TTL_MS: u64 = 1_000;

fn controller() -> ControllerStateMachine {
    ControllerStateMachine::new(ControllerConfig {
        sessions: SessionConfig {
            ttl_ms: TTL_MS,
            sessions_max: 4,
        },
        ..ControllerConfig::with_shards(4)
    })
    .unwrap()
}

/// A one-node controller in process whose network delivers the first change twice: once at
/// once, and once more after the session has been idle past its TTL. The Clerk sees the
/// second copy's answer.
struct DuplicatingOnce {
    state: Arc<Mutex<Node>>,
}

struct Node {
    sm: ControllerStateMachine,
    index: u64,
    now_ms: u64,
    duplicated: bool,
}

impl Node {
    fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        self.sm.apply_command(self.index, command)
    }
}

impl Connector<CtrlRequestBody, CtrlReply> for DuplicatingOnce {
    async fn call(&self, addr: &str, body: CtrlRequestBody) -> Result<CtrlReply, CallError> {
        let mut node = self.state.lock().unwrap();
        node.now_ms += 1;
        let now_ms = node.now_ms;
        let outcome = match body {
            CtrlRequestBody::Register => node.apply(Command::Register { now_ms }),
            CtrlRequestBody::Change { session, seq, op } => {
                let request = |now_ms| Command::Request {
                    session,
                    seq,
                    now_ms,
                    op: op.clone(),
                };
                let first = node.apply(request(now_ms));
                if node.duplicated {
                    first
                } else {
                    node.duplicated = true;
                    node.now_ms += TTL_MS + 1;
                    let late = node.now_ms;
                    node.apply(request(late))
                }
            }
            CtrlRequestBody::Query { num } => Outcome::Config(node.sm.query(num)),
            CtrlRequestBody::Status => {
                return Err(CallError::Unreachable {
                    addr: addr.into(),
                    reason: std::io::Error::other("no status").into(),
                })
            }
        };
        Ok(CtrlReply::Done(outcome))
    }
}

#[test]
fn duplicated_change_delivered_after_its_session_expired_is_never_applied_twice() {
    let mut sm = controller();
    sm.change(CtrlOp::Join {
        groups: BTreeMap::from([(1, vec!["a".to_owned()]), (2, vec!["b".to_owned()])]),
    })
    .unwrap();
    let before = sm.latest().num;
    // Shard 0 moves between the two groups on each apply: a second apply makes a second config.
    let target = if sm.latest().shards[0] == 1 { 2 } else { 1 };
    let state = Arc::new(Mutex::new(Node {
        sm,
        index: 10,
        now_ms: 0,
        duplicated: false,
    }));
    let connector = DuplicatingOnce {
        state: state.clone(),
    };
    let config = ClerkConfig {
        timeout: Duration::from_secs(2),
        ..ClerkConfig::default()
    };
    let mut clerk = ControllerClerk::new(SmolRuntime::new(), connector, vec!["n1".into()], config);
    let result = futures::executor::block_on(clerk.move_shard(0, target));
    assert_eq!(
        result,
        Err(CtrlClerkError::MaybeApplied),
        "the late copy's outcome is unknown: not an error, not a retry"
    );
    let node: MutexGuard<Node> = state.lock().unwrap();
    assert_eq!(
        node.sm.latest().num,
        before + 1,
        "the change was applied exactly once"
    );
    node.sm.check_invariants();
}

/// The state machine's half of the protection: a late copy of a change applied before its
/// session expired is answered "outcome forgotten", and one never applied "session expired".
#[test]
fn late_copy_of_a_change_applied_before_session_expiry_is_answered_forgotten() {
    let mut sm = controller();
    sm.change(CtrlOp::Join {
        groups: BTreeMap::from([(1, vec!["a".to_owned()])]),
    })
    .unwrap();
    let Outcome::Registered { session } = sm.apply_command(1, Command::Register { now_ms: 0 })
    else {
        panic!("register")
    };
    let mv = |seq, now_ms| Command::Request {
        session,
        seq,
        now_ms,
        op: CtrlOp::Move { shard: 0, gid: 1 },
    };
    assert_eq!(sm.apply_command(2, mv(1, 10)), Outcome::Changed { num: 2 });
    let late = 10 + TTL_MS + 1;
    assert_eq!(
        sm.apply_command(3, mv(1, late)),
        Outcome::Err(CtrlError::Forgotten)
    );
    assert_eq!(
        sm.apply_command(4, mv(2, late)),
        Outcome::Err(CtrlError::SessionExpired),
        "seq 2 was never applied: it may be sent again under a new session"
    );
    assert_eq!(sm.latest().num, 2);
    sm.check_invariants();
}
