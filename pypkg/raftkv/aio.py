"""raftkv.aio: the asyncio client, :class:`Clerk` with the same methods as coroutines.

One :class:`Clerk` serves any number of concurrent tasks on one event loop::

    async with raftkv.aio.Clerk(addrs) as clerk:
        await clerk.put(b"k", b"v")
        results = await asyncio.gather(*(clerk.get(b"k") for _ in range(1000)))

Each operation runs as a task on the extension's Rust runtime (no thread per request, no
executor), over connections shared by all of the Clerk's operations; finished operations wake
the event loop through one file descriptor (``loop.add_reader``), and their results are made
into Python objects on the loop's thread. Linux (and POSIX) event loops only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from raftkv._raftkv import Error, History, _AioCore

__all__ = ["Clerk"]


class Clerk:
    """An asyncio client of a raftkv cluster: ``Clerk(addresses, timeout=10.0, history=None,
    tls=None, token=None, read_from="leader")``.

    ``addresses``, ``timeout``, ``history``, ``tls``, ``token`` and ``read_from`` mean what they
    mean for :class:`raftkv.Clerk`; ``get``, ``put``, ``append``, ``delete``, ``server_status``
    and the membership operations (``member_list``, ``member_add``, ``member_promote``,
    ``member_remove``, ``move_leader``) are coroutines that return what the threaded Clerk's
    methods return and raise the same exceptions (:class:`raftkv.KeyNotFound`,
    :class:`raftkv.VersionMismatch`, :class:`raftkv.MaybeApplied`, :class:`raftkv.Timeout`,
    :class:`raftkv.MembershipError`, ...). Unlike the threaded Clerk, one aio Clerk runs many
    operations at once: up to 1,024 in flight, further calls wait for a slot. With a
    ``history``, each concurrent operation is recorded on its own client lane.

    Cancelling a task that awaits an operation abandons the operation (a write may or may not
    be applied; a history records its outcome as unknown). :meth:`close` (or leaving
    ``async with``) abandons every operation in flight: each raises :class:`raftkv.Error`.
    A Clerk belongs to the event loop it is first used on, until its operations are done; use
    it from that loop's thread only.
    """

    def __init__(
        self,
        addresses: Iterable[str] | str,
        timeout: float = 10.0,
        history: History | None = None,
        tls: Mapping[str, str | os.PathLike[str]] | None = None,
        token: str | None = None,
        read_from: Literal["leader", "any"] = "leader",
    ) -> None:
        self._core = _AioCore(addresses, timeout, history, tls, token, read_from)
        self._fd = self._core.fileno()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reading = False

    # --- the operations --------------------------------------------------------------------

    async def get(self, key: bytes | str) -> tuple[bytes, int]:
        """Reads ``key``: returns (value: bytes, version: int). Raises raftkv.KeyNotFound."""
        result: tuple[bytes, int] = await self._run(self._core.start_get, key)
        return result

    async def put(self, key: bytes | str, value: bytes | str, version: int | None = None) -> int:
        """Writes ``value`` under ``key``; returns the key's new version.

        With ``version=N``, only if the key's current version is N (0: the key must not
        exist): raises raftkv.VersionMismatch if not applied, raftkv.KeyNotFound for a missing
        key with N > 0, raftkv.MaybeApplied when a retry cannot tell whether it was applied.
        """
        result: int = await self._run(self._core.start_put, key, value, version)
        return result

    async def append(self, key: bytes | str, value: bytes | str) -> int:
        """Appends ``value`` to ``key``'s value (creating the key); returns the new version."""
        result: int = await self._run(self._core.start_append, key, value)
        return result

    async def delete(self, key: bytes | str) -> None:
        """Deletes ``key``. Raises raftkv.KeyNotFound if it does not exist."""
        await self._run(self._core.start_delete, key)

    async def server_status(self, address: str) -> dict[str, Any]:
        """The status of the server at ``address`` (one attempt), as :class:`raftkv.Clerk`'s."""
        result: dict[str, Any] = await self._run(self._core.start_server_status, address)
        return result

    async def member_list(self) -> dict[str, Any]:
        """The cluster's members, as :meth:`raftkv.Clerk.member_list` returns them."""
        result: dict[str, Any] = await self._run(self._core.start_member_list)
        return result

    async def member_add(
        self, id: int, peer_addr: str, client_addr: str | None = None, learner: bool = False
    ) -> dict[str, Any]:
        """Adds node ``id`` as :meth:`raftkv.Clerk.member_add` does; returns the member list.

        Raises raftkv.MembershipError if the cluster refuses (another change still in progress
        when the timeout ran out: its ``in_progress`` is True).
        """
        result: dict[str, Any] = await self._run(
            self._core.start_member_add, id, peer_addr, client_addr, learner
        )
        return result

    async def member_promote(self, id: int) -> dict[str, Any]:
        """Learner ``id`` becomes a voter; returns the member list."""
        result: dict[str, Any] = await self._run(self._core.start_member_promote, id)
        return result

    async def member_remove(self, id: int) -> dict[str, Any]:
        """Removes node ``id`` as :meth:`raftkv.Clerk.member_remove` does (idempotent across
        the call's own retries); returns the member list.
        """
        result: dict[str, Any] = await self._run(self._core.start_member_remove, id)
        return result

    async def move_leader(self, id: int) -> dict[str, Any]:
        """Hands leadership to voter ``id``; returns the member list once ``id`` leads."""
        result: dict[str, Any] = await self._run(self._core.start_move_leader, id)
        return result

    # --- the rest ----------------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The addresses this Clerk was given."""
        return self._core.addresses

    @property
    def timeout(self) -> float:
        """The per-operation timeout, in seconds."""
        return self._core.timeout

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._core.closed

    def close(self) -> None:
        """Abandons every operation in flight (each raises raftkv.Error) and closes the
        connections; later calls raise raftkv.Error. Idempotent.
        """
        self._stop_reading()
        self._core.close()
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(
                    Error(
                        "the aio Clerk was closed while this operation was in flight; a write "
                        "may or may not have been applied (read the key to find out)"
                    )
                )

    async def __aenter__(self) -> Clerk:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"raftkv.aio.Clerk({self._core.addresses!r}, timeout={self._core.timeout})"

    # --- plumbing ----------------------------------------------------------------------------

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            if self._waiting:
                raise RuntimeError(
                    "this raftkv.aio.Clerk has operations in flight on another event loop; "
                    "use one Clerk per event loop"
                )
            self._loop = loop
            self._slots = asyncio.Semaphore(_AioCore.in_flight_max)
        return loop, self._slots

    async def _run(self, start: Callable[..., int], *args: Any) -> Any:
        if self._core.closed:
            raise Error("the aio Clerk is closed: make a new one")
        loop, slots = self._bind()
        async with slots:
            token = start(*args)  # bad arguments raise here, before anything is sent
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiting[token] = fut
            if not self._reading:
                loop.add_reader(self._fd, self._on_readable)
                self._reading = True
            try:
                return await fut
            except asyncio.CancelledError:
                self._core.cancel(token)
                raise
            finally:
                self._waiting.pop(token, None)
                if not self._waiting:
                    self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _on_readable(self) -> None:
        for token, result, exc in self._core.drain():
            fut = self._waiting.get(token)
            if fut is None or fut.done():
                continue
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)
