"""Reused shared-memory hand-over slots: a slot is refilled only once nothing reads it."""

from __future__ import annotations

import gc

import torch

from trainpipe.data.handover import FRESH, HandoverSlots

SPECS = [((4, 2), torch.float32), ((4,), torch.int64)]


def arrived(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The training process's own tensors of a transfer (its mapping of the slot's memory):
    in this one process, the slot's buffers themselves would stay referred to by the slot."""
    return [t.clone() for t in tensors]


def test_a_slot_is_reused_only_after_its_transfer_is_dropped():
    slots = HandoverSlots(workers=1, slots=2)
    first, sent = slots.take(0, 1, SPECS)
    sent[0].fill_(1.0)
    x, y = arrived(sent)
    slots.received(0, first, [x, y])
    batch = x[:2]  # what a caller keeps: a view of the transfer
    del x, y
    second, sent = slots.take(0, 1, SPECS)
    assert second != first  # the first is still read through ``batch``
    slots.received(0, second, arrived(sent))
    assert slots.take(0, 1, SPECS)[0] == FRESH  # both busy: a fresh buffer, no overwrite
    assert batch.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    slots.received(0, FRESH, [])
    assert slots.fresh == 1
    del batch
    gc.collect()
    slots.received(0, FRESH, [])  # each arrival frees what nothing refers to any more
    free = {slots.take(0, 1, SPECS)[0], slots.take(0, 1, SPECS)[0]}
    assert free == {first, second}


def test_a_new_pass_frees_dropped_slots_of_old_passes_but_not_its_own_or_held_ones():
    slots = HandoverSlots(workers=2, slots=3)
    dropped, _ = slots.take(0, 1, SPECS)  # handed over, then dropped unread (abandoned pass)
    held_slot, sent = slots.take(1, 1, SPECS)
    held = arrived(sent)
    slots.received(1, held_slot, held)  # received in pass 1 and still held
    current, _ = slots.take(0, 2, SPECS)  # already filled for pass 2, not received yet
    slots.start_pass(2)
    flags = slots.busy.tolist()
    assert flags[0][dropped] == 0
    assert flags[1][held_slot] == 1
    assert flags[0][current] == 2


def test_buffers_grow_for_a_larger_transfer_and_keep_shapes():
    slots = HandoverSlots(workers=1, slots=1)
    slot, (x, y) = slots.take(0, 1, [((2, 3), torch.float32), ((2,), torch.int64)])
    assert x.shape == (2, 3) and y.shape == (2,) and x.is_shared()
    slots.busy.zero_()
    again, (x, y) = slots.take(0, 1, [((5, 3), torch.float32), ((5,), torch.int64)])
    assert again == slot == 0
    assert x.shape == (5, 3) and y.dtype == torch.int64 and x.is_shared()
