"""The capture ring buffer: exact order, wraparound, counted overflow, and a racing producer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.listen.ring import Ring


def ramp(start: int, n: int) -> np.ndarray:
    """Frames whose value is their absolute index (exact in float32 below 2**24)."""
    return np.arange(start, start + n, dtype=np.float32)


class TestRing:
    def test_empty_read_returns_empty_array(self) -> None:
        """Reading an empty ring gives a float32 array of length zero, not None."""
        ring = Ring(8)
        out = ring.read()
        assert out.dtype == np.float32
        assert out.shape == (0,)

    def test_frames_come_back_exactly_in_order(self) -> None:
        """Blocks written in sequence are read back as one exact contiguous stream."""
        ring = Ring(100)
        ring.write(ramp(0, 30))
        ring.write(ramp(30, 20))
        np.testing.assert_array_equal(ring.read(), ramp(0, 50))
        assert ring.overflows == 0
        assert ring.dropped_frames == 0

    def test_max_frames_limits_a_read(self) -> None:
        """read(max_frames) returns at most that many frames and leaves the rest for later."""
        ring = Ring(100)
        ring.write(ramp(0, 50))
        np.testing.assert_array_equal(ring.read(20), ramp(0, 20))
        assert ring.available_frames == 30
        np.testing.assert_array_equal(ring.read(), ramp(20, 30))

    def test_wraparound_keeps_order(self) -> None:
        """Writes and reads that cross the end of the buffer return the frames in order."""
        ring = Ring(10)
        got = []
        for k in range(7):
            ring.write(ramp(k * 7, 7))
            got.append(ring.read())
        np.testing.assert_array_equal(np.concatenate(got), ramp(0, 49))
        assert ring.dropped_frames == 0

    def test_slow_consumer_loses_oldest_and_counts_them(self) -> None:
        """When the writer laps the reader, the newest frames survive and the loss is counted."""
        ring = Ring(10)
        ring.write(ramp(0, 6))
        ring.write(ramp(6, 6))
        ring.write(ramp(12, 6))
        np.testing.assert_array_equal(ring.read(), ramp(8, 10))
        assert ring.dropped_frames == 8
        assert ring.overflows == 1

    def test_block_larger_than_ring_keeps_its_newest_frames(self) -> None:
        """A single block longer than the ring keeps only its last capacity frames."""
        ring = Ring(10)
        ring.write(ramp(0, 25))
        np.testing.assert_array_equal(ring.read(), ramp(15, 10))
        assert ring.dropped_frames == 15

    def test_write_does_not_allocate_a_new_buffer(self) -> None:
        """The storage array is the same object before and after writes (preallocated)."""
        ring = Ring(16)
        storage = ring._buf
        for k in range(10):
            ring.write(ramp(k * 5, 5))
        assert ring._buf is storage

    def test_capacity_must_be_positive(self) -> None:
        """A ring of zero frames is refused with a message naming the argument."""
        with pytest.raises(ValueError, match="capacity_frames"):
            Ring(0)

    @settings(max_examples=200, deadline=None)
    @given(
        capacity=st.integers(1, 40),
        ops=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=60),
    )
    def test_matches_a_reference_model(self, capacity: int, ops: list[tuple[bool, int]]) -> None:
        """Any sequence of writes and reads equals a list model that keeps the newest frames."""
        ring = Ring(capacity)
        pending: list[float] = []
        written = 0
        dropped = 0
        for is_write, n in ops:
            if is_write:
                ring.write(ramp(written, n))
                pending.extend(ramp(written, n).tolist())
                written += n
                if len(pending) > capacity:
                    dropped += len(pending) - capacity
                    pending = pending[len(pending) - capacity :]
            else:
                limit = n or None
                expect = pending[:limit] if limit else pending[:]
                pending = pending[len(expect) :]
                np.testing.assert_array_equal(ring.read(limit), np.array(expect, np.float32))
        np.testing.assert_array_equal(ring.read(), np.array(pending, np.float32))
        assert ring.dropped_frames == dropped

    def test_racing_producer_never_yields_corrupt_frames(self) -> None:
        """Against a racing producer, reads are exact and in order; read + dropped = written."""
        capacity = 4096
        block = 1000
        blocks = 3000  # 3 M frames: stays exact in float32 (< 2**24)
        ring = Ring(capacity)
        done = threading.Event()

        def produce() -> None:
            for k in range(blocks):
                ring.write(ramp(k * block, block))
            done.set()

        reads: list[np.ndarray] = []
        producer = threading.Thread(target=produce)
        producer.start()
        while not done.is_set():
            reads.append(ring.read(3000))
        reads.append(ring.read())
        producer.join()
        got = np.concatenate(reads)
        assert got.size > 0
        # Strictly increasing by whole frames: any torn or stale frame would break this.
        steps = np.diff(got)
        assert np.all(steps >= 1)
        assert np.all(got == np.round(got))
        assert got.size + ring.dropped_frames == blocks * block
        assert got[-1] == blocks * block - 1
