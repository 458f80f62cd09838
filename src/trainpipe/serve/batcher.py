"""Dynamic batching: concurrent requests merged into one ONNX Runtime call in a worker thread.

Request handlers (on the asyncio event loop) ``announce()`` an inference as soon as they know the
model, then ``await infer(feeds, rows)``.

- A lone request (no other inference announced or in the worker) whose model call has lately
  been cheap (``inline_run_max_s``; a small model takes tens of microseconds) runs at once inside
  its handler on the event loop thread. Handing it to the worker would cost more than the call:
  a queue put, a thread wake-up, a GIL hand-over and a wake-up of the loop on the way back.
- Everything else goes to one worker thread per model, so the event loop keeps reading and
  parsing requests while the model computes (ONNX Runtime releases the GIL). The worker takes
  the oldest queued job and adds queued jobs until ``max_batch_size`` rows, concatenates them
  along axis 0 (a lone job's arrays pass as they are), runs the model once and hands each job
  its slice of the outputs (views, no copies). It waits up to ``max_batch_delay_s`` for more
  jobs only while another request has been announced but not queued yet; with nothing else in
  flight it runs at once, so a lone client never pays the delay. Under load, jobs that queue up
  while a batch runs form the next batch.
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

_RUN_COST_WEIGHT = 0.2
"""Weight of the newest call in the running estimate of a call's duration: recent enough to
follow the load, smooth enough that one preempted call does not move a model off the loop."""


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
        inline_run_max_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
    ):
        """``inline_run_max_s``: calls estimated to take at most this long run on the event
        loop thread (0: always in the worker thread). ``on_batch(rows, run_s)`` is called after
        every model call (metrics)."""
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.inline_run_max_s = inline_run_max_s
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Written on the event loop thread only (the worker reads ``_announced``): requests
        # announced but not yet at ``infer``, and jobs handed to the worker and not delivered.
        self._announced = 0
        self._in_worker = 0
        self.run_s_estimate: float | None = None
        """Running estimate of a lone request's model call; None until the first one ran."""
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
        """Run ``rows`` rows, alone or batched with others; raises what the model call raised."""
        if self._cheap() and self._alone(announced):
            # Handlers the loop has already started for requests that arrived with this one
            # announce themselves on their first step; one pass of the loop lets them.
            try:
                await asyncio.sleep(0)
            except BaseException:  # cancelled: this request no longer counts as coming
                if announced:
                    self._announced -= 1
                raise
            if self._alone(announced):
                if announced:
                    self._announced -= 1
                return self._timed_run(feeds, rows, lone=True)  # cheap and alone: run it here
        if announced:
            # Before the job is visible to the worker: it must not wait for this very request.
            self._announced -= 1
        loop = asyncio.get_running_loop()
        job = _Job(feeds, rows, loop.create_future(), loop)
        self._in_worker += 1
        self._queue.put(job)
        return await job.future

    def _alone(self, announced: bool) -> bool:
        """No other request is announced, and the worker holds no job."""
        return self._announced <= int(announced) and not self._in_worker

    def _cheap(self) -> bool:
        estimate = self.run_s_estimate
        return estimate is not None and estimate <= self.inline_run_max_s

    def close(self) -> None:
        """Finish every admitted request, then stop the worker thread (returns at once)."""
        self._queue.put(_CLOSE)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    # -- running a call ------------------------------------------------------------------------

    def _timed_run(
        self, feeds: dict[str, np.ndarray], rows: int, *, lone: bool
    ) -> list[np.ndarray]:
        """One model call; a ``lone`` job's duration updates ``run_s_estimate``."""
        started = time.perf_counter()
        try:
            return self._run_batch(feeds)
        finally:
            run_s = time.perf_counter() - started
            if lone:
                estimate = self.run_s_estimate
                self.run_s_estimate = (
                    run_s if estimate is None else estimate + _RUN_COST_WEIGHT * (run_s - estimate)
                )
            if self._on_batch is not None:
                self._on_batch(rows, run_s)

    def _run_jobs(self, batch: list[_Job], rows: int) -> list[tuple[_Job, object, bool]]:
        """Run ``batch`` as one call: (job, its outputs or the exception, ok) per job."""
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {
                name: np.concatenate([job.feeds[name] for job in batch]) for name in batch[0].feeds
            }
        try:
            outputs = self._timed_run(feeds, rows, lone=len(batch) == 1)
        except Exception as exc:
            return [(job, exc, False) for job in batch]
        results: list[tuple[_Job, object, bool]] = []
        offset = 0
        for job in batch:
            end = offset + job.rows
            results.append((job, [out[offset:end] for out in outputs], True))
            offset = end
        return results

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
            self._hand_back(self._run_jobs(batch, rows))

    def _hand_back(self, results: list[tuple[_Job, object, bool]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, object, bool]]] = {}
        for result in results:
            by_loop.setdefault(result[0].loop, []).append(result)
        for loop, loop_results in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._deliver_from_worker, loop_results)
            except RuntimeError:  # the loop closed (server shut down); nobody is waiting
                log.debug("event loop closed before %d results were delivered", len(results))

    def _deliver_from_worker(self, results: list[tuple[_Job, object, bool]]) -> None:
        self._in_worker -= len(results)
        _deliver(results)


def _deliver(results: list[tuple[_Job, object, bool]]) -> None:
    for job, value, ok in results:
        if job.future.done():  # the client went away and the handler was cancelled
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)  # type: ignore[arg-type]
