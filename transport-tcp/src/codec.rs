//! The frame codec: a `u32` big-endian length prefix, then a postcard body. Pure: no I/O, no
//! clock. Generic over the payload type, so that any protocol with serde types (the peer
//! [`Frame`](crate::Frame)s here, the KV client protocol elsewhere) reuses it.
//!
//! ```text
//! +----------------+---------------------------+
//! | len: u32 (BE)  | postcard body (len bytes) |
//! +----------------+---------------------------+
//! ```
//!
//! Bounds: a body is at most `frame_bytes_max` bytes. A length prefix above the bound is
//! refused from the 4 prefix bytes alone, before any buffer is sized for it, and a partial
//! frame is `Ok(None)` without allocating. Below the bound, decoding allocates in proportion to
//! the bytes present, never to a length field alone. And a decoded frame holds at most
//! `frame_items_max` collection elements (sequence elements and map entries, at any depth;
//! struct fields are not counted): the decode fails on the first one over, before the
//! collection holding it grows, and capacity hints are capped at what is left (`budget`).
//! Without that bound, an `Entry` being 3 bytes on the wire and 48 in memory, a 16 MiB body of
//! empty entries decoded to about 450 MB (issue 21 #13). A decode now holds at most the body's
//! bytes plus `frame_items_max` elements.

use crate::budget::{Budget, Budgeted};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// The default bound on a frame body: 16 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// The default bound on the collection elements one frame decodes to: 65,536 (a Raft append
/// carries at most `append_entries_max` entries, 512 by default).
pub const FRAME_ITEMS_MAX_DEFAULT: usize = 1 << 16;

/// Why a frame could not be encoded or decoded. Never allocates.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix (or an encoded body) exceeds the bound. Checked before allocating.
    #[error("frame body of {len} bytes exceeds frame_bytes_max {max}")]
    FrameTooLarge {
        /// The body length announced (or encoded).
        len: u64,
        /// The codec's `frame_bytes_max`.
        max: usize,
    },
    /// The body is not a valid postcard encoding of the payload type. Trailing bytes after a
    /// complete value are reported as `postcard::Error::DeserializeBadEncoding`.
    #[error("malformed frame body: {0}")]
    Malformed(postcard::Error),
    /// The payload could not be serialized (a serde `Serialize` impl failed).
    #[error("cannot encode frame: {0}")]
    Encode(postcard::Error),
    /// The body decodes to more collection elements than `frame_items_max`; refused at the
    /// first one over, before storing it.
    #[error("frame decodes to more than frame_items_max {max} items")]
    TooManyItems {
        /// The codec's `frame_items_max`.
        max: usize,
    },
}

/// A length-prefixed postcard codec with a bound on the body size. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    /// Invariant: `frame_bytes_max <= u32::MAX`.
    frame_bytes_max: usize,
    frame_items_max: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl Codec {
    /// A codec whose bodies are at most `frame_bytes_max` bytes (clamped to `u32::MAX`, the
    /// most the prefix can express) and decode to at most [`FRAME_ITEMS_MAX_DEFAULT`] items.
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            frame_bytes_max: frame_bytes_max.min(u32::MAX as usize),
            frame_items_max: FRAME_ITEMS_MAX_DEFAULT,
        }
    }

    /// This codec, with frames decoding to at most `frame_items_max` collection elements.
    pub fn with_items_max(self, frame_items_max: usize) -> Self {
        Self {
            frame_items_max,
            ..self
        }
    }

    /// The bound on a frame body, in bytes.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// The bound on the collection elements a frame decodes to.
    pub fn frame_items_max(&self) -> usize {
        self.frame_items_max
    }

    /// Appends one frame (prefix and body) to `out` and returns the bytes appended. On error
    /// `out` is left as it was (a body over the bound is refused: the peer would refuse it).
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        frame: &T,
        out: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let start = out.len();
        out.extend_from_slice(&[0; PREFIX_BYTES]);
        if let Err(e) = postcard::to_extend(frame, Appender(out)) {
            out.truncate(start);
            return Err(CodecError::Encode(e));
        }
        let body_len = out.len() - start - PREFIX_BYTES;
        if body_len > self.frame_bytes_max {
            out.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len: body_len as u64,
                max: self.frame_bytes_max,
            });
        }
        // Cannot truncate: frame_bytes_max <= u32::MAX.
        out[start..start + PREFIX_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
        Ok(out.len() - start)
    }

    /// Decodes the frame at the start of `buf`. Returns `Ok(None)` if `buf` holds only part of
    /// a frame (read more and call again), or the frame and the bytes it used (advance the
    /// buffer by that much: with a `BytesMut`, `decode(&buf)` then `buf.advance(consumed)`).
    pub fn decode<T: DeserializeOwned>(
        &self,
        buf: &[u8],
    ) -> Result<Option<(T, usize)>, CodecError> {
        let Some(prefix) = buf.first_chunk::<PREFIX_BYTES>() else {
            return Ok(None);
        };
        let body_len = self.body_len(*prefix)?;
        let Some(body) = buf.get(PREFIX_BYTES..PREFIX_BYTES + body_len) else {
            return Ok(None);
        };
        let frame = self.decode_body(body)?;
        Ok(Some((frame, PREFIX_BYTES + body_len)))
    }

    /// The body length a prefix announces, or `FrameTooLarge` if it exceeds the bound. Stream
    /// readers call this before reading (and buffering) the body.
    pub fn body_len(&self, prefix: [u8; PREFIX_BYTES]) -> Result<usize, CodecError> {
        let len = u32::from_be_bytes(prefix);
        if len as u64 > self.frame_bytes_max as u64 {
            return Err(CodecError::FrameTooLarge {
                len: len as u64,
                max: self.frame_bytes_max,
            });
        }
        Ok(len as usize)
    }

    /// Decodes a complete body (the bytes after the prefix): exactly one value, no trailing
    /// bytes.
    pub fn decode_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, CodecError> {
        if body.len() > self.frame_bytes_max {
            return Err(CodecError::FrameTooLarge {
                len: body.len() as u64,
                max: self.frame_bytes_max,
            });
        }
        let budget = Budget::new(self.frame_items_max);
        let mut postcard = postcard::Deserializer::from_bytes(body);
        let decoded = T::deserialize(Budgeted {
            inner: &mut postcard,
            budget: &budget,
        });
        match decoded.and_then(|value| postcard.finalize().map(|rest| (value, rest))) {
            Ok((value, [])) => Ok(value),
            Ok((_, _trailing)) => Err(CodecError::Malformed(
                postcard::Error::DeserializeBadEncoding,
            )),
            Err(_) if budget.exceeded() => Err(CodecError::TooManyItems {
                max: self.frame_items_max,
            }),
            Err(e) => Err(CodecError::Malformed(e)),
        }
    }
}

/// Lets postcard append to a borrowed `Vec` (its `to_extend` takes the writer by value).
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_partial_frames() {
        let codec = Codec::new(64);
        let mut buf = Vec::new();
        let n = codec.encode(&(7u64, "hi".to_string()), &mut buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(&buf[..4], &(n as u32 - 4).to_be_bytes());
        for cut in 0..buf.len() {
            assert_eq!(codec.decode::<(u64, String)>(&buf[..cut]), Ok(None));
        }
        buf.push(0xff); // the start of the next frame is left alone
        assert_eq!(
            codec.decode::<(u64, String)>(&buf),
            Ok(Some(((7, "hi".to_string()), n)))
        );
    }

    #[test]
    fn refuses_lengths_over_the_bound_from_the_prefix_alone() {
        let codec = Codec::new(10);
        let prefix = 11u32.to_be_bytes();
        assert_eq!(
            codec.decode::<u8>(&prefix),
            Err(CodecError::FrameTooLarge { len: 11, max: 10 })
        );
        assert_eq!(codec.body_len(10u32.to_be_bytes()), Ok(10));
    }

    #[test]
    fn refuses_to_encode_a_body_over_the_bound() {
        let codec = Codec::new(3);
        let mut buf = vec![1, 2];
        let err = codec.encode(&"four", &mut buf).unwrap_err();
        assert_eq!(err, CodecError::FrameTooLarge { len: 5, max: 3 });
        assert_eq!(buf, vec![1, 2]);
    }

    #[test]
    fn collection_elements_are_counted_at_any_depth_and_struct_fields_are_not() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Wide {
            a: u8,
            b: u8,
            c: Option<Vec<u8>>,
            d: std::collections::BTreeMap<u8, Vec<u8>>,
        }
        let value = Wide {
            a: 1,
            b: 2,
            c: Some(vec![1, 2]),
            d: [(1, vec![3]), (2, vec![])].into_iter().collect(),
        };
        let mut buf = Vec::new();
        Codec::default().encode(&value, &mut buf).unwrap();
        // 2 elements of c, 2 map entries, 1 element inside: 5 items.
        let five = Codec::default().with_items_max(5);
        assert_eq!(five.decode::<Wide>(&buf), Ok(Some((value, buf.len()))));
        let four = Codec::default().with_items_max(4);
        assert_eq!(
            four.decode::<Wide>(&buf),
            Err(CodecError::TooManyItems { max: 4 })
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let codec = Codec::default();
        let frame = [0, 0, 0, 2, 1, 1];
        assert_eq!(
            codec.decode::<u8>(&frame),
            Err(CodecError::Malformed(
                postcard::Error::DeserializeBadEncoding
            ))
        );
    }
}
