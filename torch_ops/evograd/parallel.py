"""What a meta-step exchanges between processes, on torch.distributed.

The noise is a pure function of (seed, candidate, element index), so every
rank rebuilds every candidate by itself: a step exchanges only K losses, K
projections and the N-element lambda-gradient, never anything the size of
the model. Four exchanges share one interface:

* ``Local``: one process, nothing exchanged.
* ``DataParallel`` (``parallel="data"``): each rank's closures see its shard
  of the batch; the objective is the mean over ranks. Losses, projections
  and the lambda-gradient are averaged.
* ``CandidateParallel`` (``parallel="candidates"``): every rank sees the
  same batches and evaluates candidates k = rank, rank + world, ...; losses
  and the lambda-gradient parts are summed.
* ``ShardedData`` (``parallel="data"`` over an FSDP-sharded model): as
  ``DataParallel``, but each rank projects only its rows of a gradient FSDP
  has already averaged, so the partial projections are summed.

Every exchange carries one more value, the number of ranks that failed
before it, so that an error on one rank (a closure raising, a non-finite
loss) becomes an error on every rank instead of a hang. ``Collectives``
counts what this process hands to the collectives (payload bytes).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

PARALLEL = (None, "data", "candidates")


class PeerFailed(RuntimeError):
    """Raised on a rank whose own step went fine when another rank's failed."""


class Collectives:
    """The torch.distributed calls a meta-step makes, with a byte count.

    Payloads are float64 or int64 vectors on the backend's device (CUDA for
    NCCL, CPU otherwise). ``bytes_sent`` and ``calls`` grow with each call:
    a benchmark reads them before and after a step."""

    def __init__(self, group=None):
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("parallel= needs a process group: initialise torch.distributed "
                             "(torch.distributed.init_process_group) before EvoGrad is built")
        self.dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if backend == "nccl" else torch.device("cpu"))
        self.bytes_sent = 0
        self.calls = 0

    def _count(self, t: torch.Tensor):
        self.bytes_sent += t.numel() * t.element_size()
        self.calls += 1

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        t = values.to(self.device).clone()
        self._count(t)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group)
        return t.cpu()

    def all_reduce_sum_(self, values: torch.Tensor) -> None:
        """Sums ``values`` over ranks in place, in its own dtype (as DDP
        reduces gradients): no float64 copy of anything parameter-sized."""
        t = values if values.device == self.device else values.to(self.device)
        self._count(t)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group)
        if t is not values:
            values.copy_(t)

    def all_gather(self, values: torch.Tensor) -> torch.Tensor:
        """[world, n]: every rank's vector, in rank order (on the CPU)."""
        return torch.stack([o.cpu() for o in self.all_gather_list(values)])

    def all_gather_list(self, values: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's ``values`` (same shape and dtype on all), on the
        backend's device, in rank order: for parameter-sized pieces, which
        neither go through the CPU nor change dtype."""
        t = values.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        self._count(t)
        self.dist.all_gather(out, t, group=self.group)
        return out

    def broadcast(self, values: torch.Tensor, src_rank: int = 0) -> torch.Tensor:
        t = values.to(self.device).clone()
        self._count(t)
        src = src_rank if self.group is None else self.dist.get_global_rank(self.group, src_rank)
        self.dist.broadcast(t, src=src, group=self.group)
        return t.cpu()


def _raise_if_failed(failed: float, own: Optional[BaseException], phase: str):
    if own is not None:
        raise own
    if failed > 0:
        raise PeerFailed(f"evograd: {int(round(failed))} other rank(s) failed in {phase}; "
                         "their own error says why (this rank's step is abandoned and its "
                         "model restored)")


class Local:
    """One process: the identity on every exchange."""
    world, rank = 1, 0
    collectives = None

    def owns(self, k: int) -> bool:
        return True

    def losses(self, values: List[float], own: Optional[BaseException]) -> List[float]:
        if own is not None:
            raise own
        return values

    def projections(self, c: torch.Tensor, val: float, own: Optional[BaseException]
                    ) -> Tuple[torch.Tensor, float]:
        if own is not None:
            raise own
        return c, val

    def hypergradient(self, parts: List[torch.Tensor], own: Optional[BaseException]
                      ) -> List[torch.Tensor]:
        if own is not None:
            raise own
        return parts

    def adds_direct_term(self) -> bool:
        return True

    def mean_gradient(self, grads: Optional[List[torch.Tensor]], like: Sequence[torch.Tensor],
                      own: Optional[BaseException], phase: str) -> List[torch.Tensor]:
        """The ranks' mean of a parameter-sized gradient (T1-T2's estimators:
        the inner gradient, the validation gradient)."""
        if own is not None:
            raise own
        return grads

    def total(self, value: float) -> float:
        """The sum over ranks of a value each rank holds a part of (its rows)."""
        return value

    def mean_parts(self, parts: List[Optional[torch.Tensor]], like: Sequence[torch.Tensor],
                   scalars: List[float], own: Optional[BaseException]
                   ) -> Tuple[List[Optional[torch.Tensor]], List[float]]:
        """The ranks' mean of the lambda-gradient parts (None: no part on any
        rank) and of a few scalars (the losses a step reports)."""
        if own is not None:
            raise own
        return parts, scalars

    def resolution(self, counts: Tuple[int, int], own: Optional[BaseException]
                   ) -> Tuple[int, int]:
        """(unchanged, total) elements for sigma's resolution check, over the
        whole parameter list: the local counts, unless the ranks hold shards."""
        if own is not None:
            raise own
        return counts


class _Exchanging(Local):
    def __init__(self, collectives: Collectives):
        self.collectives = collectives
        self.world, self.rank = collectives.world, collectives.rank

    def _reduce(self, values: torch.Tensor, own, phase: str) -> torch.Tensor:
        """Sums values (float64) and the failure count over ranks."""
        payload = torch.cat([values.reshape(-1).to(torch.float64),
                             torch.tensor([0.0 if own is None else 1.0], dtype=torch.float64)])
        total = self.collectives.all_reduce_sum(payload)
        _raise_if_failed(total[-1].item() - (0 if own is None else 1), own, phase)
        return total[:-1]

    def hypergradient(self, parts, own):
        n = [p.numel() for p in parts]
        flat = (torch.cat([p.detach().reshape(-1).to(torch.float64).cpu() for p in parts])
                if parts and own is None else torch.zeros(sum(n), dtype=torch.float64))
        total = self._reduce(flat, own, "the lambda-gradient") / self._divisor()
        return [t.reshape(p.shape).to(device=p.device, dtype=p.dtype)
                for t, p in zip(torch.split(total, n), parts)]

    def _divisor(self) -> int:
        raise NotImplementedError

    def mean_gradient(self, grads, like, own, phase):
        # DDP's buckets: the gradient goes out in pieces of at most BUCKET_BYTES,
        # each one all-reduce in the parameters' dtype, so that the copy
        # beside the gradient is one bucket, not the model. The first piece
        # also carries the failure count: a failed rank sends zeros, and
        # every rank stops after that piece alike.
        # The result is views of the reduced buckets, not writes into the
        # gradients: autograd may return one expanded (p.sum()'s is ones
        # with stride 0), which cannot be written in place.
        out = list(grads) if own is None else [torch.zeros_like(p) for p in like]
        first, start = True, 0
        for bucket in list(_buckets(out)):
            pieces = [g.reshape(-1) for g in bucket]
            if first:
                pieces.append(torch.tensor([0.0 if own is None else 1.0],
                                           dtype=bucket[0].dtype, device=bucket[0].device))
            flat = torch.cat(pieces)
            del pieces
            self.collectives.all_reduce_sum_(flat)
            if first:
                _raise_if_failed(flat[-1].item() - (0 if own is None else 1), own, phase)
                first = False
            flat /= self.world
            at = 0
            for i, g in enumerate(bucket, start):
                out[i] = flat[at:at + g.numel()].view(g.shape)
                at += g.numel()
            start += len(bucket)
        return out

    def mean_parts(self, parts, like, scalars, own):
        n = [h.numel() for h in like]
        if own is None:
            flat = [torch.zeros(k, dtype=torch.float64) if p is None else
                    p.detach().reshape(-1).to(torch.float64).cpu() for p, k in zip(parts, n)]
            defined = [0.0 if p is None else 1.0 for p in parts]
            local = torch.cat(flat + [torch.tensor(defined + list(scalars), dtype=torch.float64)])
        else:
            local = torch.zeros(sum(n) + len(n) + len(scalars), dtype=torch.float64)
        total = self._reduce(local, own, "the lambda-gradient") / self.world
        values = torch.split(total[:sum(n)], n)
        counts = total[sum(n):sum(n) + len(n)]
        out = [None if counts[j] == 0 else v.reshape(h.shape).to(device=h.device, dtype=h.dtype)
               for j, (v, h) in enumerate(zip(values, like))]
        return out, total[sum(n) + len(n):].tolist()


class DataParallel(_Exchanging):
    """Each rank's closures see its shard; everything is a mean over ranks."""

    def _divisor(self):
        return self.world

    def losses(self, values, own):
        local = torch.tensor(values if own is None else [0.0] * len(values), dtype=torch.float64)
        return (self._reduce(local, own, "the candidates' training losses") / self.world).tolist()

    def projections(self, c, val, own):
        local = (torch.cat([c.detach().to(torch.float64).cpu(), torch.tensor([val], dtype=torch.float64)])
                 if own is None else torch.zeros(c.numel() + 1, dtype=torch.float64))
        total = self._reduce(local, own, "the validation gradient")
        return self._projections(total[:-1]).to(c.dtype), total[-1].item() / self.world

    def _projections(self, summed: torch.Tensor) -> torch.Tensor:
        # Each rank projects the whole gradient of its own loss: the
        # objective's projections are the mean of the ranks'.
        return summed / self.world


class ShardedData(DataParallel):
    """Data-parallel over FSDP shards: the ranks' projections are parts of one
    sum (each over its own rows of the rank-averaged gradient)."""

    def _projections(self, summed):
        return summed  # each rank's is a part of one sum over rows

    def mean_gradient(self, grads, like, own, phase):
        # FSDP's reduce-scatter already left each rank its rows of the mean:
        # only whether every rank got there is exchanged.
        self._reduce(torch.zeros(0, dtype=torch.float64), own, phase)
        return grads

    def total(self, value):
        return self._reduce(torch.tensor([value], dtype=torch.float64), None, "a norm")[0].item()

    def resolution(self, counts, own):
        local = torch.tensor(counts if own is None else (0, 0), dtype=torch.float64)
        total = self._reduce(local, own, "the check of sigma against the parameters' resolution")
        return int(total[0].item()), int(total[1].item())


class CandidateParallel(_Exchanging):
    """Same batches everywhere; rank r evaluates candidates k = r (mod world)."""

    def __init__(self, collectives: Collectives):
        super().__init__(collectives)
        self._failed_before = None

    def _divisor(self):
        return 1

    def owns(self, k):
        return k % self.world == self.rank

    def losses(self, values, own):
        mine = [v if self.owns(k) else 0.0 for k, v in enumerate(values)]
        local = torch.tensor(mine if own is None else [0.0] * len(values), dtype=torch.float64)
        return self._reduce(local, own, "the candidates' training losses").tolist()

    def projections(self, c, val, own):
        # Every rank computed the same theta* and validation gradient: only
        # a failure needs telling, and the lambda-gradient exchange tells it.
        self._failed_before = own
        return c, val

    def hypergradient(self, parts, own):
        # A validation failure comes first: what followed it failed because of it.
        return super().hypergradient(parts, self._failed_before or own)

    def adds_direct_term(self):
        return self.rank == 0  # the validation term is the same on every rank: add it once


# DDP's default bucket_cap_mb.
BUCKET_BYTES = 25 << 20


def _buckets(tensors: Sequence[torch.Tensor]):
    """Consecutive runs of tensors of one dtype and device, each run at most
    BUCKET_BYTES (a larger tensor is a run of its own)."""
    run, size = [], 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if run and (size + nbytes > BUCKET_BYTES or t.dtype != run[0].dtype
                    or t.device != run[0].device):
            yield run
            run, size = [], 0
        run.append(t)
        size += nbytes
    if run:
        yield run


def make(parallel: Optional[str], group=None) -> Local:
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
    if parallel is None:
        if group is not None:
            raise ValueError("process_group is used only with parallel='data' or 'candidates'")
        return Local()
    coll = Collectives(group)
    return DataParallel(coll) if parallel == "data" else CandidateParallel(coll)


def agree(collectives: Collectives, fields: Dict[str, float], own: Optional[BaseException]):
    """Construction-time check that every rank was built alike: one gather of
    the fields (and a failure flag); a difference is a ValueError on every rank."""
    names = list(fields)
    local = torch.tensor([fields[n] for n in names] + [0.0 if own is None else 1.0],
                         dtype=torch.float64)
    table = collectives.all_gather(local)
    failed = [r for r in range(collectives.world) if table[r, -1] != 0]
    if own is not None:
        raise own
    if failed:
        raise PeerFailed(f"evograd: EvoGrad could not be built on rank(s) {failed}; "
                         "their own error says why")
    for i, name in enumerate(names):
        column = table[:, i]
        same = torch.equal(column, column[:1].expand_as(column)) or \
            all(math.isnan(v) for v in column.tolist())
        if not same:
            per_rank = ", ".join(f"rank {r}: {v:g}" for r, v in enumerate(column.tolist()))
            raise ValueError(f"evograd: {name} differs across ranks ({per_rank}); every rank "
                             "must build EvoGrad with the same options and tensors")


_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def fingerprint(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Two int64 numbers that change when any element's bits do: the sum of
    the elements' bit patterns, and their sum weighted by 2i + 1 (both
    wrapping mod 2^64). One element changed by one ulp changes the first."""
    s = torch.zeros(2, dtype=torch.int64)
    offset = 0
    with torch.no_grad():
        for t in tensors:
            v = t.detach().contiguous().reshape(-1).cpu()
            bits = v.view(_BITS[v.element_size()]).to(torch.int64)
            weight = torch.arange(offset, offset + v.numel(), dtype=torch.int64) * 2 + 1
            s += torch.stack([bits.sum(), (bits * weight).sum()])
            offset += v.numel()
    return s
