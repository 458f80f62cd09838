"""Reused shared-memory hand-over slots: a slot is refilled only once nothing reads it."""

from __future__ import annotations

import gc

import torch

from trainpipe.data.handover import FRESH, HandoverSlots, packed_size, unpack

SPECS = [((3, 2), torch.float32), ((3,), torch.int64)]
NBYTES = packed_size(SPECS)


def arrived(buffer: torch.Tensor) -> torch.Tensor:
    """The training process's own tensor of a transfer (its mapping of the slot's memory): in
    this one process, the slot's buffer itself would stay referred to by the slot."""
    return buffer.clone()


def test_a_slot_is_reused_only_after_its_transfer_is_dropped():
    slots = HandoverSlots(workers=1, slots=2)
    first, sent = slots.take(0, 1, NBYTES)
    unpack(sent, SPECS)[0].fill_(1.0)
    buffer = arrived(sent)
    slots.received(0, first, buffer)
    batch = unpack(buffer, SPECS)[0][:2]  # what a caller keeps: a view of the transfer
    del buffer
    second, sent = slots.take(0, 1, NBYTES)
    assert second != first  # the first is still read through ``batch``
    slots.received(0, second, arrived(sent))
    assert slots.take(0, 1, NBYTES)[0] == FRESH  # both busy: a fresh buffer, no overwrite
    assert batch.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    slots.received(0, FRESH, torch.empty(0))
    assert slots.fresh == 1
    del batch
    gc.collect()
    slots.received(0, FRESH, torch.empty(0))  # each arrival frees what nothing refers to
    free = {slots.take(0, 1, NBYTES)[0], slots.take(0, 1, NBYTES)[0]}
    assert free == {first, second}


def test_a_new_pass_frees_dropped_slots_of_old_passes_but_not_its_own_or_held_ones():
    slots = HandoverSlots(workers=2, slots=3)
    dropped, _ = slots.take(0, 1, NBYTES)  # handed over, then dropped unread (abandoned pass)
    held_slot, sent = slots.take(1, 1, NBYTES)
    held = arrived(sent)
    slots.received(1, held_slot, held)  # received in pass 1 and still held
    current, _ = slots.take(0, 2, NBYTES)  # already filled for pass 2, not received yet
    slots.start_pass(2)
    flags = slots.busy.tolist()
    assert flags[0][dropped] == 0
    assert flags[1][held_slot] == 1
    assert flags[0][current] == 2


def test_a_slot_grows_for_a_larger_transfer_in_shared_memory():
    slots = HandoverSlots(workers=1, slots=1)
    slot, small = slots.take(0, 1, 16)
    assert len(small) == 16 and small.is_shared()
    slots.busy.zero_()
    again, large = slots.take(0, 1, 64)
    assert again == slot == 0 and len(large) == 64 and large.is_shared()


def test_tensors_packed_in_one_buffer_are_aligned_views_that_do_not_overlap():
    specs = [((3, 1), torch.float32), ((3,), torch.int64), ((1,), torch.float32)]
    assert packed_size(specs) == 16 + 24 + 4  # 12 bytes of floats padded to 16
    buffer = torch.zeros(packed_size(specs), dtype=torch.uint8)
    x, y, z = unpack(buffer, specs)
    x.fill_(-1.5)
    y.copy_(torch.tensor([7, 8, 2**40]))
    z.fill_(3.0)
    assert x.shape == (3, 1) and x.flatten().tolist() == [-1.5] * 3
    assert y.tolist() == [7, 8, 2**40] and z.tolist() == [3.0]
    assert y.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
