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

__all__ = ["ACTIONS", "DEMO_SCHEDULE", "Action", "Fault", "Nemesis"]

#: What a :class:`Fault` can do.
Action = Literal[
    "crash-leader",
    "crash-follower",
    "restart",
    "partition-leader",
    "isolate-follower",
    "heal",
]

#: Every :data:`Action`, with what it does:
#:
#: - ``crash-leader``: crash the current leader (nothing if there is none);
#: - ``crash-follower``: crash a node that is not the leader;
#: - ``restart``: restart the node the last crash took down (nothing if none is down);
#: - ``partition-leader``: the leader alone on one side, the others on the other;
#: - ``isolate-follower``: cut a node that is not the leader off from every other;
#: - ``heal``: full connectivity again (crashed nodes stay down).
ACTIONS: tuple[Action, ...] = (
    "crash-leader",
    "crash-follower",
    "restart",
    "partition-leader",
    "isolate-follower",
    "heal",
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
        others = [i for i in range(len(cluster)) if i != leader and i not in self.down]
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
        raise ValueError(f"unknown fault action {action!r}: expected one of {ACTIONS}")

    def heal(self) -> None:
        """Full connectivity again (the nodes it crashed stay down: see :attr:`down`)."""
        self.cluster.heal()

    def _crash(self, i: int, role: str) -> str:
        self.cluster.crash(i)
        self.down.add(i)
        self._crashed.append(i)
        return f"crash n{i} ({role})"
