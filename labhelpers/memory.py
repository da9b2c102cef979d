"""Measuring memory for real: the peak a piece of work reaches, on a GPU or on the CPU.

    with peak_memory() as mem:
        loss = model(**batch).loss
        loss.backward()
    print(mem)              # "peak 2.31 GiB (+1.12 GiB over the 1.19 GiB before), cuda max allocated"

On CUDA this is the allocator's own high-water mark (`torch.cuda.max_memory_allocated`, reset when
the block starts). On a CPU there is no such counter that can be reset, so a background thread
samples the process's resident memory (RSS) every few milliseconds; a spike shorter than the
interval can be missed, so treat CPU peaks as slightly low. Freed memory is not always returned
to the operating system, so compare CPU peaks measured in fresh processes (see benchmarks/).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

GIB = 1024**3


@dataclass
class PeakMemory:
    """What a `peak_memory` block measured, in bytes."""

    device: str
    method: str
    baseline_bytes: int = 0
    peak_bytes: int = 0

    @property
    def increase_bytes(self) -> int:
        """How far above the starting point the peak went."""
        return max(0, self.peak_bytes - self.baseline_bytes)

    def __str__(self) -> str:
        return (f"peak {self.peak_bytes / GIB:.2f} GiB (+{self.increase_bytes / GIB:.2f} GiB over the "
                f"{self.baseline_bytes / GIB:.2f} GiB before), {self.method}")


class _RssSampler(threading.Thread):
    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return self.peak


class peak_memory:  # noqa: N801  (used as a context manager, like a function)
    """Context manager measuring the peak memory of the work inside it (see the module docstring).

    `device`: "cuda", "cuda:1", "cpu" or a torch.device (default: where labhelpers would run).
    `interval_s`: CPU sampling interval (default 2 ms).
    """

    def __init__(self, device=None, interval_s: float = 0.002):
        if not isinstance(interval_s, (int, float)) or not 0 < interval_s <= 1:
            raise ValueError(f"interval_s={interval_s!r} must be between 0 and 1 second")
        self.device = device
        self.interval_s = float(interval_s)
        self.result: PeakMemory | None = None
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        from .device import pick_device

        device = pick_device() if self.device is None else torch.device(self.device)
        self._device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.result = PeakMemory(str(device), "cuda max allocated", torch.cuda.memory_allocated(device))
        else:
            self._sampler = _RssSampler(self.interval_s)
            self.result = PeakMemory(str(device), f"process RSS sampled every {self.interval_s * 1000:.0f} ms",
                                     self._sampler.peak)
            self._sampler.start()
        return self.result

    def __exit__(self, *exc) -> bool:
        import torch

        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
            self.result.peak_bytes = torch.cuda.max_memory_allocated(self._device)
        else:
            self.result.peak_bytes = self._sampler.stop()
        return False


__all__ = ["GIB", "PeakMemory", "peak_memory"]
