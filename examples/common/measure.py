"""Peak memory and time of a piece of work, as docs/design.md (Measuring) describes.

CPU: resident set size. On entry the kernel's high-water mark (VmHWM) is reset
to the current RSS (`5` into /proc/self/clear_refs), which is the baseline;
on exit VmHWM is the peak. Where that reset is unavailable, the lifetime peak
(ru_maxrss) is used instead, which is only meaningful in a fresh process and
which Linux carries over from the parent across exec. Each method still runs
in a fresh process so that allocator caches start cold. CUDA: the caching
allocator's max_memory_allocated after reset_peak_memory_stats."""
import resource
import statistics
import time

import torch

# For a child process whose peak RSS is the measurement. glibc serves blocks
# above an adaptive threshold from mmap and raises the threshold each time
# such a block is freed, so one step's peak depended on what was allocated
# before (an LFT meta-step: 1.20x and 1.32x plain in two runs). A fixed
# threshold returns every large block on free, and the peak follows the live
# tensors to 0.1 MiB. It also maps and faults those blocks in at every step
# (plain LFT: 2.3x the time): time such a process's work elsewhere.
EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Sets the high-water mark to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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
            reset_peak_rss()
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
