//! The frame codec: every message kind round-trips, and a deterministic fuzz of random and
//! mutated frames never panics, always ends in `Ok` or a typed error, and never allocates
//! from a length field alone (measured with a counting allocator).

use bytes::Bytes;
use raftkv_raft::{
    AppendResult, Body, ConflictHint, Entry, LogId, MemberAddrs, MemberChange, Membership, Message,
    Payload, Rng,
};
use raftkv_transport_tcp::{Codec, CodecError, Frame, Hello, MAGIC, PREFIX_BYTES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Tracks, for the current thread while `TRACKING` is set, the number of allocations and the
/// peak of bytes live (allocated minus freed since tracking started).
struct CountingAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn note(allocated: usize, freed: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            if allocated > 0 {
                ALLOCATIONS.with(|n| n.set(n.get() + 1));
            }
            let live = LIVE_BYTES.with(|b| {
                b.set(b.get() + allocated as isize - freed as isize);
                b.get()
            });
            PEAK_BYTES.with(|p| p.set(p.get().max(live)));
        }
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the allocations it made and the peak bytes live.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    LIVE_BYTES.with(|b| b.set(0));
    PEAK_BYTES.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    (
        result,
        ALLOCATIONS.with(|n| n.get()),
        PEAK_BYTES.with(|p| p.get()) as usize,
    )
}

fn log_id(rng: &mut Rng) -> LogId {
    LogId::new(rng.range(0, 1 << 40), rng.range(0, 1 << 20))
}

fn bytes(rng: &mut Rng, len_max: u64) -> Bytes {
    let len = rng.range(0, len_max + 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// One message of every body kind (and every nested variant), with random numbers.
fn every_body(rng: &mut Rng) -> Vec<Body> {
    let entry = |rng: &mut Rng, payload| Entry {
        term: rng.range(1, 100),
        index: rng.range(1, 1 << 30),
        payload,
    };
    let command = Payload::Command(bytes(rng, 40));
    let config = Payload::Membership(Box::new(membership(rng)));
    vec![
        Body::PreVote {
            last_log: log_id(rng),
        },
        Body::PreVoteResponse { granted: true },
        Body::Vote {
            last_log: log_id(rng),
            transfer: rng.chance(0.5),
        },
        Body::VoteResponse { granted: false },
        Body::Append {
            base: log_id(rng),
            entries: vec![
                entry(rng, Payload::Noop),
                entry(rng, command),
                entry(rng, Payload::Command(Bytes::new())),
                entry(rng, config),
            ],
            commit: rng.range(0, 1 << 30),
        },
        Body::Append {
            base: LogId::default(),
            entries: Vec::new(),
            commit: 0,
        },
        Body::AppendResponse {
            base_index: rng.range(0, 1 << 30),
            result: AppendResult::Accepted {
                match_index: rng.range(0, 1 << 30),
            },
        },
        Body::AppendResponse {
            base_index: 9,
            result: AppendResult::Rejected {
                hint: ConflictHint {
                    term: Some(rng.range(0, 100)),
                    first_index_of_term: 3,
                    last_index: 12,
                },
            },
        },
        Body::AppendResponse {
            base_index: 9,
            result: AppendResult::Rejected {
                hint: ConflictHint {
                    term: None,
                    first_index_of_term: 0,
                    last_index: 2,
                },
            },
        },
        Body::Heartbeat {
            commit: rng.range(0, 1 << 30),
            read_seq: rng.next_u64() >> 2,
        },
        Body::HeartbeatResponse {
            read_seq: rng.next_u64() >> 2,
        },
        Body::InstallSnapshot {
            last: log_id(rng),
            membership: Box::new(membership(rng)),
            offset: rng.range(0, 1 << 40),
            data: bytes(rng, 200),
            done: rng.chance(0.5),
            len: rng.range(0, 1 << 40),
            crc32c: rng.next_u64() as u32,
        },
        Body::SnapshotResponse {
            last: log_id(rng),
            next_offset: rng.range(0, 1 << 40),
        },
        Body::TimeoutNow,
        Body::ReadIndex { id: rng.next_u64() },
        Body::ReadIndexResponse {
            id: rng.next_u64(),
            index: rng.chance(0.5).then(|| rng.range(0, 1 << 40)),
        },
    ]
}

/// A joint configuration with a learner and addresses.
fn membership(rng: &mut Rng) -> Membership {
    let id = rng.range(4, 100);
    Membership::from_voters([1, 2, 3])
        .apply_changes(&[
            MemberChange::AddLearner {
                id,
                addrs: MemberAddrs::new(format!("10.0.0.{id}:7000"), "10.0.0.1:8000"),
                auto_promote: true,
            },
            MemberChange::Remove { id: 3 },
        ])
        .expect("a valid change")
}

/// Fails to compile when `Body` gains a variant, so that `every_body` is kept complete.
#[allow(dead_code)]
fn every_body_is_complete(body: &Body) {
    match body {
        Body::PreVote { .. }
        | Body::PreVoteResponse { .. }
        | Body::Vote { .. }
        | Body::VoteResponse { .. }
        | Body::Append { .. }
        | Body::AppendResponse { .. }
        | Body::Heartbeat { .. }
        | Body::HeartbeatResponse { .. }
        | Body::InstallSnapshot { .. }
        | Body::SnapshotResponse { .. }
        | Body::TimeoutNow
        | Body::ReadIndex { .. }
        | Body::ReadIndexResponse { .. } => {}
    }
}

fn every_frame(rng: &mut Rng) -> Vec<Frame> {
    let mut frames = vec![Frame::Hello(Hello::new(rng.next_u64(), rng.range(1, 100)))];
    for body in every_body(rng) {
        frames.push(Frame::Raft(Message {
            from: rng.range(1, 8),
            to: rng.range(1, 8),
            term: rng.range(0, 1 << 30),
            body,
        }));
    }
    frames
}

#[test]
fn every_frame_kind_round_trips() {
    let codec = Codec::default();
    let mut rng = Rng::new(1);
    let frames = every_frame(&mut rng);
    // One stream holding every frame, decoded back one frame at a time.
    let mut stream = Vec::new();
    for frame in &frames {
        let n = codec.encode(frame, &mut stream).unwrap();
        assert!(n > PREFIX_BYTES);
    }
    let mut at = 0;
    for frame in &frames {
        let (decoded, used) = codec.decode::<Frame>(&stream[at..]).unwrap().unwrap();
        assert_eq!(&decoded, frame);
        at += used;
    }
    assert_eq!(at, stream.len());
    assert_eq!(codec.decode::<Frame>(&stream[at..]), Ok(None));
}

#[test]
fn decode_refuses_a_length_over_the_bound_without_allocating() {
    let codec = Codec::new(1024);
    for len in [1025u32, 1 << 20, u32::MAX] {
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend_from_slice(&[0xAB; 16]);
        let (result, allocations, _) = measure(|| codec.decode::<Frame>(&buf));
        assert_eq!(
            result,
            Err(CodecError::FrameTooLarge {
                len: len as u64,
                max: 1024
            })
        );
        assert_eq!(allocations, 0, "decode allocated for a {len}-byte prefix");
        let (result, allocations, _) = measure(|| codec.body_len(len.to_be_bytes()));
        assert!(result.is_err());
        assert_eq!(allocations, 0);
    }
}

#[test]
fn a_hello_with_another_magic_still_decodes_for_the_acceptor_to_refuse() {
    let codec = Codec::default();
    let mut hello = Hello::new(7, 1);
    hello.magic = *b"HTTP";
    let mut buf = Vec::new();
    codec
        .encode(&Frame::Hello(hello.clone()), &mut buf)
        .unwrap();
    let (frame, _) = codec.decode::<Frame>(&buf).unwrap().unwrap();
    assert_eq!(frame, Frame::Hello(hello));
    assert_ne!(*b"HTTP", MAGIC);
}

/// How a fuzz input was made.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    RandomBytes,
    Valid,
    FlippedBytes,
    Truncated,
    Extended,
    RandomPrefix,
    PrefixOffByFew,
}

const MUTATIONS: [Mutation; 7] = [
    Mutation::RandomBytes,
    Mutation::Valid,
    Mutation::FlippedBytes,
    Mutation::Truncated,
    Mutation::Extended,
    Mutation::RandomPrefix,
    Mutation::PrefixOffByFew,
];

const FUZZ_FRAMES: usize = 150_000;
const FUZZ_SEED: u64 = 0x5EED_F422;
/// The fuzz bound: small, so that valid frames and random prefixes cross it often.
const FUZZ_FRAME_BYTES_MAX: usize = 4096;

#[test]
fn fuzzed_frames_decode_to_ok_or_a_typed_error_without_unbounded_allocation() {
    let codec = Codec::new(FUZZ_FRAME_BYTES_MAX);
    let mut rng = Rng::new(FUZZ_SEED);
    let mut valid: Vec<(Frame, Vec<u8>)> = Vec::new();
    for _ in 0..64 {
        for frame in every_frame(&mut rng) {
            let mut buf = Vec::new();
            codec.encode(&frame, &mut buf).unwrap();
            valid.push((frame, buf));
        }
    }
    let mut outcomes = [0usize; 5]; // decoded, need more, too large, malformed, (unused)
    let mut amplification_max = 0.0f64;
    for i in 0..FUZZ_FRAMES {
        let mutation = MUTATIONS[i % MUTATIONS.len()];
        let (original, base) = &valid[rng.range(0, valid.len() as u64) as usize];
        let mut input = base.clone();
        match mutation {
            Mutation::RandomBytes => {
                let len = rng.range(0, 300);
                input = (0..len).map(|_| rng.next_u64() as u8).collect();
            }
            Mutation::Valid => {}
            Mutation::FlippedBytes => {
                for _ in 0..rng.range(1, 5) {
                    let at = rng.range(0, input.len() as u64) as usize;
                    input[at] ^= rng.range(1, 256) as u8;
                }
            }
            Mutation::Truncated => {
                input.truncate(rng.range(0, input.len() as u64) as usize);
            }
            Mutation::Extended => {
                for _ in 0..rng.range(1, 64) {
                    input.push(rng.next_u64() as u8);
                }
                if rng.chance(0.5) {
                    // Claim the extra bytes as part of the body: trailing garbage.
                    let body = (input.len() - PREFIX_BYTES) as u32;
                    input[..PREFIX_BYTES].copy_from_slice(&body.to_be_bytes());
                }
            }
            Mutation::RandomPrefix => {
                let len: u32 = match rng.range(0, 4) {
                    0 => u32::MAX,
                    1 => FUZZ_FRAME_BYTES_MAX as u32 + 1 + rng.range(0, 1 << 20) as u32,
                    2 => rng.next_u64() as u32,
                    _ => rng.range(0, 2 * FUZZ_FRAME_BYTES_MAX as u64) as u32,
                };
                input[..PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
            }
            Mutation::PrefixOffByFew => {
                let body = (input.len() - PREFIX_BYTES) as i64;
                let len = (body + rng.range(0, 9) as i64 - 4).max(0) as u32;
                input[..PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
            }
        }

        let (result, allocations, peak) = measure(|| codec.decode::<Frame>(&input));
        let announced = input
            .first_chunk::<PREFIX_BYTES>()
            .map(|p| u32::from_be_bytes(*p) as usize);
        match &result {
            Ok(Some((frame, used))) => {
                outcomes[0] += 1;
                assert_eq!(Some(*used - PREFIX_BYTES), announced);
                assert!(*used <= input.len());
                if matches!(mutation, Mutation::Valid) {
                    assert_eq!(frame, original);
                }
            }
            Ok(None) => {
                outcomes[1] += 1;
                assert!(announced.is_none_or(|len| PREFIX_BYTES + len > input.len()));
                assert_eq!(
                    allocations, 0,
                    "{mutation:?}: allocated for a partial frame"
                );
            }
            Err(CodecError::FrameTooLarge { len, max }) => {
                outcomes[2] += 1;
                assert_eq!(*max, FUZZ_FRAME_BYTES_MAX);
                assert!(*len as usize > FUZZ_FRAME_BYTES_MAX);
                assert_eq!(
                    allocations, 0,
                    "{mutation:?}: allocated for an oversized frame"
                );
            }
            Err(CodecError::Malformed(_) | CodecError::TooManyItems { .. }) => outcomes[3] += 1,
            // `Encode`, or a variant added later: decoding must not return it.
            Err(e) => panic!("decode returned {e}"),
        }
        // Decoding allocates in proportion to the bytes really present, never to a length
        // field alone: see `AMPLIFICATION_MAX`.
        let present = input.len().min(PREFIX_BYTES + FUZZ_FRAME_BYTES_MAX);
        let bound = present * AMPLIFICATION_MAX + 1024;
        assert!(
            peak <= bound,
            "{mutation:?}: {peak} bytes live decoding {} bytes",
            input.len()
        );
        if peak > 0 {
            amplification_max = amplification_max.max(peak as f64 / input.len() as f64);
        }
    }
    eprintln!(
        "fuzz: {FUZZ_FRAMES} frames (seed {FUZZ_SEED:#x}): {} decoded, {} need more bytes, \
         {} too large, {} malformed; worst peak {amplification_max:.1}x the input",
        outcomes[0], outcomes[1], outcomes[2], outcomes[3]
    );
    for (i, name) in ["decoded", "need more", "too large", "malformed"]
        .iter()
        .enumerate()
    {
        assert!(outcomes[i] > 1000, "too few {name} outcomes: {outcomes:?}");
    }
}

/// Peak bytes live per input byte while decoding, at worst. A sequence length is trusted as a
/// capacity hint only when that many bytes remain (postcard), so a claimed entry count can
/// cost one in-memory `Entry` per byte present (serde caps the hint at 1 MiB); real entries
/// take at least 3 bytes each and grow their `Vec` by doubling, which costs less.
const AMPLIFICATION_MAX: usize = std::mem::size_of::<Entry>();

#[test]
fn a_body_of_minimal_entries_allocates_in_proportion_to_its_bytes() {
    // The worst case named above, made on purpose: as many Noop entries as fit (the item
    // bound raised out of the way).
    let codec = Codec::new(1 << 20).with_items_max(1 << 20);
    let entries: Vec<Entry> = (0..100_000)
        .map(|_| Entry {
            term: 1,
            index: 1,
            payload: Payload::Noop,
        })
        .collect();
    let frame = Frame::Raft(Message {
        from: 1,
        to: 2,
        term: 1,
        body: Body::Append {
            base: LogId::default(),
            entries,
            commit: 0,
        },
    });
    let mut buf = Vec::new();
    codec.encode(&frame, &mut buf).unwrap();
    let (result, _, peak) = measure(|| codec.decode::<Frame>(&buf));
    let (decoded, _) = result.unwrap().unwrap();
    assert!(decoded == frame);
    eprintln!(
        "{} bytes of Noop entries: peak {peak} bytes live while decoding ({:.1}x)",
        buf.len(),
        peak as f64 / buf.len() as f64
    );
    assert!(peak <= buf.len() * AMPLIFICATION_MAX + 1024);
}

/// An Append frame of `n` identical Noop entries, built from the encodings of one and two of
/// them (so that a 16 MiB frame is made without holding 5 million entries in memory).
fn frame_of_noop_entries(n: usize) -> Vec<u8> {
    let encode = |k: usize| {
        let frame = Frame::Raft(Message {
            from: 1,
            to: 2,
            term: 1,
            body: Body::Append {
                base: LogId::default(),
                entries: vec![
                    Entry {
                        term: 1,
                        index: 1,
                        payload: Payload::Noop,
                    };
                    k
                ],
                commit: 0,
            },
        });
        let mut buf = Vec::new();
        Codec::default().encode(&frame, &mut buf).unwrap();
        buf.split_off(PREFIX_BYTES)
    };
    let (one, two) = (encode(1), encode(2));
    // The count is the first byte where they differ (a one-byte varint), the entries follow.
    let at = one.iter().zip(&two).position(|(a, b)| a != b).unwrap();
    assert_eq!((one[at], two[at]), (1, 2));
    let entry_len = two.len() - one.len();
    let entry = &one[at + 1..at + 1 + entry_len];
    let mut body = one[..at].to_vec();
    let mut count = n as u64;
    while count >= 0x80 {
        body.push(count as u8 | 0x80);
        count >>= 7;
    }
    body.push(count as u8);
    for _ in 0..n {
        body.extend_from_slice(entry);
    }
    body.extend_from_slice(&one[at + 1 + entry_len..]);
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

/// Issue 21 #13: a 16 MiB frame of empty entries from an authenticated peer decoded to about
/// 450 MB (3 bytes on the wire, 48 in memory, each). Now the decode stops at the item bound,
/// having held no more than that many entries.
#[test]
fn a_16_mib_frame_of_empty_entries_is_refused_at_the_item_bound_not_decoded_to_450_mb() {
    let codec = Codec::default();
    let entry_bytes = frame_of_noop_entries(2).len() - frame_of_noop_entries(1).len();
    let n = (codec.frame_bytes_max() - 64) / entry_bytes;
    let input = frame_of_noop_entries(n);
    assert!(input.len() <= PREFIX_BYTES + codec.frame_bytes_max());
    assert!(input.len() > 15 << 20, "{} bytes", input.len());
    let (result, _, peak) = measure(|| codec.decode::<Frame>(&input));
    assert_eq!(
        result,
        Err(CodecError::TooManyItems {
            max: codec.frame_items_max()
        })
    );
    // The entries vector grows by doubling: at most twice the bound, plus change.
    let bound = 2 * codec.frame_items_max() * std::mem::size_of::<Entry>() + (64 << 10);
    eprintln!(
        "{n} empty entries in {} bytes: refused with {peak} bytes live at the peak \
         (unbounded: {} bytes)",
        input.len(),
        n * std::mem::size_of::<Entry>()
    );
    assert!(peak <= bound, "{peak} bytes live, bound {bound}");
    // Just under the bound decodes.
    let ok = frame_of_noop_entries(codec.frame_items_max() - 1);
    assert!(codec.decode::<Frame>(&ok).unwrap().is_some());
}
