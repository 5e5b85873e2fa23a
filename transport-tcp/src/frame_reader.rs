//! [`FrameReader`]: cancel-safe reading of [`Codec`] frames from an async socket. The peer
//! transport's readers use it, and so do the KV client server and connector.

use crate::codec::{Codec, CodecError, PREFIX_BYTES};
use futures::io::AsyncRead;
use serde::de::DeserializeOwned;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Bytes a [`FrameReader`] asks the socket for at once, and keeps between frames.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Frames read from an async socket: a buffer that one `poll_fill` tops up (one `read`, so a
/// caller may stop polling at any moment without losing bytes) and `next_frame` takes whole
/// frames from. It holds at most one frame plus one read chunk (64 KiB): a length over the
/// codec's bound is refused as soon as its prefix is in, before the body is buffered.
#[derive(Debug)]
pub struct FrameReader {
    codec: Codec,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    /// An empty reader whose frames are bounded by `codec`.
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// Bounds the frames from now on by `codec` (bytes already read are kept): a protocol whose
    /// first frame has a smaller bound than the others reads it, then widens the bound.
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
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

    /// The unfinished frame's bytes buffered, and the length of that frame once its prefix is
    /// in (else the prefix's): what an `UnexpectedEof` from `poll_fill` cut short.
    pub fn partial(&self) -> (usize, usize) {
        let have = self.end - self.start;
        let want = match self.buf[self.start..self.end].first_chunk::<PREFIX_BYTES>() {
            Some(prefix) => PREFIX_BYTES + self.codec.body_len(*prefix).unwrap_or(0),
            None => PREFIX_BYTES,
        };
        (have, want)
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
mod tests {
    use super::*;
    use futures::io::Cursor;
    use std::future::poll_fn;

    fn frame(id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Codec::default()
            .encode(&(id, "a frame".to_string()), &mut out)
            .unwrap();
        out
    }

    /// Reads every frame of `bytes`, then reports how the stream ended and what was cut short.
    fn read_all(bytes: Vec<u8>) -> (Vec<u64>, io::Result<usize>, (usize, usize)) {
        let mut reader = FrameReader::new(Codec::default());
        let mut stream = Cursor::new(bytes);
        let mut ids = Vec::new();
        loop {
            let r = futures::executor::block_on(poll_fn(|cx| reader.poll_fill(&mut stream, cx)));
            while let Some((id, _)) = reader.next_frame::<(u64, String)>().unwrap() {
                ids.push(id);
            }
            if !matches!(r, Ok(n) if n > 0) {
                return (ids, r, reader.partial());
            }
        }
    }

    #[test]
    fn end_of_stream_between_frames_is_clean_and_inside_one_is_unexpected() {
        let mut two = frame(1);
        two.extend(frame(2));
        let (ids, end, _) = read_all(two.clone());
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(end.unwrap(), 0);

        let one = frame(1).len();
        let truncated = two[..two.len() - 1].to_vec();
        let (ids, end, partial) = read_all(truncated);
        assert_eq!(ids, vec![1]);
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(partial, (one - 1, one));

        let (_, end, partial) = read_all(two[..one + 2].to_vec());
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(partial, (2, PREFIX_BYTES));
    }

    #[test]
    fn a_wider_bound_applies_to_the_frames_after_it_is_set() {
        let mut first = Vec::new();
        Codec::new(8).encode(&7u8, &mut first).unwrap();
        let bytes = [first, frame(2)].concat();
        let mut reader = FrameReader::new(Codec::new(8));
        let mut stream = Cursor::new(bytes);
        futures::executor::block_on(poll_fn(|cx| reader.poll_fill(&mut stream, cx))).unwrap();
        assert_eq!(reader.next_frame::<u8>(), Ok(Some(7)));
        // The second frame is over the first bound, and within the default one.
        assert!(reader.next_frame::<(u64, String)>().is_err());
        reader.set_codec(Codec::default());
        assert_eq!(
            reader.next_frame::<(u64, String)>(),
            Ok(Some((2, "a frame".to_string())))
        );
    }
}
