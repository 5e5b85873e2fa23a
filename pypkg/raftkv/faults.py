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
#: - ``reliable-network``: peer messages delivered again as sent.
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
    (``story``), its faults, and the snapshot threshold of its cluster (None: the default)."""

    name: str
    story: str
    schedule: tuple[Fault, ...]
    snapshot_threshold: int | None = None


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
            "snapshot instead of the log",
            (Fault(0.1, "crash-follower"), Fault(0.7, "restart")),
            snapshot_threshold=200,
        ),
    )
}


class Nemesis:
    """Applies a fault schedule to a :class:`raftkv.LocalCluster` as a run advances.

    Attributes: ``down`` (the indexes of the nodes it crashed and has not restarted),
    ``events`` (one line per fault applied, in order) and ``schedule`` (sorted by time).
    """

    def __init__(self, cluster: raftkv.LocalCluster, schedule: Sequence[Fault] = DEMO_SCHEDULE):
        """Prepares to apply ``schedule`` (in order of :attr:`Fault.at`) to ``cluster``."""
        self.cluster = cluster
        self.schedule: list[Fault] = sorted(schedule, key=lambda f: f.at)
        self.down: set[int] = set()
        self.events: list[str] = []
        self._next = 0
        self._crashed: list[int] = []
        self._paused: list[int] = []

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
        stopped = self.down.union(self._paused)
        others = [i for i in range(len(cluster)) if i != leader and i not in stopped]
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
