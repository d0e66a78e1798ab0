"""A replica's memory budget: what requests in flight may hold at once.

    budget = MemoryBudget(limit_bytes=2_000_000_000, wait_s=10.0)
    async with budget.reserve(working_bytes(w, h), "photo.jpg"):
        ...decode, predict, encode...

A request states what it will hold (an image's decoded working memory, a body's bytes) before
holding it. Within the limit it goes on at once; beyond it, it waits (first come, first served)
for others to finish, up to ``wait_s``, then gets 503 ``busy`` (the client retries); a request
that alone needs more than the whole budget gets 413 at once. So a burst of large photos slows
down instead of taking the replica out of memory. Pure asyncio.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib

from segsynth.serve.uploads import UploadError


class MemoryBudget:
    def __init__(self, limit_bytes: int, wait_s: float = 10.0):
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes={limit_bytes}; must be >= 1")
        self.limit, self.wait_s = int(limit_bytes), float(wait_s)
        self.used = 0
        self.peak = 0
        self.waited = 0  # reservations that had to wait
        self.refused = 0  # reservations that waited wait_s in vain
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int, what: str):
        nbytes = int(nbytes)
        if nbytes > self.limit:
            raise UploadError(413, "over_memory_budget", f"{what}: needs about {nbytes / 1e6:.0f} MB in flight, over "
                                                         f"the replica's memory budget of {self.limit / 1e6:.0f} MB; "
                                                         "send a smaller image (or fewer at once)")
        if self.used + nbytes > self.limit or self._waiters:
            await self._wait_turn(nbytes, what)
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            self.used -= nbytes
            self._wake()

    async def _wait_turn(self, nbytes: int, what: str) -> None:
        self.waited += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        turn = loop.create_future()
        self._waiters.append(turn)
        try:
            while True:
                if self._waiters[0] is turn and self.used + nbytes <= self.limit:
                    return
                left = deadline - loop.time()
                if left <= 0:
                    self.refused += 1
                    raise UploadError(503, "busy", f"{what}: the replica's memory budget ({self.limit / 1e6:.0f} MB) "
                                                   f"stayed full for {self.wait_s:g} s; retry in a moment")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(turn), left)
                if turn.done():  # woken: look again with a fresh future
                    self._waiters[self._waiters.index(turn)] = turn = loop.create_future()
        finally:
            self._waiters.remove(turn)
            self._wake()

    def _wake(self) -> None:
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
