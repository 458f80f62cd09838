"""Dynamic batching: concurrent requests merged into one ONNX Runtime call in a worker thread.

Request handlers (on the asyncio event loop) ``announce()`` an inference as soon as they know the
model, then ``await infer(feeds, rows)``. One worker thread per model takes the oldest queued job,
adds queued jobs until ``max_batch_size`` rows, concatenates them along axis 0, runs the model
once (ONNX Runtime releases the GIL, so the event loop keeps parsing requests meanwhile) and hands
each job its slice of the outputs.

The worker waits up to ``max_batch_delay_s`` for more jobs only while another request has been
announced but not queued yet; with nothing else in flight it runs at once, so a lone client does
not pay the delay. Under load, jobs that queue up while a batch runs form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("trainpipe.serve")

RunBatch = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class _Job:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)


_CLOSE = object()


class DynamicBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
    ):
        """``on_batch(rows, run_s)`` is called after every model call (metrics)."""
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Announced but not yet queued; only the event loop thread writes it.
        self._announced = 0
        self._closing = False
        self._thread = threading.Thread(
            target=self._work, name=f"trainpipe-batcher-{name}", daemon=True
        )
        self._thread.start()

    def announce(self) -> None:
        """A request for this model is being decoded and will call ``infer`` or ``withdraw``."""
        self._announced += 1

    def withdraw(self) -> None:
        """An announced request failed before ``infer``."""
        self._announced -= 1

    async def infer(
        self, feeds: dict[str, np.ndarray], rows: int, *, announced: bool = True
    ) -> list[np.ndarray]:
        """Queue ``rows`` rows and wait for their outputs; raises what the model call raised."""
        loop = asyncio.get_running_loop()
        job = _Job(feeds, rows, loop.create_future(), loop)
        self._queue.put(job)
        if announced:
            self._announced -= 1
        return await job.future

    def close(self) -> None:
        """Finish every admitted request, then stop the worker thread (returns at once)."""
        self._queue.put(_CLOSE)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    # -- worker thread -------------------------------------------------------------------------

    def _next(self, timeout_s: float | None) -> object | None:
        try:
            if timeout_s is None:
                return self._queue.get()
            if timeout_s <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _work(self) -> None:
        carry: _Job | None = None
        while True:
            if carry is not None:
                first, carry = carry, None
            else:
                # Once closing, keep serving requests announced before the close, then stop.
                item = self._next(0.05 if self._closing else None)
                if item is _CLOSE:
                    self._closing = True
                    continue
                if item is None:
                    if self._closing and self._announced <= 0:
                        return
                    continue
                first = item
            batch = [first]
            rows = first.rows
            deadline = first.queued_at + self.max_batch_delay_s
            while rows < self.max_batch_size:
                item = self._next(0)
                if item is None:
                    if self._announced <= 0:
                        break
                    item = self._next(deadline - time.monotonic())
                    if item is None:
                        break
                if item is _CLOSE:
                    self._closing = True
                    continue
                if rows + item.rows > self.max_batch_size:
                    carry = item
                    break
                batch.append(item)
                rows += item.rows
            self._run(batch, rows)

    def _run(self, batch: list[_Job], rows: int) -> None:
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {
                name: np.concatenate([job.feeds[name] for job in batch]) for name in batch[0].feeds
            }
        started = time.perf_counter()
        try:
            outputs = self._run_batch(feeds)
        except Exception as exc:
            results: list[tuple[_Job, object, bool]] = [(job, exc, False) for job in batch]
        else:
            results = []
            offset = 0
            for job in batch:
                end = offset + job.rows
                results.append((job, [out[offset:end] for out in outputs], True))
                offset = end
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, object, bool]]] = {}
        for result in results:
            by_loop.setdefault(result[0].loop, []).append(result)
        for loop, loop_results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, loop_results)
            except RuntimeError:  # the loop closed (server shut down); nobody is waiting
                log.debug("event loop closed before %d results were delivered", len(batch))


def _deliver(results: list[tuple[_Job, object, bool]]) -> None:
    for job, value, ok in results:
        if job.future.done():  # the client went away and the handler was cancelled
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)  # type: ignore[arg-type]
