//! The exceptions: `raftkv.Error` and its subclasses, and how Rust errors become them.
//!
//! Some are also a standard exception, so that code written for dictionaries and timeouts
//! catches them: `KeyNotFound` is a `KeyError`, `Timeout` a `TimeoutError`. `VersionMismatch`
//! carries the key's current version as `.current` (an int, or None when the server did not
//! say). Every message says what happened and what the caller can do about it.
//!
//! The classes with two bases are made by Python code run once, when the module is first
//! imported ([`classes`]); `PyTypeInfo` on marker types lets Rust raise them lazily (an error
//! built on a runtime thread does not take the GIL there).

use bytes::Bytes;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyType};
use pyo3::PyTypeInfo;
use raftkv_kv::clerk::ClerkError;
use raftkv_kv::protocol::RefusalKind;
use raftkv_node::cluster::ClusterError as RClusterError;
use raftkv_raft::MembershipError as RMembershipError;
use raftkv_raft::StorageError;

create_exception!(
    raftkv,
    Error,
    PyException,
    "Base class of every raftkv error."
);

/// The Python source of the classes deriving from `Error` (given in the globals).
const CLASSES: &std::ffi::CStr = cr#"
class KeyNotFound(Error, KeyError):
    """The key does not exist: it was never written, or it was deleted. Also a KeyError."""
    __module__ = "raftkv"
    __str__ = Exception.__str__


class VersionMismatch(Error):
    """A conditional put found another version; nothing was written.

    ``current`` is the key's version at the server (an int), or None when it did not say.
    """
    __module__ = "raftkv"

    def __init__(self, message, current=None):
        super().__init__(message)
        self.current = current


class MaybeApplied(Error):
    """A retried write's outcome cannot be learned: it may or may not have been applied."""
    __module__ = "raftkv"


class Timeout(Error, TimeoutError):
    """No majority answered (or no leader was found) within the timeout. Also a TimeoutError."""
    __module__ = "raftkv"
    __str__ = Exception.__str__


class TooLarge(Error):
    """The request is larger than the servers accept."""
    __module__ = "raftkv"


class ProtocolError(Error):
    """A server answered something the client cannot use."""
    __module__ = "raftkv"


class ClusterError(Error):
    """A cluster or node operation failed (no such node, not running, I/O, storage...)."""
    __module__ = "raftkv"


class HistoryError(Error):
    """A history could not be read (malformed JSON or log line)."""
    __module__ = "raftkv"


class StoreFull(TooLarge):
    """The store is full: the write would take its data past the servers' bound
    (``data_bytes_max``, 512 MiB by default); nothing was written. Deletes, and writes that do
    not grow the data, still work. Also a TooLarge.
    """
    __module__ = "raftkv"


class Unauthorized(Error):
    """The server wants a client token, and this Clerk gave none or another one."""
    __module__ = "raftkv"


class MembershipError(Error):
    """The cluster refused a membership change or a leadership transfer.

    ``in_progress`` is True when another change (or a transfer) was in progress: the Clerk
    retried until its timeout and the other one had still not completed; retry once it has.
    Otherwise the request cannot succeed as it is (not a member, already a
    member, no quorum left...): the message says what to do.
    """
    __module__ = "raftkv"

    def __init__(self, message, in_progress=False):
        super().__init__(message)
        self.in_progress = in_progress
"#;

/// The names [`CLASSES`] defines, in the order of [`Classes`]' fields.
pub(crate) const NAMES: [&str; 11] = [
    "KeyNotFound",
    "VersionMismatch",
    "MaybeApplied",
    "Timeout",
    "TooLarge",
    "ProtocolError",
    "ClusterError",
    "HistoryError",
    "MembershipError",
    "StoreFull",
    "Unauthorized",
];

struct Classes([Py<PyType>; 11]);

/// The classes, made on first use.
fn classes(py: Python<'_>) -> &Classes {
    static CELL: GILOnceCell<Classes> = GILOnceCell::new();
    CELL.get_or_init(py, || {
        let make = || -> PyResult<Classes> {
            let globals = PyDict::new(py);
            globals.set_item("__builtins__", py.import("builtins")?)?;
            globals.set_item("Error", py.get_type::<Error>())?;
            py.run(CLASSES, Some(&globals), None)?;
            let mut out = Vec::with_capacity(NAMES.len());
            for name in NAMES {
                let class = globals
                    .get_item(name)?
                    .ok_or_else(|| Error::new_err(format!("internal error: no class {name}")))?;
                out.push(class.downcast_into::<PyType>()?.unbind());
            }
            let array: [Py<PyType>; 11] = out
                .try_into()
                .map_err(|_| Error::new_err("internal error: exception classes"))?;
            Ok(Classes(array))
        };
        make().expect("the raftkv exception classes are valid Python")
    })
}

macro_rules! exception {
    ($name:ident, $index:expr) => {
        /// A `raftkv` exception class made by [`CLASSES`].
        pub(crate) struct $name;

        // SAFETY: the pointer is that of a type object kept alive for the life of the
        // interpreter by the `GILOnceCell` in `classes`.
        unsafe impl PyTypeInfo for $name {
            const NAME: &'static str = NAMES[$index];
            const MODULE: Option<&'static str> = Some("raftkv");

            fn type_object_raw(py: Python<'_>) -> *mut pyo3::ffi::PyTypeObject {
                classes(py).0[$index].as_ptr().cast()
            }
        }

        impl $name {
            /// The exception, raised with `message`.
            #[allow(dead_code)] // VersionMismatch is raised with its version too
            pub(crate) fn new_err(message: impl Into<String>) -> PyErr {
                PyErr::new::<$name, _>(message.into())
            }
        }
    };
}

exception!(KeyNotFound, 0);
exception!(VersionMismatch, 1);
exception!(MaybeApplied, 2);
exception!(Timeout, 3);
exception!(TooLarge, 4);
exception!(ProtocolError, 5);
exception!(ClusterError, 6);
exception!(HistoryError, 7);
exception!(MembershipError, 8);
exception!(StoreFull, 9);
exception!(Unauthorized, 10);

/// Adds `Error` and every class of [`CLASSES`] to the module.
pub(crate) fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    for (name, class) in NAMES.iter().zip(&classes(py).0) {
        m.add(*name, class.bind(py))?;
    }
    Ok(())
}

/// A key as it appears in messages: its text (lossy UTF-8), quoted.
fn shown(key: &Bytes) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    let text = String::from_utf8_lossy(&key[..key.len().min(SHOWN_BYTES_MAX)]);
    if key.len() > SHOWN_BYTES_MAX {
        format!("{text:?}… ({} bytes)", key.len())
    } else {
        format!("{text:?}")
    }
}

/// The exception for a Clerk's error on `key` (None: not about one key).
pub(crate) fn clerk_err(e: ClerkError, key: Option<&Bytes>) -> PyErr {
    let key = key.map_or_else(|| "the key".to_string(), |k| format!("key {}", shown(k)));
    match e {
        ClerkError::NoKey => KeyNotFound::new_err(format!(
            "no such key: {key} does not exist (never written, or deleted); write it first, \
             or put with version=0 to create it only if it is absent"
        )),
        ClerkError::Version { current } => PyErr::new::<VersionMismatch, _>((
            format!(
                "version mismatch: {key} is at version {current}, so the conditional put was \
                 not applied; read the key again and retry with version={current}"
            ),
            Some(current),
        )),
        ClerkError::MaybeApplied => MaybeApplied::new_err(format!(
            "the write to {key} may or may not have been applied (a retry could no longer \
             learn its outcome); read the key to find out before writing it again"
        )),
        ClerkError::Timeout(d) => Timeout::new_err(format!(
            "timed out after {:.1} s: no leader with a majority answered; the operation on \
             {key} may still be applied later. Check that a majority of the nodes is running \
             and reachable, or raise the Clerk's timeout",
            d.as_secs_f64()
        )),
        ClerkError::TooLarge => TooLarge::new_err(format!(
            "the request on {key} is larger than the servers accept (4 MiB by default); \
             split the value or store it elsewhere"
        )),
        ClerkError::StoreFull => StoreFull::new_err(format!(
            "the store is full: writing {key} would take its data past the servers' bound \
             (data_bytes_max), so nothing was written; delete keys, or raise the bound on \
             every node"
        )),
        ClerkError::Unauthorized => Unauthorized::new_err(
            "the server refused this client: it wants a client token, and this Clerk gave none \
             or another one (Clerk(..., token=...))",
        ),
        e @ (ClerkError::UnexpectedReply { .. } | ClerkError::Refused { .. }) => {
            ProtocolError::new_err(format!(
                "{e}; the server and the client may be of different versions (upgrade both), or \
             this is a bug to report"
            ))
        }
        ClerkError::Membership { kind, message } => {
            let in_progress = kind == RefusalKind::InProgress;
            let advice = match kind {
                RefusalKind::InProgress => "; retry once it has completed",
                _ => "",
            };
            PyErr::new::<MembershipError, _>((format!("{message}{advice}"), in_progress))
        }
        ClerkError::Call { error } => ProtocolError::new_err(format!(
            "{error}; check the address and that the node is running"
        )),
        e => Error::new_err(e.to_string()),
    }
}

/// The exception for a cluster or node error.
pub(crate) fn cluster_err(e: RClusterError) -> PyErr {
    match e {
        RClusterError::NoLeader { waited } => Timeout::new_err(format!(
            "no leader within {:.1} s: a majority of the nodes must be running and able to \
             reach each other (heal partitions, restart crashed nodes), or wait longer",
            waited.as_secs_f64()
        )),
        RClusterError::NoSuchNode { .. } => PyIndexError::new_err(e.to_string()),
        RClusterError::Membership(m) => {
            let in_progress = matches!(
                m,
                RMembershipError::ChangeInProgress | RMembershipError::TransferInProgress { .. }
            );
            PyErr::new::<MembershipError, _>((m.to_string(), in_progress))
        }
        e @ RClusterError::MembershipTimeout { .. } => Timeout::new_err(format!(
            "{e}: a majority of the nodes (of the old and the new configuration) must be \
             running and able to reach each other; check them, or raise the timeout"
        )),
        RClusterError::Storage(ref s) => {
            ClusterError::new_err(format!("{e}; {}", storage_advice(s)))
        }
        e => ClusterError::new_err(e.to_string()),
    }
}

/// What the caller can do about a storage error (its message already says what and where).
fn storage_advice(e: &StorageError) -> &'static str {
    match e {
        StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
            "another node or process has this data directory open: stop it, or use another \
             directory"
        }
        StorageError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            "make the data directory readable and writable by this process"
        }
        StorageError::Io { .. } => "check the disk and the data directory, then restart the node",
        StorageError::MapFull { .. } | StorageError::NoSpace { .. } => {
            "free space (or raise the bound), then restart the node"
        }
        StorageError::Corrupt { .. } => {
            "the node's stored data is damaged: wipe its data directory and let it catch up \
             from the others"
        }
        _ => "restart the node; if it fails again, wipe its data directory",
    }
}

/// `r` with its error as a Python exception.
pub(crate) fn ce<T>(r: Result<T, RClusterError>) -> PyResult<T> {
    r.map_err(cluster_err)
}
