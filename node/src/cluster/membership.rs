//! [`LocalCluster`]'s membership operations (thesis §4): add a node as a learner and promote
//! it once caught up, promote, remove (the leader too, after handing leadership over),
//! transfer leadership, and the configuration in effect by index.

use super::*;

/// Which nodes vote and which only learn, by index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voters (of both halves while a change is in its joint configuration).
    pub voters: Vec<usize>,
    pub learners: Vec<usize>,
}

impl<R: NetRuntime, H: Host> LocalCluster<R, H> {
    /// True if node `i` was taken out of the configuration by [`remove_node`](Self::remove_node).
    pub fn is_removed(&self, i: usize) -> bool {
        self.removed.contains(&i)
    }

    /// The configuration in effect, by index, as the leader has it (else the running node
    /// with the newest log).
    pub async fn members(&self) -> Result<Members, ClusterError> {
        let membership = self.membership().await?;
        let index = |id: &NodeId| (*id - 1) as usize;
        Ok(Members {
            voters: membership.all_voters().iter().map(index).collect(),
            learners: membership.learners().iter().map(index).collect(),
        })
    }

    async fn membership(&self) -> Result<Membership, ClusterError> {
        if let Some(leader) = self.leader().await {
            return Ok(self.status(leader).await?.membership);
        }
        let mut best: Option<Status> = None;
        for i in 0..self.nodes.len() {
            if let Ok(s) = self.status(i).await {
                if best
                    .as_ref()
                    .is_none_or(|b| (s.term, s.last_index) > (b.term, b.last_index))
                {
                    best = Some(s);
                }
            }
        }
        best.map(|s| s.membership).ok_or(ClusterError::NoLeader {
            waited: Duration::ZERO,
        })
    }

    /// Starts a new node (index `len()`, never reused), adds it as a learner (thesis §4.2.1),
    /// waits until it has caught up with the leader's log and, unless `learner`, until the
    /// leader has promoted it to voter. Returns its index.
    pub async fn add_node(
        &mut self,
        learner: bool,
        timeout: Duration,
    ) -> Result<usize, ClusterError> {
        if self.nodes.len() >= NODES_MAX {
            return Err(ClusterError::TooManyNodes { max: NODES_MAX });
        }
        let deadline = self.runtime.now() + timeout;
        let peer = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpListener::bind("127.0.0.1:0")?;
        let i = self.nodes.len();
        self.peer_addrs.push(peer.local_addr()?);
        self.client_addrs.push(client.local_addr()?);
        self.nodes.push(None);
        self.memory.push(MemStorage::new());
        self.record(i, EventKind::NodeAdded);
        self.start_node(i, peer, client).await?;
        self.apply_faults();
        let id = i as NodeId + 1;
        let addrs = MemberAddrs::new(
            self.peer_addrs[i].to_string(),
            self.client_addrs[i].to_string(),
        );
        let change = MemberChange::AddLearner {
            id,
            addrs,
            auto_promote: !learner,
        };
        self.change(change, deadline, &format!("adding node {i}"), |m| {
            m.contains(id)
        })
        .await?;
        // Caught up: the learner has what the leader had committed when it joined; then,
        // unless it stays a learner, the leader's promotion.
        let what = format!("node {i} catching up");
        let target = self
            .retry_leader(deadline, &what, |s| Ok(s.commit_index))
            .await?;
        self.wait_until(deadline, &what, |s| {
            s.id != id
                && s.followers
                    .get(&id)
                    .is_some_and(|f| f.match_index >= target)
        })
        .await?;
        if !learner {
            let what = format!("node {i} being promoted");
            self.wait_until(deadline, &what, |s| {
                s.membership.voters().contains(&id) && !s.membership.is_joint()
            })
            .await?;
        }
        Ok(i)
    }

    /// Learner `i` becomes a voter (thesis §4.3, through a joint configuration).
    pub async fn promote(&self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        self.check(i)?;
        let id = i as NodeId + 1;
        let deadline = self.runtime.now() + timeout;
        let done = |m: &Membership| m.voters().contains(&id) && !m.is_joint();
        self.change(
            MemberChange::Promote { id },
            deadline,
            &format!("promoting node {i}"),
            done,
        )
        .await
    }

    /// Takes node `i` out of the configuration, then stops it for good. A leader first hands
    /// leadership to another voter (thesis §3.10), so that the cluster does not wait for an
    /// election; if that fails, it removes itself and steps down once the change is committed
    /// (thesis §4.2.2).
    pub async fn remove_node(&mut self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        self.check(i)?;
        if self.removed.contains(&i) {
            return Err(ClusterError::Removed { index: i });
        }
        let id = i as NodeId + 1;
        let deadline = self.runtime.now() + timeout;
        if self.leader().await == Some(i) {
            let membership = self.status(i).await?.membership;
            let other = membership
                .voters()
                .iter()
                .map(|v| (*v - 1) as usize)
                .find(|&j| j != i && self.is_running(j));
            if let Some(j) = other {
                let left = deadline.saturating_sub(self.runtime.now());
                // Best effort: on failure the leader removes itself.
                let _ = self
                    .transfer_leader(j, left.min(Duration::from_secs(3)))
                    .await;
            }
        }
        let what = format!("removing node {i}");
        self.change(MemberChange::Remove { id }, deadline, &what, |m| {
            !m.contains(id)
        })
        .await?;
        self.removed.insert(i);
        self.record(i, EventKind::NodeRemoved);
        if self.nodes[i].is_some() {
            self.crash(i).await?;
        }
        Ok(())
    }

    /// Hands leadership to voter `i` (thesis §3.10); returns once `i` leads.
    pub async fn transfer_leader(&self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        self.check(i)?;
        let id = i as NodeId + 1;
        let deadline = self.runtime.now() + timeout;
        let what = format!("moving leadership to node {i}");
        loop {
            if let Ok(s) = self.status(i).await {
                if s.role == Role::Leader {
                    return Ok(());
                }
            }
            let result = match self.leader().await {
                Some(l) => self.node(l)?.transfer_leader(id).await,
                None => Err(ReconfigError::Node(NodeError::NotLeader {
                    leader_hint: None,
                })),
            };
            match result {
                Ok(()) => {}
                Err(ReconfigError::Refused(
                    e @ (MembershipError::NotAMember(_) | MembershipError::NotAVoter(_)),
                )) => return Err(e.into()),
                Err(_) => {}
            }
            if self.runtime.now() >= deadline {
                return Err(ClusterError::MembershipTimeout { what });
            }
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes `change` at the leader until `done` holds for the leader's configuration
    /// (its change committed, C_new included), retrying what passes by itself (no leader,
    /// leadership changed, a change or transfer in progress, the outcome unknown); other
    /// refusals are returned.
    async fn change(
        &self,
        change: MemberChange,
        deadline: Duration,
        what: &str,
        done: impl Fn(&Membership) -> bool,
    ) -> Result<(), ClusterError> {
        let mut proposed = false;
        // Seen in the leader's log (an earlier attempt whose answer was lost): done once the
        // leader has committed up to there.
        let mut settle_at: Option<u64> = None;
        loop {
            if let Some(l) = self.leader().await {
                let status = self.status(l).await?;
                if done(&status.membership) && !status.membership.is_joint() {
                    let target = *settle_at.get_or_insert(status.last_index);
                    if status.commit_index >= target {
                        return Ok(());
                    }
                } else {
                    settle_at = None;
                    match self.node(l)?.change_membership(vec![change.clone()]).await {
                        Ok(m) if done(&m) => return Ok(()),
                        Ok(_) => {}
                        Err(ReconfigError::Refused(e)) if !retryable(&e) => {
                            // A retry of our own change, applied meanwhile: the next round
                            // sees it done.
                            let again = matches!(
                                e,
                                MembershipError::AlreadyAMember(_) | MembershipError::NotAMember(_)
                            );
                            if !(proposed && again) {
                                return Err(e.into());
                            }
                        }
                        Err(_) => {}
                    }
                    proposed = true;
                }
            }
            if self.runtime.now() >= deadline {
                return Err(ClusterError::MembershipTimeout {
                    what: what.to_string(),
                });
            }
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Calls `f` on the leader's status until it answers or the deadline passes.
    async fn retry_leader<T>(
        &self,
        deadline: Duration,
        what: &str,
        f: impl Fn(&Status) -> Result<T, ()>,
    ) -> Result<T, ClusterError> {
        loop {
            if let Some(l) = self.leader().await {
                if let Ok(t) = f(&self.status(l).await?) {
                    return Ok(t);
                }
            }
            if self.runtime.now() >= deadline {
                return Err(ClusterError::MembershipTimeout {
                    what: what.to_string(),
                });
            }
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `cond` holds for the leader's status.
    async fn wait_until(
        &self,
        deadline: Duration,
        what: &str,
        cond: impl Fn(&Status) -> bool,
    ) -> Result<(), ClusterError> {
        self.retry_leader(deadline, what, |s| if cond(s) { Ok(()) } else { Err(()) })
            .await
    }
}

/// A refusal that passes by itself: another change or transfer in progress, a new leader that
/// has not committed an entry of its term, leadership moved.
fn retryable(e: &MembershipError) -> bool {
    matches!(
        e,
        MembershipError::ChangeInProgress
            | MembershipError::NotCommittedInTerm
            | MembershipError::TransferInProgress { .. }
            | MembershipError::NotLeader { .. }
            | MembershipError::WouldLoseQuorum { .. }
    )
}
