//! The client protocol: what a Clerk sends to a KV server and what it answers.
//!
//! Over TCP each message is one frame of the transport's framing (a `u32` big-endian length and
//! a postcard body, [`raftkv_transport_tcp::Codec`]) on the server's own client port. Requests
//! carry an id chosen by the client; responses carry it back and may come out of order (a
//! connection has several requests in flight).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::AsyncRead;

use raftkv_transport_tcp::{Codec, CodecError, PREFIX_BYTES};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::{Op, Outcome};

/// At most this many bytes in one client frame (request or response), by default.
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 << 20;

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub body: RequestBody,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// thesis §6.3: open an exactly-once session; answered with `Outcome::Registered`.
    Register,
    /// A write (or a get through the log) of a session; applied at most once.
    Write { session: u64, seq: u64, op: Op },
    /// thesis §6.4: a linearizable read through ReadIndex; no log entry is written.
    Read { key: bytes::Bytes },
    /// The server's view of the cluster (role, term, leader...).
    Status,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub id: u64,
    pub reply: Reply,
}

/// How a request ended at the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The state machine's answer (for a write: it was applied, or answered from the session
    /// table).
    Done(Outcome),
    /// This server does not lead; `leader_hint` is the client address of the node it believes
    /// does, if it knows one.
    NotLeader { leader_hint: Option<String> },
    /// The server could not learn the outcome in time (it may still be applied later).
    Timeout,
    /// Leadership changed after the write was proposed; it may or may not be applied.
    OutcomeUnknown,
    /// Backpressure (a full queue, too many requests in flight): retry shortly.
    Busy,
    /// The request is larger than the server accepts; retrying will not help.
    TooLarge,
    /// The node is stopped (shut down or failed); try another server.
    Unavailable(String),
    /// The server's status.
    Status(ServerStatus),
}

/// A server's status, as `Reply::Status` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
}

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
}

/// Bytes a [`FrameReader`] asks the socket for at once, and keeps between frames.
const READ_CHUNK_BYTES: usize = 64 * 1024;

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

/// Frames read from an async socket: a buffer that one `poll_fill` tops up (one `read`, so a
/// caller may stop polling at any moment without losing bytes) and `next_frame` takes whole
/// frames from. It holds at most one frame plus one read chunk: a length over the codec's
/// bound is refused as soon as its prefix is in, before the body is buffered.
pub struct FrameReader {
    codec: Codec,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// The next whole frame already buffered, if any.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match self.codec.decode(&self.buf[self.start..self.end])? {
            Some((frame, used)) => {
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    // Keep at most one chunk of scratch once a large frame is through.
                    if self.buf.len() > READ_CHUNK_BYTES {
                        self.buf = vec![0; READ_CHUNK_BYTES];
                    }
                }
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// One read from `stream` into the buffer: `Ok(0)` is end of stream between frames; an
    /// end of stream inside a frame is `UnexpectedEof`.
    pub fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            self.make_room();
        }
        let n = ready!(Pin::new(stream).poll_read(cx, &mut self.buf[self.end..]))?;
        if n == 0 && self.start < self.end {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Moves the unfinished frame to the front, and grows the buffer to hold all of it (its
    /// length is known to be within the bound once its prefix is in).
    fn make_room(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let needed = match self.buf[..self.end].first_chunk::<PREFIX_BYTES>() {
            // An over-bound prefix was refused by `next_frame` before we get here.
            Some(prefix) => self.codec.body_len(*prefix).unwrap_or(0) + PREFIX_BYTES,
            None => PREFIX_BYTES,
        };
        let len = needed
            .max(self.end + READ_CHUNK_BYTES)
            .min(needed + READ_CHUNK_BYTES);
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
    }
}

#[cfg(test)]
mod frame_reader_tests {
    use super::*;
    use futures::io::Cursor;
    use std::future::poll_fn;

    fn request(id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let codec = Codec::new(CLIENT_FRAME_BYTES_MAX);
        let body = RequestBody::Status;
        codec.encode(&ClientRequest { id, body }, &mut out).unwrap();
        out
    }

    /// Reads every frame of `bytes`, then reports how the stream ended.
    fn read_all(bytes: Vec<u8>) -> (Vec<u64>, io::Result<usize>) {
        let mut reader = FrameReader::new(Codec::new(CLIENT_FRAME_BYTES_MAX));
        let mut stream = Cursor::new(bytes);
        let mut ids = Vec::new();
        loop {
            let r = futures::executor::block_on(poll_fn(|cx| reader.poll_fill(&mut stream, cx)));
            while let Some(req) = reader.next_frame::<ClientRequest>().unwrap() {
                ids.push(req.id);
            }
            if !matches!(r, Ok(n) if n > 0) {
                return (ids, r);
            }
        }
    }

    #[test]
    fn end_of_stream_between_frames_is_clean_and_inside_one_is_unexpected() {
        let mut two = request(1);
        two.extend(request(2));
        let (ids, end) = read_all(two.clone());
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(end.unwrap(), 0);

        let truncated = two[..two.len() - 1].to_vec();
        let (ids, end) = read_all(truncated);
        assert_eq!(ids, vec![1]);
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
