//! A store sent in parts (a migrating shard): `KvStateMachine::piece` cuts it into bounded runs
//! of keys, the session table with the last, and `absorb` puts them together again.

use bytes::Bytes;
use raftkv_kv::state::{KvStateMachine, Op, Outcome, SessionConfig};

fn store(keys: usize) -> KvStateMachine {
    let mut sm = KvStateMachine::new(SessionConfig::default());
    for i in 0..keys {
        let op = Op::Put {
            key: Bytes::from(format!("k{i:05}")),
            value: Bytes::from(vec![b'v'; 50]),
            version: None,
        };
        let out = sm.apply_open_request(7, i as u64 + 1, 0, op);
        assert!(matches!(out, Outcome::Written { .. }));
    }
    sm
}

#[test]
fn pieces_are_bounded_and_absorb_back_into_the_same_store() {
    let sm = store(1000);
    let mut whole = KvStateMachine::new(SessionConfig::default());
    let (mut after, mut pieces) = (None::<Bytes>, 0);
    loop {
        let (piece, last) = sm.piece(after.as_deref(), 1000);
        // At least one key, then within the bound.
        assert!(!piece.is_empty());
        assert!(piece.len() == 1 || piece.data_bytes() <= 1000);
        assert_eq!(piece.sessions(), if last { 1 } else { 0 });
        after = piece.last_key().cloned();
        whole.absorb(piece, last).unwrap();
        pieces += 1;
        if last {
            break;
        }
    }
    assert!(pieces > 50, "{pieces} pieces");
    assert_eq!(whole, sm);
    whole.validate().unwrap();
}

#[test]
fn a_piece_out_of_order_is_refused_and_changes_nothing() {
    let sm = store(10);
    let (first, _) = sm.piece(None, 200);
    let mut whole = KvStateMachine::new(SessionConfig::default());
    whole.absorb(first.clone(), false).unwrap();
    let before = whole.clone();
    assert!(whole.absorb(first, false).is_err());
    assert_eq!(whole, before);
    // An empty store is one last piece, with the sessions.
    let empty = KvStateMachine::new(SessionConfig::default());
    let (piece, last) = empty.piece(None, 10);
    assert!(last && piece.is_empty());
}
