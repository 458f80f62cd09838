"""Shared-memory buffers in which DataLoader workers hand transfers to the training process,
reused from transfer to transfer.

A tensor crosses processes in shared memory. A fresh shared buffer per transfer costs about
2.5 ms per 3 MiB here (a new /dev/shm file, sized, mapped and first touched in both processes)
against 0.1 ms to refill one already mapped: over an epoch that was most of what worker
processes added to reading in one process. So each worker keeps a few buffers ("slots") and a
flag per slot in shared memory says whether the training process may still read it:

- the worker fills a free slot, marks it with the pass it belongs to and hands it over; with
  every slot busy it hands over a fresh buffer instead, so a slot is never refilled while its
  data may still be read (the caller keeps batches as long as it likes);
- the training process frees a slot once nothing there refers to its transfer any more (a weak
  reference to the buffer's storage: the batches it hands out are views of it, so a caller
  keeping a batch keeps the slot busy), checked as each transfer arrives and when a pass
  starts; slots of an abandoned pass that were never received are freed when the next one
  starts (their data was dropped unread).

Features and labels of a transfer are packed in one buffer (:func:`packed_size`,
:func:`unpack`): each shared buffer crossing processes costs a round trip of its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

FRESH = -1
"""Slot number of a transfer handed over in a fresh buffer (every slot was busy)."""


class HandoverSlots:
    """Slots of ``workers`` worker processes, ``slots`` each. Create it before the workers
    start (the flags are shared memory they inherit); :meth:`take` runs in a worker,
    :meth:`received`, :meth:`start_pass` in the training process."""

    def __init__(self, workers: int, slots: int):
        self.busy = torch.zeros((max(1, workers), slots), dtype=torch.int64).share_memory_()
        """0: free; otherwise the pass whose transfer the slot holds."""
        self._buffers: dict[int, torch.Tensor] = {}  # worker side: slot -> its bytes
        self._held: list[tuple[int, int, StorageWeakRef]] = []  # training process side
        self.fresh = 0
        """Training process: transfers received in fresh buffers (every slot was busy)."""

    def __getstate__(self) -> dict:
        # A spawned worker gets the flags; buffers and weak references stay in their process.
        return {"busy": self.busy, "_buffers": {}, "_held": [], "fresh": 0}

    def take(self, worker: int, pass_id: int, nbytes: int) -> tuple[int, torch.Tensor]:
        """Worker side: (slot, ``nbytes`` bytes of shared memory) to fill and hand over; slot
        ``FRESH``: a new buffer, because every slot is in use."""
        flags = self.busy.numpy()[worker]
        free = np.flatnonzero(flags == 0)
        if not len(free):
            return FRESH, torch.empty(nbytes, dtype=torch.uint8).share_memory_()
        slot = int(free[0])
        buffer = self._buffers.get(slot)
        if buffer is None or len(buffer) < nbytes:
            # Sized by the first transfer of the slot (a pass's transfers are all the same
            # size but the last); a larger one later replaces it.
            buffer = torch.empty(nbytes, dtype=torch.uint8).share_memory_()
            self._buffers[slot] = buffer
        flags[slot] = pass_id
        return slot, buffer[:nbytes]

    def received(self, worker: int, slot: int, buffer: torch.Tensor) -> None:
        """Training process: a transfer arrived; its slot stays busy while anything refers to
        ``buffer``'s memory (the tensors made of it are views)."""
        self._release_unused()
        if slot == FRESH:
            self.fresh += 1
            return
        self._held.append((worker, slot, StorageWeakRef(buffer.untyped_storage())))

    def start_pass(self, pass_id: int) -> None:
        """Training process, once the DataLoader has reset its workers for pass ``pass_id``:
        slots of earlier passes that were never received (dropped with an abandoned pass) or
        are no longer referred to are free."""
        self._release_unused()
        held = {(worker, slot) for worker, slot, _ in self._held}
        flags = self.busy.numpy()
        for worker, slot in zip(*np.nonzero(flags), strict=True):
            # A slot of this pass may already be filled by a worker, not received yet.
            if flags[worker, slot] != pass_id and (int(worker), int(slot)) not in held:
                flags[worker, slot] = 0

    def _release_unused(self) -> None:
        flags = self.busy.numpy()
        held = []
        for worker, slot, ref in self._held:
            if ref.expired():
                flags[worker, slot] = 0
            else:
                held.append((worker, slot, ref))
        self._held = held


ALIGN_BYTES = 8


def packed_size(specs: list[tuple[tuple[int, ...], torch.dtype]]) -> int:
    """Bytes of one buffer holding a tensor of each (shape, dtype) of ``specs`` (see
    :func:`unpack`): one buffer per transfer, because each shared buffer crossing processes
    costs a round trip of its own (0.8 ms a transfer for two against 0.5 for one here)."""
    total = 0
    for shape, dtype in specs:
        total = -(-total // ALIGN_BYTES) * ALIGN_BYTES + math.prod(shape) * dtype.itemsize
    return total


def unpack(buffer: torch.Tensor, specs: list[tuple[tuple[int, ...], torch.dtype]]) -> list:
    """The tensors of ``specs`` laid out one after another in the byte ``buffer`` (each at a
    multiple of 8 bytes): views, so writing them fills the buffer."""
    tensors, offset = [], 0
    for shape, dtype in specs:
        offset = -(-offset // ALIGN_BYTES) * ALIGN_BYTES
        size = math.prod(shape) * dtype.itemsize
        tensors.append(buffer[offset : offset + size].view(dtype).view(shape))
        offset += size
    return tensors
