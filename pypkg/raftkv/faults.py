"""Fault schedules for a :class:`raftkv.LocalCluster`: what ``raftkv demo`` does to its nodes.

A schedule is a sequence of :class:`Fault`\\ s, each an action at a point of the run given as a
fraction of its length (0.0: the start, 1.0: the end). A :class:`Nemesis` applies a schedule to
a cluster as the run goes on; it picks its victims when a fault is due (the leader at that
moment, or a node that is not the leader) and remembers which node is down::

    import time
    import raftkv
    from raftkv.faults import DEMO_SCHEDULE, Nemesis

    with raftkv.LocalCluster(n=3) as cluster:
        cluster.wait_leader()
        nemesis = Nemesis(cluster, DEMO_SCHEDULE)
        t0, seconds = time.monotonic(), 10.0
        while (elapsed := time.monotonic() - t0) < seconds:
            for event in nemesis.advance(elapsed / seconds, elapsed):
                print(event)  # e.g. " 1.0s crash n0 (leader)"
            time.sleep(0.05)
        nemesis.heal()

Nodes are named by their LocalCluster index, ``n0``..``n{n-1}``, as everywhere on LocalCluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import raftkv

__all__ = ["ACTIONS", "DEMO_SCHEDULE", "SCENARIOS", "Action", "Fault", "Nemesis", "Scenario"]

#: What a :class:`Fault` can do.
Action = Literal[
    "crash-leader",
    "crash-follower",
    "restart",
    "partition-leader",
    "isolate-follower",
    "heal",
    "pause-follower",
    "resume",
    "flaky-network",
    "reliable-network",
    "add-node",
    "transfer-leader",
    "remove-follower",
    "remove-leader",
]

#: Every :data:`Action`, with what it does:
#:
#: - ``crash-leader``: crash the current leader (nothing if there is none);
#: - ``crash-follower``: crash a node that is not the leader;
#: - ``restart``: restart the node the last crash took down (nothing if none is down);
#: - ``partition-leader``: the leader alone on one side, the others on the other;
#: - ``isolate-follower``: cut a node that is not the leader off from every other;
#: - ``heal``: full connectivity again (crashed nodes stay down);
#: - ``pause-follower``: pause a node that is not the leader, as SIGSTOP does (a slow node: its
#:   disk, its CPU or its timers stop, its sockets stay open);
#: - ``resume``: resume the node the last pause stopped (nothing if none is paused);
#: - ``flaky-network``: peer messages dropped (10 %), delayed (0..27 ms) and reordered;
#: - ``reliable-network``: peer messages delivered again as sent;
#: - ``add-node``: start a new node, add it as a learner, wait until it has caught up and is
#:   promoted to voter (:meth:`LocalCluster.add_node`);
#: - ``transfer-leader``: hand leadership to the node ``add-node`` last added (else to a
#:   follower), and wait until it leads;
#: - ``remove-follower``: take a voter that is not the leader out of the configuration (the
#:   lowest index), then stop it;
#: - ``remove-leader``: take the leader out of the configuration; it steps down once the change
#:   commits, and the others elect a leader among themselves.
#:
#: A membership action that fails (a change refused or timed out under other faults) is
#: reported in its event line; it does not stop the run.
ACTIONS: tuple[Action, ...] = (
    "crash-leader",
    "crash-follower",
    "restart",
    "partition-leader",
    "isolate-follower",
    "heal",
    "pause-follower",
    "resume",
    "flaky-network",
    "reliable-network",
    "add-node",
    "transfer-leader",
    "remove-follower",
    "remove-leader",
)


@dataclass(frozen=True)
class Fault:
    """One step of a fault schedule: ``action`` once ``at`` (a fraction of the run) has passed."""

    at: float
    action: Action

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}: expected one of {ACTIONS}")
        if not 0.0 <= self.at <= 1.0:
            raise ValueError(f"a fault's time is a fraction of the run (0..1), not {self.at}")


#: ``raftkv demo``'s schedule: a leader crash and its restart, a partition of the leader, an
#: isolated follower, a follower crash and its restart, each healed before the next.
DEMO_SCHEDULE: tuple[Fault, ...] = (
    Fault(0.10, "crash-leader"),
    Fault(0.25, "restart"),
    Fault(0.35, "partition-leader"),
    Fault(0.55, "heal"),
    Fault(0.62, "isolate-follower"),
    Fault(0.78, "heal"),
    Fault(0.82, "crash-follower"),
    Fault(0.92, "restart"),
)


@dataclass(frozen=True)
class Scenario:
    """A named fault schedule for ``raftkv demo --scenario NAME``: what it shows, in a sentence
    (``story``), its faults, and the snapshot threshold and trailing log (entries kept before a
    snapshot's point) of its cluster (None: the defaults)."""

    name: str
    story: str
    schedule: tuple[Fault, ...]
    snapshot_threshold: int | None = None
    trailing_log: int | None = None


#: The named scenarios of ``raftkv demo --scenario NAME`` (``raftkv demo --list`` prints them).
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "mixed",
            "the default demo: a leader crash and restart, a partitioned leader, an isolated "
            "follower, a follower crash and restart",
            DEMO_SCHEDULE,
        ),
        Scenario(
            "leader-crash",
            "the leader crashes: the others elect a new one within an election timeout and "
            "keep serving; the old leader restarts as a follower and catches up",
            (Fault(0.2, "crash-leader"), Fault(0.6, "restart")),
        ),
        Scenario(
            "minority-partition",
            "one follower is cut off: the majority keeps committing without it; after the "
            "heal it catches up from the leader",
            (Fault(0.2, "isolate-follower"), Fault(0.7, "heal")),
        ),
        Scenario(
            "leader-isolated",
            "the leader is partitioned away: it cannot commit, the majority elects a new "
            "leader in a higher term; on rejoining, the old leader sees that term and steps "
            "down, and its uncommitted entries are replaced",
            (Fault(0.2, "partition-leader"), Fault(0.65, "heal")),
        ),
        Scenario(
            "flaky-network",
            "peer messages are dropped, delayed and reordered: Raft retries and the history "
            "stays linearizable, at a lower throughput",
            (Fault(0.15, "flaky-network"), Fault(0.75, "reliable-network")),
        ),
        Scenario(
            "slow-follower",
            "a follower stops (like a stalled disk or SIGSTOP) and resumes: the other two "
            "commit meanwhile; on resuming it handles what piled up, late, and catches up",
            (Fault(0.2, "pause-follower"), Fault(0.7, "resume")),
        ),
        Scenario(
            "snapshot-catch-up",
            "a follower is down while the others write enough to compact their logs: on "
            "restarting it is behind the leader's first entry, so it catches up from a "
            "snapshot instead of the log (the cluster keeps no trailing log, which would let a "
            "follower this little behind catch up from the log)",
            (Fault(0.1, "crash-follower"), Fault(0.7, "restart")),
            snapshot_threshold=200,
            trailing_log=0,
        ),
        Scenario(
            "membership",
            "a fourth node joins as a learner, catches up and is promoted to voter; leadership "
            "moves to it; then one of the first nodes is removed: clients read and write "
            "throughout, and the cluster ends with three voters",
            (
                Fault(0.15, "add-node"),
                Fault(0.45, "transfer-leader"),
                Fault(0.7, "remove-follower"),
            ),
        ),
        Scenario(
            "replace-leader",
            "a new node joins, then the leader is removed from the configuration: it keeps "
            "leading until the change commits, then steps down, and the remaining voters "
            "elect a leader among themselves",
            (Fault(0.2, "add-node"), Fault(0.55, "remove-leader")),
        ),
    )
}


class Nemesis:
    """Applies a fault schedule to a :class:`raftkv.LocalCluster` as a run advances.

    Attributes: ``down`` (the indexes of the nodes it crashed and has not restarted),
    ``removed`` (the nodes it took out of the configuration), ``events`` (one line per fault
    applied, in order) and ``schedule`` (sorted by time).
    """

    def __init__(self, cluster: raftkv.LocalCluster, schedule: Sequence[Fault] = DEMO_SCHEDULE):
        """Prepares to apply ``schedule`` (in order of :attr:`Fault.at`) to ``cluster``."""
        self.cluster = cluster
        self.schedule: list[Fault] = sorted(schedule, key=lambda f: f.at)
        self.down: set[int] = set()
        self.removed: set[int] = set()
        self.events: list[str] = []
        self._next = 0
        self._crashed: list[int] = []
        self._paused: list[int] = []
        self._added: list[int] = []

    @property
    def done(self) -> bool:
        """True once every fault of the schedule has been applied."""
        return self._next >= len(self.schedule)

    def advance(self, fraction: float, elapsed: float = 0.0) -> list[str]:
        """Applies every fault due at ``fraction`` of the run that is not applied yet.

        ``elapsed`` (seconds since the start) only labels the events. Returns the events of the
        faults applied by this call (a fault with nothing to act on, such as ``restart`` with no
        node down, applies no change and gives no event).
        """
        out: list[str] = []
        while self._next < len(self.schedule) and fraction >= self.schedule[self._next].at:
            fault = self.schedule[self._next]
            self._next += 1
            what = self.apply(fault.action)
            if what is not None:
                line = f"{elapsed:5.1f}s {what}"
                self.events.append(line)
                out.append(line)
        return out

    def apply(self, action: Action) -> str | None:
        """Does ``action`` now; returns what it did in a few words, or None if nothing."""
        cluster = self.cluster
        leader = cluster.leader()
        stopped = self.down.union(self._paused, self.removed)
        others = [i for i in range(len(cluster)) if i != leader and i not in stopped]
        if action in ("add-node", "transfer-leader", "remove-follower", "remove-leader"):
            try:
                return self._membership(action, leader, others)
            except raftkv.Error as e:
                return f"{action} failed: {type(e).__name__}: {e}"
        if action == "crash-leader":
            if leader is None:
                return None
            return self._crash(leader, "leader")
        if action == "crash-follower":
            if not others:
                return None
            return self._crash(others[0], "follower")
        if action == "restart":
            if not self._crashed:
                return None
            i = self._crashed.pop()
            cluster.restart(i)
            self.down.discard(i)
            return f"restart n{i}"
        if action == "partition-leader":
            if leader is None:
                return None
            rest = [i for i in range(len(cluster)) if i != leader]
            cluster.partition([leader], rest)
            return f"partition [n{leader}] | [{', '.join(f'n{i}' for i in rest)}]"
        if action == "isolate-follower":
            if not others:
                return None
            cluster.isolate(others[0])
            return f"isolate n{others[0]}"
        if action == "heal":
            cluster.heal()
            return "heal"
        if action == "pause-follower":
            if not others:
                return None
            cluster.pause(others[0])
            self._paused.append(others[0])
            return f"pause n{others[0]} (follower)"
        if action == "resume":
            if not self._paused:
                return None
            i = self._paused.pop()
            cluster.resume(i)
            return f"resume n{i}"
        if action == "flaky-network":
            cluster.set_unreliable()
            return "flaky network (10% dropped, 0-27 ms delays, reordered)"
        if action == "reliable-network":
            cluster.set_reliable()
            return "reliable network"
        raise ValueError(f"unknown fault action {action!r}: expected one of {ACTIONS}")

    def _membership(self, action: Action, leader: int | None, others: list[int]) -> str | None:
        cluster = self.cluster
        if action == "add-node":
            i = cluster.add_node(timeout=30.0)
            self._added.append(i)
            return f"add n{i} (joined as a learner, caught up, promoted to voter)"
        if leader is None:
            return None
        if action == "transfer-leader":
            voters = set(cluster.members()["voters"])
            targets = [i for i in self._added[::-1] + others if i in voters and i != leader]
            if not targets:
                return None
            cluster.transfer_leader(targets[0], timeout=10.0)
            return f"transfer leadership n{leader} -> n{targets[0]}"
        victim = leader if action == "remove-leader" else min(others, default=None)
        if victim is None:
            return None
        cluster.remove_node(victim, timeout=30.0)
        self.removed.add(victim)
        role = "leader" if victim == leader else "follower"
        return f"remove n{victim} ({role}) from the configuration"

    def heal(self) -> None:
        """Full connectivity again, a reliable network, the nodes it paused resumed (the nodes it
        crashed stay down: see :attr:`down`)."""
        while self._paused:
            self.cluster.resume(self._paused.pop())
        self.cluster.set_reliable()
        self.cluster.heal()

    def _crash(self, i: int, role: str) -> str:
        self.cluster.crash(i)
        self.down.add(i)
        self._crashed.append(i)
        return f"crash n{i} ({role})"
