"""Peak memory and time of a piece of work, as DESIGN.md section 7 measures them.

CPU: resident set size. The baseline is the current RSS when measuring
starts; the peak is the process's lifetime maximum (ru_maxrss), so each method
must run in a fresh process for its peak to be its own. CUDA: the caching
allocator's max_memory_allocated after reset_peak_memory_stats."""
import resource
import statistics
import time

import torch


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class PeakMemory:
    """`with PeakMemory(device) as m: ...` then `m.peak_bytes`: the growth of
    peak memory over the baseline taken on entry."""

    def __init__(self, device):
        self.device = torch.device(device)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = current_rss_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak_bytes = max(peak_rss_bytes() - self.base, 0)
        return False


def timed(fn, device):
    """Seconds taken by fn(), with the device synchronised around it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t, out


def median(xs):
    return statistics.median(xs) if xs else float("nan")
