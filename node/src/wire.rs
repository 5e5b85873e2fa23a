//! What the TCP server and the TCP connector share: reading frames of the client protocol
//! ([`raftkv_kv::protocol`]) with the peer transport's framing, and batching their writes.

use std::io;

use raftkv_transport_tcp::CodecError;
pub use raftkv_transport_tcp::FrameReader;

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
}

/// A connection's task gathers the frames ready at one moment into one write of about this
/// many bytes at most (one frame more may go past it).
pub(crate) const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Empties a write buffer, keeping at most 1 MiB of it allocated for the next batch.
pub(crate) fn reuse_write_buffer(out: &mut Vec<u8>) {
    if out.capacity() > 1 << 20 {
        *out = Vec::new();
    } else {
        out.clear();
    }
}
