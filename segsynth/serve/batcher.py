"""Continuous batching for one replica: concurrent requests share forward passes.

    batcher = Batcher(predictor.predict, max_batch_size=8, wait_s=0.005)
    with batcher.incoming():              # this request is on its way (decoding)
        rgb = decode(...)
    mask, timing = await batcher.submit(rgb)

One loop takes the next batch only when the model is free, so every request that arrived during
a forward pass rides the next one: at concurrency 1 a request never waits, under load the batches
fill by themselves. (Serve's ``@serve.batch`` forms batches eagerly and queues them behind the
running one, so under CPU load almost every batch held one image.) A partial batch waits up to
``wait_s`` only while other requests are still decoding (announced with :meth:`incoming`), never
for requests that may not come. The model runs in a worker thread: the event loop keeps reading,
decoding and encoding other requests meanwhile. Pure asyncio, no Ray.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class ModelThread(concurrent.futures.ThreadPoolExecutor):
    """The one thread a replica's model runs on: loading, warm-up and every forward pass.

    torch's CPU kernels run on an OpenMP (libgomp) team per thread that calls them. A second such
    thread (asyncio's pool hands a forward pass to any of its threads; an actor loads the model on
    another) brings a second team, and once a process has more OpenMP threads than cores libgomp
    stops spinning between parallel regions and puts its threads to sleep after each one, so every
    forward pass pays for waking them."""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="segsynth-model")


@dataclass(frozen=True)
class BatchTiming:
    queue_s: float  # from submit to the start of its forward pass
    model_s: float  # the forward pass it rode
    batch_size: int


class Batcher:
    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], max_batch_size: int = 8, wait_s: float = 0.005,
                 executor: concurrent.futures.Executor | None = None):
        """``executor``: where ``run`` runs (:class:`ModelThread` keeps every forward pass on one
        thread); None: asyncio's default pool."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size}; must be >= 1")
        self.run, self.max_batch_size, self.wait_s, self.executor = run, max_batch_size, wait_s, executor
        self.sizes: collections.Counter = collections.Counter()  # batch size -> count
        self._queue: collections.deque = collections.deque()
        self._incoming = 0
        self._changed: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    @contextlib.contextmanager
    def incoming(self):
        """Announce a request that will :meth:`submit` soon (it is decoding): a partial batch
        waits for it up to ``wait_s``."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._notify()

    async def submit(self, item: Any) -> tuple[Any, BatchTiming]:
        """The model's answer for ``item`` and how long it queued and computed."""
        if self._loop_task is None or self._loop_task.done():
            self._changed = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="segsynth-batcher")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, time.perf_counter()))
        self._notify()
        return await future

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self, timeout: float | None) -> None:
        assert self._changed is not None
        self._changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _loop(self) -> None:
        while True:
            while not self._queue:
                await self._wait_change(None)
            deadline = time.perf_counter() + self.wait_s
            # company is worth waiting for only if it is on its way
            while len(self._queue) < self.max_batch_size and self._incoming > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                await self._wait_change(left)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            batch = [b for b in batch if not b[1].done()]  # a client that went away is not computed
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run,
                                                                           [item for item, _, _ in batch])
            except Exception as e:  # noqa: BLE001  the model's failure is every rider's, the loop goes on
                log.exception("the model failed on a batch of %d", len(batch))
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            model_s = time.perf_counter() - started
            self.sizes[len(batch)] += 1
            for (_, future, queued), result in zip(batch, results):
                if not future.done():
                    future.set_result((result, BatchTiming(started - queued, model_s, len(batch))))
