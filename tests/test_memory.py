"""Tests for labhelpers.memory: a measured peak sees real allocations, and the sampler stops."""

from __future__ import annotations

import threading

import pytest
import torch

from labhelpers.memory import GIB, PeakMemory, peak_memory

MIB = 1024**2


def test_cpu_peak_sees_a_temporary_allocation():
    with peak_memory("cpu") as mem:
        block = torch.ones(64 * MIB // 4 * 4)  # 256 MiB of float32, touched so it is resident
        block.add_(1)
        del block
    assert mem.device == "cpu" and "RSS" in mem.method
    assert mem.increase_bytes >= 200 * MIB, mem  # freed before the end, yet the peak remembers it
    assert mem.peak_bytes >= mem.baseline_bytes


def test_cpu_peak_of_nothing_is_small():
    with peak_memory("cpu") as mem:
        sum(range(1000))
    assert mem.increase_bytes < 50 * MIB, mem


def test_sampler_thread_stops_even_when_the_block_raises():
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="boom"):
        with peak_memory("cpu"):
            raise RuntimeError("boom")
    assert threading.active_count() == before


def test_str_reports_gib():
    text = str(PeakMemory("cpu", "test", baseline_bytes=GIB, peak_bytes=3 * GIB))
    assert text.startswith("peak 3.00 GiB (+2.00 GiB over the 1.00 GiB before)")


@pytest.mark.parametrize("interval", [0, -1, 5, "fast"])
def test_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval_s"):
        peak_memory("cpu", interval_s=interval)
