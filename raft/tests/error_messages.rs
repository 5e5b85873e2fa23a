//! Issue 19: configuration, restore and storage errors are structured (which field, which
//! bound, which value; what was persisted; which operation on which path) and their messages
//! say what and where.

use raftkv_raft::{
    Config, ConfigError, Entry, HardState, InvalidConfig, LogId, Payload, Persisted,
    PersistedError, Raft, StorageError,
};
use std::io;
use std::path::PathBuf;

fn invalid(config: &Config) -> (InvalidConfig, String) {
    match config.validate() {
        Err(ConfigError::Invalid(e)) => {
            let shown = ConfigError::Invalid(e.clone()).to_string();
            (e, shown)
        }
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn config_errors_name_the_field_its_value_and_the_bound() {
    let mut c = Config::new(1, [1, 2, 3]);
    c.election_timeout_ticks_min = 10;
    c.heartbeat_interval_ticks = 10;
    let (e, shown) = invalid(&c);
    assert_eq!(
        e,
        InvalidConfig::TooSmall {
            field: "election_timeout_ticks_min",
            value: 10,
            bound_field: "heartbeat_interval_ticks",
            bound: 10,
            equal_allowed: false,
        }
    );
    assert_eq!(
        shown,
        "invalid config: election_timeout_ticks_min is 10; it must be > \
         heartbeat_interval_ticks (10)"
    );

    let mut c = Config::new(1, [1]);
    c.entry_bytes_max = 100;
    c.uncommitted_bytes_max = 99;
    let (_, shown) = invalid(&c);
    assert_eq!(
        shown,
        "invalid config: uncommitted_bytes_max is 99; it must be >= entry_bytes_max (100)"
    );

    let mut c = Config::new(1, [1]);
    c.pending_reads_max = 0;
    assert_eq!(
        invalid(&c),
        (
            InvalidConfig::Zero {
                field: "pending_reads_max"
            },
            "invalid config: pending_reads_max is 0; it must be > 0".to_string()
        )
    );
}

#[test]
fn config_errors_name_the_voters() {
    let (e, shown) = invalid(&Config::new(4, [1, 2, 3]));
    assert_eq!(
        e,
        InvalidConfig::NotAVoter {
            id: 4,
            voters: vec![1, 2, 3]
        }
    );
    assert!(
        shown.contains("id 4 is not among the voters [1, 2, 3]"),
        "{shown}"
    );
    let (e, shown) = invalid(&Config::new(1, [1, 2, 2]));
    assert_eq!(
        e,
        InvalidConfig::DuplicateVoter {
            id: 2,
            voters: vec![1, 2, 2]
        }
    );
    assert!(shown.contains("voter 2 is listed twice"), "{shown}");
    assert_eq!(invalid(&Config::new(0, [])).0, InvalidConfig::ZeroId);
    assert!(matches!(
        invalid(&Config::new(1, [0, 1])).0,
        InvalidConfig::ZeroVoter { .. }
    ));
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

fn restore(term: u64, entries: Vec<Entry>) -> PersistedError {
    let persisted = Persisted {
        hard_state: HardState {
            term,
            voted_for: None,
            commit: 0,
        },
        snapshot: None,
        entries,
    };
    match Raft::restore(Config::new(1, [1]), persisted) {
        Err(ConfigError::Persisted(e)) => e,
        Err(e) => panic!("expected a persisted-state error, got {e:?}"),
        Ok(_) => panic!("expected a persisted-state error, got a node"),
    }
}

#[test]
fn persisted_state_errors_say_what_was_persisted_and_what_it_breaks() {
    let e = restore(2, vec![entry(1, 1), entry(3, 1)]);
    assert_eq!(
        e,
        PersistedError::Gap {
            entry: LogId::new(3, 1),
            after: LogId::new(1, 1)
        }
    );
    assert_eq!(
        ConfigError::Persisted(e).to_string(),
        "invalid persisted state: the persisted entry 3@1 does not follow 1@1 (a gap in the log)"
    );
    assert_eq!(
        restore(2, vec![entry(1, 2), entry(2, 1)]),
        PersistedError::TermGoesBack {
            entry: LogId::new(2, 1),
            after: LogId::new(1, 2)
        }
    );
    let e = restore(2, vec![entry(1, 3)]);
    assert_eq!(
        e,
        PersistedError::EntryPastTerm {
            entry: LogId::new(1, 3),
            term: 2
        }
    );
    assert!(
        e.to_string().contains("past the persisted current term 2"),
        "{e}"
    );
}

#[test]
fn storage_io_errors_keep_the_os_error_and_say_what_and_where() {
    let e = StorageError::io(
        "fsync",
        "/data/n1/wal-1.log",
        io::Error::from(io::ErrorKind::PermissionDenied),
    );
    let StorageError::Io { op, path, source } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*op, "fsync");
    assert_eq!(path, &PathBuf::from("/data/n1/wal-1.log"));
    assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(
        e.to_string(),
        "storage I/O error: fsync /data/n1/wal-1.log: permission denied"
    );
    // Equality is by operation, path, kind and message; clones are equal.
    assert_eq!(e, e.clone());
    let other_kind = StorageError::io(
        "fsync",
        "/data/n1/wal-1.log",
        io::Error::from(io::ErrorKind::NotFound),
    );
    assert_ne!(e, other_kind);
    // A path-less error is located by the store that reports it.
    let located = StorageError::io("LMDB write", "", io::Error::other("MDB_PANIC"))
        .in_dir(std::path::Path::new("/data/n1"));
    assert_eq!(
        located.to_string(),
        "storage I/O error: LMDB write /data/n1: MDB_PANIC"
    );
}

#[test]
fn storage_full_errors_name_the_bound() {
    let e = StorageError::MapFull {
        path: "/data/n1".into(),
        map_bytes: 1 << 30,
        map_bytes_max: 1 << 30,
    };
    let shown = e.to_string();
    assert!(
        shown.contains("/data/n1")
            && shown.contains("map_size_bytes_max")
            && shown.contains("1073741824"),
        "{shown}"
    );
}
