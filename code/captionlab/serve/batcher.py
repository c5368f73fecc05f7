"""Dynamic batching: requests that arrive close together are decoded as one batch.

The batched decoding engine makes a batch of 32 images cost little more than one on a CPU, so a server
that decodes concurrent requests together answers many more per second. The first request waits at
most ``max_wait_ms`` for company; requests with different decoding settings are never mixed (each
setting is its own batch). Decoding runs in one worker thread, off the event loop, so the server keeps
accepting and answering (health checks, 503s) while the model works. A full queue is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError


class QueueFull(Exception):
    """More requests wait than ``max_queue``: the caller should answer 503 and ask the client to retry."""


@dataclass
class Job:
    item: Any
    key: Hashable  # requests with equal keys may share a batch
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(
        self,
        run: Callable[[list[Any], Hashable], list[dict[str, Any]]],
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        max_queue: int = 256,
    ) -> None:
        """``run(items, key)`` decodes one batch (in the worker thread) and returns one dict per item."""
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise InputError("max_batch and max_queue must be at least 1, max_wait_ms at least 0")
        self.run, self.max_batch, self.max_wait, self.max_queue = run, max_batch, max_wait_ms / 1000, max_queue
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="captionlab-decode")
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        self.batches = 0  # decoded so far, for /health

    def _start(self) -> None:
        """Started lazily on the first request, inside the server's own event loop."""
        if self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._work())

    @property
    def waiting(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def submit(self, item: Any, key: Hashable) -> dict[str, Any]:
        self._start()
        assert self.queue is not None
        if self.queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.queue.qsize()} requests are waiting (--max-queue {self.max_queue})")
        job = Job(item, key, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future

    async def _collect(self) -> list[Job]:
        """The next batch: one job, then whatever arrives within max_wait, up to max_batch jobs."""
        assert self.queue is not None
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                jobs = [j for j in jobs if not j.future.done()]  # a request cancelled while waiting is skipped
                if not jobs:
                    continue
                start = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, self.run, [j.item for j in jobs], key)
                except Exception as e:  # one bad batch fails its own requests, not the server
                    for j in jobs:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                self.batches += 1
                decode_ms = (time.perf_counter() - start) * 1000
                for j, r in zip(jobs, results):
                    if not j.future.done():
                        timing = {"queue_ms": (start - j.queued) * 1000, "decode_ms": decode_ms, "batch": len(jobs)}
                        j.future.set_result({**r, "timings": timing})

    def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
