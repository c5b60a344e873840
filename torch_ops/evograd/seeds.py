"""Noise seeds of successive meta-steps.

Step t of a meta-learner with base seed b draws its noise with seed
``step_seed(b, t)``:

* ``"mixed"`` (the default): ``mix64(b + t * GOLDEN)`` as a signed 64-bit
  integer. For a fixed base, t -> b + t * GOLDEN is a bijection of the
  64-bit integers (GOLDEN is odd) and mix64 (SplitMix64's finaliser) is one
  too, so no two steps of a run share a seed; nearby bases (replicate runs
  with seeds 0, 1, 2) give unrelated sequences.
* ``"consecutive"``: ``(b + t) mod 2**63``, the rule of evograd 0.1's first
  releases, kept to reproduce results recorded with it. There base 1 replays
  base 0's noise one step later.

The C++ API (``evograd::step_seed``) computes the same numbers.
"""
import itertools

import torch

from . import options

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SCHEDULES = options.BY_NAME["seed_schedule"].choices  # ("mixed", "consecutive")


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijection of the unsigned 64-bit integers."""
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def step_seed(base: int, step: int, schedule: str = "mixed") -> int:
    """The noise seed of meta-step ``step`` for base seed ``base``."""
    options.check("seed_schedule", schedule)
    if schedule == "consecutive":
        return (base + step) & ((1 << 63) - 1)
    if schedule == "mixed":
        return _signed(mix64(base + step * GOLDEN))
    raise NotImplementedError(f"seed schedule {schedule!r} is a choice of options.def with no rule here")


_instances = itertools.count()


def default_base_seed() -> int:
    """A base seed for ``seed=None``: torch's initial seed (what
    ``torch.manual_seed`` set), mixed with how many meta-learners this
    process has made before. It reads the generator's seed without drawing
    from it, so the user's own random stream is not shifted; runs are
    reproducible under ``torch.manual_seed``, and two meta-learners of one
    process get different noise."""
    return _signed(mix64(torch.initial_seed() ^ mix64(next(_instances) * GOLDEN)))
