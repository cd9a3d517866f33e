"""The scheduler: pools the rows of concurrent requests into batches, whatever their directions.

Policy, in one place (`Scheduler._next_batch`):
- rows wait in one bounded queue (`max_queue_rows`); a request that would overflow it is refused at once
  (`Overloaded`, with a retry-after estimate from the recent rows per second) instead of growing the queue;
- a batch starts when it is full or when the oldest queued row has waited `max_wait_s`;
- a batch holds rows that ask for the same number of alternatives (one generate call; `group` may ask for more
  in common, e.g. one direction per batch), sorted by source
  length and cut like `lslo eval`'s batches (rows x longest source <= `max_batch_tokens`, at most
  `max_batch_rows` rows); the batch taken is the one holding the oldest row, so no row starves;
- a row whose request's deadline passes while queued fails with `DeadlineExceeded`; a request whose client
  went away (its task cancelled) drops its queued rows;
- `close()` refuses new requests (`Closed`), lets the queue and the running batch finish, then stops.

One batch runs at a time, in one worker thread (`run_batch`, the engine's `translate`), so the event loop
keeps accepting and queueing requests meanwhile. `clock` is injectable: tests drive the scheduler with a fake
clock and a fake engine.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """The queue is full: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the translation queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The server is shutting down and takes no new requests."""


class DeadlineExceeded(Exception):
    """The request waited in the queue past its deadline."""


class Clock:
    """Real time: `now()` and a wait on an event that gives up after `timeout` seconds."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


@dataclass
class _Item:
    row: Any  # an engine Row: needs .tokens and .alternatives
    future: asyncio.Future
    arrived: float
    deadline: float
    seq: int


@dataclass
class Stats:
    """What the scheduler has done (the metrics read it; tests assert on it)."""

    batches: list[int] = field(default_factory=list)  # rows of each batch run, in order (last 1000)
    rows: int = 0
    tokens: int = 0
    rows_per_s: float = 0.0  # EWMA over batches: rows / batch seconds
    tokens_per_s: float = 0.0


class Scheduler:
    """Batches rows of concurrent `submit` calls into `run_batch` calls (see the module docstring)."""

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], *, max_batch_tokens: int = 4096,
                 max_batch_rows: int = 64, max_wait_s: float = 0.01, max_queue_rows: int = 512,
                 timeout_s: float = 60.0, clock: Clock | None = None, metrics: Any = None,
                 group: Callable[[Any], Any] | None = None) -> None:  # fmt: skip
        if max_batch_tokens < 1 or max_batch_rows < 1 or max_queue_rows < 1 or max_wait_s < 0 or timeout_s <= 0:
            raise ValueError("max_batch_tokens, max_batch_rows, max_queue_rows >= 1; max_wait_s >= 0; timeout_s > 0")
        self.run_batch = run_batch
        self.max_batch_tokens, self.max_batch_rows = max_batch_tokens, max_batch_rows
        self.max_wait_s, self.max_queue_rows, self.timeout_s = max_wait_s, max_queue_rows, timeout_s
        self.clock = clock or Clock()
        self.group = group or (lambda row: row.alternatives)  # rows of one batch share this key
        self.metrics = metrics
        self.stats = Stats()
        self._queue: list[_Item] = []
        self._seq = 0
        self._running = 0  # rows in the batch being generated
        self._closing = False
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lslo-engine")

    # -- life ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Refuse new requests, finish every queued and running row, then stop."""
        self._closing = True
        if self._event is not None:
            self._event.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def queued_rows(self) -> int:
        return len(self._queue)

    @property
    def busy_rows(self) -> int:
        return self._running

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        rate = self.stats.rows_per_s
        pending = len(self._queue) + self._running
        return max(1, math.ceil(pending / rate)) if rate > 0 else 1

    # -- requests -----------------------------------------------------------------------------------
    async def submit(self, rows: Sequence[Any], timeout_s: float | None = None) -> list[Any]:
        """The results of `rows` (in order) once translated; `Overloaded`, `Closed` or `DeadlineExceeded` else."""
        if self._closing or self._task is None:
            raise Closed("the server is shutting down")
        if len(self._queue) + len(rows) > self.max_queue_rows:
            if self.metrics is not None:
                self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(self.retry_after())
        loop = asyncio.get_running_loop()
        now = self.clock.now()
        deadline = now + (self.timeout_s if timeout_s is None else timeout_s)
        items = []
        for row in rows:
            items.append(_Item(row, loop.create_future(), now, deadline, self._seq))
            self._seq += 1
        self._queue.extend(items)
        self._gauge()
        assert self._event is not None
        self._event.set()
        try:
            return list(await asyncio.gather(*(i.future for i in items)))
        except BaseException:
            for i in items:  # the client went away (cancelled) or a row failed: drop what is still queued
                if not i.future.done():
                    i.future.cancel()
            self._drop_done()
            raise

    # -- the loop -----------------------------------------------------------------------------------
    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_rows.set(len(self._queue))

    def _drop_done(self) -> None:
        """Remove cancelled rows and fail rows past their deadline."""
        now = self.clock.now()
        keep = []
        for item in self._queue:
            if item.future.done():
                continue
            if now >= item.deadline:
                item.future.set_exception(DeadlineExceeded("the request waited past its deadline"))
                if self.metrics is not None:
                    self.metrics.rejected.labels("deadline").inc()
                continue
            keep.append(item)
        self._queue = keep
        self._gauge()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        """(the batch holding the oldest row, whether it is full: more rows could not join it)."""
        oldest = self._queue[0]
        key = self.group(oldest.row)
        same = [i for i in self._queue if self.group(i.row) == key]
        same.sort(key=lambda i: (-i.row.tokens, i.seq))
        batches: list[list[_Item]] = []
        for item in same:
            b = batches[-1] if batches else None
            if b and len(b) < self.max_batch_rows and (len(b) + 1) * b[0].row.tokens <= self.max_batch_tokens:
                b.append(item)
            else:
                batches.append([item])
        batch = next(b for b in batches if oldest in b)
        full = len(batches) > 1 or len(batch) >= self.max_batch_rows or (len(batch) + 1) * batch[0].row.tokens > self.max_batch_tokens
        return batch, full

    async def _loop(self) -> None:
        assert self._event is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_done()
            if not self._queue:
                if self._closing:
                    return
                self._event.clear()
                await self._event.wait()
                continue
            batch, full = self._next_batch()
            wait = self._queue[0].arrived + self.max_wait_s - self.clock.now()
            if not full and wait > 0 and not self._closing:
                self._event.clear()
                await self.clock.wait(self._event, wait)
                continue
            taken = {id(i) for i in batch}
            self._queue = [i for i in self._queue if id(i) not in taken]
            self._gauge()
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        rows = [i.row for i in batch]
        self._running = len(rows)
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, rows)
        except Exception as err:  # noqa: BLE001 - the batch's requests get the error, the server goes on
            for i in batch:
                if not i.future.done():
                    i.future.set_exception(err)
            return
        finally:
            self._running = 0
        seconds = max(time.perf_counter() - start, 1e-9)
        tokens = sum(r.tokens for r in rows)
        s = self.stats
        s.batches = [*s.batches[-999:], len(rows)]
        s.rows += len(rows)
        s.tokens += tokens
        a = 0.3 if s.rows_per_s else 1.0
        s.rows_per_s = (1 - a) * s.rows_per_s + a * len(rows) / seconds
        s.tokens_per_s = (1 - a) * s.tokens_per_s + a * tokens / seconds
        if self.metrics is not None:
            self.metrics.batch(len(rows), tokens, seconds, s)
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
