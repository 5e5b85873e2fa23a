//! [`Servers`]: how a client finds the leader and retries — the attempts loop shared by the KV
//! [`crate::clerk::Clerk`] and the shard controller's Clerk, generic over the request and
//! reply types of a [`Connector`].
//!
//! One request is sent, with the same body each time, until a final answer or the deadline:
//! `NotLeader` hints are followed (and a hinted address the client did not know is added,
//! unless `follow_hints` is off); unreachable, slow or busy servers are left for the next one;
//! after each round of every server, and when hints keep sending the client around (an
//! election in progress), it backs off with jitter ([`raftkv_backoff::Backoff`]). What an
//! answer means is the protocol's to say ([`Answer`]).

use std::time::Duration;

use futures::future::{select, Either};
use futures::pin_mut;
use raftkv_backoff::Backoff;
use raftkv_raft::{Rng, Runtime};

use crate::clerk::{CallError, ClerkConfig, Connector};
use crate::protocol::Reply;

/// A client keeps at most this many server addresses (given, learned from hints and member
/// lists).
pub const ADDRS_MAX: usize = 256;

/// What one reply means to the attempts loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<Rep> {
    /// The answer to return.
    Final(Rep),
    /// This server does not lead; the leader's client address, if it knows it.
    NotLeader(Option<String>),
    /// Not answered here (busy, stopped, or the outcome not learned in time): try the next
    /// server. A write retried this way carries the same sequence number, so it is applied at
    /// most once.
    Retry,
}

/// What a [`Reply`] means to the attempts loop, whatever the state machine's answer.
pub fn answer<O>(reply: Reply<O>) -> Answer<Reply<O>> {
    match reply {
        Reply::NotLeader { leader_hint } => Answer::NotLeader(leader_hint),
        // Not answered here (a write may still be applied later: its retries carry the same
        // sequence number, so it is applied at most once).
        Reply::Busy | Reply::Timeout | Reply::OutcomeUnknown | Reply::Unavailable(_) => {
            Answer::Retry
        }
        reply => Answer::Final(reply),
    }
}

/// The servers a client talks to, which it tries first, and how it retries.
#[derive(Clone, Debug)]
pub struct Servers {
    addrs: Vec<String>,
    /// Index in `addrs` of the server to try first. Invariant: `leader < addrs.len()`.
    leader: usize,
    config: ClerkConfig,
    /// Backoff jitter.
    rng: Rng,
}

impl Servers {
    /// `addrs` (client addresses; any non-empty subset of the cluster), the first tried first;
    /// the jitter is seeded from the addresses and `now`. Panics if `addrs` is empty: callers
    /// validate addresses first.
    pub fn new(addrs: Vec<String>, config: ClerkConfig, now: Duration) -> Self {
        assert!(!addrs.is_empty(), "a Clerk needs at least one address");
        let seed = addrs.iter().map(|a| a.len() as u64).sum::<u64>()
            ^ u64::try_from(now.as_nanos()).unwrap_or(0);
        Self {
            addrs,
            leader: 0,
            config,
            rng: Rng::new(seed),
        }
    }

    /// The addresses known, the first-tried one first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn config(&self) -> &ClerkConfig {
        &self.config
    }

    /// The index (in [`Self::addrs`]) of the server tried first: the leader as last known.
    pub fn first_tried(&self) -> usize {
        self.leader
    }

    /// Tries a server drawn at random first next time (reads spread over the replicas).
    pub fn try_first_at_random(&mut self) {
        self.leader = self.rng.range(0, self.addrs.len() as u64) as usize;
    }

    /// Tries server `i` (a [`Self::first_tried`] answer) first again, unless it is out of
    /// range.
    pub fn restore_first_tried(&mut self, i: usize) {
        if i < self.addrs.len() {
            self.leader = i;
        }
    }

    /// Adds `addr` to the addresses tried, unless known already, empty, or the list holds
    /// [`ADDRS_MAX`] already (a bound whatever servers answer). True if it was added.
    pub fn learn(&mut self, addr: String) -> bool {
        if addr.is_empty() || self.addrs.len() >= ADDRS_MAX || self.addrs.contains(&addr) {
            return false;
        }
        self.addrs.push(addr);
        true
    }

    /// Sends `body()` until `answer` calls a reply final, or the deadline (`None`).
    pub async fn attempts<R, C, Req, Rep>(
        &mut self,
        runtime: &R,
        connector: &C,
        deadline: Duration,
        body: impl Fn() -> Req,
        answer: impl Fn(Rep) -> Answer<Rep>,
    ) -> Option<Rep>
    where
        R: Runtime,
        C: Connector<Req, Rep>,
    {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut tried_in_round = 0;
        let mut followed_last = false;
        loop {
            let now = runtime.now();
            if now >= deadline {
                return None;
            }
            let addr = self.addrs[self.leader].clone();
            let wait = self.config.attempt_timeout.min(deadline - now);
            let reply: Option<Result<Rep, CallError>> = {
                let call = connector.call(&addr, body());
                let timer = runtime.sleep(wait);
                pin_mut!(call, timer);
                match select(call, timer).await {
                    Either::Left((reply, _)) => Some(reply),
                    Either::Right(_) => None,
                }
            };
            let mut follow = false;
            match reply.map(|r| r.map(&answer)) {
                Some(Ok(Answer::Final(reply))) => return Some(reply),
                Some(Ok(Answer::NotLeader(Some(hint)))) if hint != addr => {
                    if let Some(i) = self.addrs.iter().position(|a| *a == hint) {
                        self.leader = i;
                        follow = true;
                    } else if self.config.follow_hints && self.learn(hint) {
                        self.leader = self.addrs.len() - 1;
                        follow = true;
                    }
                }
                // Not answered here: lost, unreachable, too slow, or not acted on.
                Some(Ok(Answer::NotLeader(_) | Answer::Retry)) | Some(Err(_)) | None => {}
            }
            if !follow {
                self.leader = (self.leader + 1) % self.addrs.len();
                tried_in_round += 1;
            }
            // A first hint is followed at once; back off once every server was tried, and when
            // hints keep sending the Clerk around (an election in progress).
            let ping_pong = follow && followed_last;
            followed_last = follow;
            if ping_pong || tried_in_round >= self.addrs.len() {
                tried_in_round = 0;
                let pause = backoff.next(self.rng.next_u64());
                let left = deadline.saturating_sub(runtime.now());
                runtime.sleep(pause.min(left)).await;
            }
        }
    }
}
