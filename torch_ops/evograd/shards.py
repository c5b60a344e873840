"""Where a meta-step's parameters live: whole tensors, or FSDP2 shards.

The noise of element i is a pure function of (seed, k, i), where i counts
across the *unsharded* parameter list. A model sharded by FSDP2
(``torch.distributed.fsdp.fully_shard``) holds each parameter as a DTensor
whose local tensor is a block of rows [r0, r1) (placement ``Shard(0)``); its
element j is element ``start + r0 * row + j`` of the list. Each rank writes
candidates into its own rows with exactly those indices, so the model FSDP
all-gathers in the next forward is the whole list's candidate, bit for bit.

A ``ShardedLayout`` is the write path (``layout.NoiseLayout``) over the local
tensors, at those indices, and puts the model back into its sharded state
after each forward: FSDP keeps the root's gathered parameters after a
forward that no backward followed, and a write into the shards would not
reach them.

The validation gradient of a sharded model comes from FSDP's own backward:
the reduce-scatter leaves each rank its rows of the gradient *averaged* over
ranks, so the ranks' partial projections are summed, not averaged. Settings
that change that meaning (a gradient divide factor, an all-reduce hook,
gradient sync switched off, a gradient being accumulated) are refused.

The "jvp" estimator's inner and validation gradients come from the same
backward; its pass with tangents needs the whole parameters (forward mode
puts a tangent on a tensor, not on rows of it), so ``whole`` gathers every
FSDP module and keeps it gathered until lambda's gradient is taken.
"""
import contextlib
import functools
import importlib
from typing import List, Optional, Sequence

import torch

from . import ops, parallel
from .layout import NoiseLayout


# Looked up once. Any exception means "not there": Debian's torch 1.13 on
# Python 3.11 fails to import some torch.distributed modules with a ValueError.
@functools.lru_cache(maxsize=None)
def _lookup(name: str, *modules: str):
    for where in modules:
        try:
            return getattr(importlib.import_module(where), name)
        except Exception:  # noqa: BLE001
            continue
    return None


def _dtensor_type():
    return _lookup("DTensor", "torch.distributed.tensor", "torch.distributed._tensor")


def _fsdp_module_type():
    return _lookup("FSDPModule", "torch.distributed.fsdp", "torch.distributed._composable.fsdp")


def is_sharded(t: torch.Tensor) -> bool:
    DTensor = _dtensor_type()
    return DTensor is not None and isinstance(t, DTensor)


def _first_row(p) -> int:
    """The global index of the first row this rank holds of DTensor ``p``."""
    try:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    except ImportError:
        from torch.distributed._tensor._utils import compute_local_shape_and_global_offset
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    if tuple(shape) != tuple(p.to_local().shape):
        raise ValueError("evograd: a sharded parameter's local tensor does not have the shape "
                         "its placement describes; cannot place its noise")
    return int(offset[0]) if len(offset) else 0


def _check_placement(i: int, p, world: int):
    placements = tuple(p.placements)
    name = type(placements[0]).__name__ if placements else "none"
    if len(placements) != 1 or name != "Shard" or placements[0].dim != 0:
        raise ValueError(f"evograd: parameter {i} is a DTensor placed {placements}; EvoGrad "
                         "handles FSDP's row sharding only (Shard(0) on a 1-D mesh, not HSDP "
                         "or tensor parallelism)")
    if p.device_mesh.size() != world:
        raise ValueError(f"evograd: parameter {i} is sharded over {p.device_mesh.size()} ranks "
                         f"but the process group has {world}; pass the FSDP mesh's group as "
                         "process_group")


def _setting(obj, *names):
    """An FSDP setting by its name in this torch (the first of names found).
    Not found: an error, since guessing would risk a silent factor."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise ValueError(f"evograd: cannot read FSDP's {names[0]} in torch {torch.__version__}, so "
                     "cannot tell how its passes reduce gradients or keep parameters; sharded "
                     "meta-steps are tested with torch 2.13's fully_shard")


class ShardedLayout(NoiseLayout):
    """FSDP2 row shards: ``views`` are the owners' local tensors, at the
    global indices of their first rows."""

    sharded = True

    def __init__(self, owners: Sequence[torch.Tensor], kinds: Sequence[bool],
                 world: Optional[int], module=None):
        if not all(kinds):
            plain = list(kinds).index(False)
            raise ValueError(f"evograd: parameter {plain} is a plain tensor among FSDP-sharded "
                             "ones; shard the whole model with fully_shard, or pass only the "
                             "sharded parameters")
        if world is None:
            raise ValueError("evograd: the parameters are sharded over ranks (FSDP); build "
                             "EvoGrad with parallel='data' so that the ranks' partial "
                             "projections are summed")
        self.world = world
        super().__init__(owners)
        fsdp = _fsdp_module_type()
        self.modules = ([m for m in module.modules() if isinstance(m, fsdp)]
                        if module is not None and fsdp is not None else [])
        if not self.modules:
            raise ValueError("evograd: FSDP-sharded parameters need the FSDP model: pass the "
                             "module built with fully_shard as params (or module=)")

    def _place(self):
        views, starts, base = [], [], 0
        with torch.no_grad():
            for i, p in enumerate(self.owners):
                _check_placement(i, p, self.world)
                local = p.to_local()
                row = p.numel() // p.shape[0] if p.dim() and p.shape[0] else 0
                starts.append(base + _first_row(p) * row)
                views.append(local)
                base += p.numel()
        return views, starts

    def project(self, grads, seed, population, sigma, noise, antithetic) -> torch.Tensor:
        """c_k over this rank's rows: a part of the whole sum."""
        total = torch.zeros(population, dtype=torch.float64)
        for a, b, offset in self.runs:
            total += ops.project(grads[a:b], seed, population, sigma, noise, antithetic,
                                 offset).to(torch.float64).cpu()
        return total

    # ---- FSDP's state around the step's forwards ---------------------------

    def reshard(self):
        """Back to the sharded state, so that the next write reaches the next
        forward (after any forward, the step's or the caller's)."""
        for m in self.modules:
            m.reshard()

    def check_reduction(self):
        """Raises where FSDP would not leave the rows' gradient averaged over
        ranks, or where this torch's FSDP keeps those settings elsewhere."""
        for m in self.modules:
            state = m._get_fsdp_state() if hasattr(m, "_get_fsdp_state") else None
            for g in _setting(state, "_fsdp_param_groups") or []:
                factor = _setting(g, "gradient_divide_factor", "reduce_scatter_divide_factor")
                if factor is not None:
                    raise ValueError("evograd: FSDP has a custom gradient divide factor "
                                     f"({factor}); the meta-step needs FSDP's default mean over "
                                     "ranks")
                if _setting(g, "_all_reduce_hook") is not None:
                    raise ValueError("evograd: FSDP has an all-reduce hook on gradients; the "
                                     "meta-step needs FSDP's plain reduce-scatter")
                if not _setting(g, "reduce_grads"):
                    raise ValueError("evograd: FSDP's gradient sync is off "
                                     "(set_requires_gradient_sync(False)); take the meta-step "
                                     "with it on")
                for fp in _setting(g, "fsdp_params"):
                    if _setting(fp, "unsharded_accumulated_grad") is not None:
                        raise ValueError("evograd: FSDP is accumulating a gradient (gradient "
                                         "sync off in an earlier backward); finish that update "
                                         "before the meta-step")

    # ---- what sharded rows change for the step -----------------------------

    @property
    def lockstep(self) -> bool:
        """Every rank takes every backward (FSDP's are collective)."""
        return True

    def exchange(self, plain: "parallel.Local") -> "parallel.Local":
        """Sharded rows make the ranks' projections parts of one sum rather
        than copies to average, and must tile every tensor."""
        extents = torch.tensor(self.extents(), dtype=torch.int64).reshape(-1)
        table = plain.collectives.all_gather(extents)
        check_tiling(table, self.owners)
        # each tensor's (start, count) per rank, to gather a whole one (whole())
        self.spans = [[(int(table[r, 2 * i]), int(table[r, 2 * i + 1]))
                       for r in range(table.shape[0])] for i in range(len(self.owners))]
        self.collectives = plain.collectives
        return parallel.ShardedData(plain.collectives)

    def before_step(self):
        self.check_reduction()

    def replicas(self) -> List[torch.Tensor]:
        return []  # shards differ by design

    def bystanders(self, owner, hyperparams) -> List[torch.Tensor]:
        return []  # every parameter is perturbed; FSDP's forwards own their state

    def gradient(self, val: torch.Tensor, hyperparams):
        """FSDP's own backward, whose reduce-scatter leaves each rank its rows
        of the gradient averaged over ranks (the snapshot puts the
        parameters' ``.grad`` back; lambda's is read and put back here)."""
        before = [h.grad for h in hyperparams]
        for h in hyperparams:
            h.grad = None
        try:
            val.reshape(()).backward()
            hyper = [h.grad for h in hyperparams]
            local = self.local_gradients()
        finally:
            for h, g in zip(hyperparams, before):
                h.grad = g
            for p in self.owners:  # read: a later backward of the step starts from None
                p.grad = None
            self.reshard()
        return local, hyper

    def as_grad(self, i: int, local: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a gradient, as ``.grad`` of sharded parameter i."""
        p = self.owners[i]
        return type(p).from_local(local, p.device_mesh, p.placements, run_check=False,
                                  shape=p.shape, stride=p.stride())

    @contextlib.contextmanager
    def whole(self, owner, directions: Sequence[torch.Tensor]):
        """The parameters gathered whole, for a pass that puts tangents on
        them (the "jvp" estimator): yields the tensors FSDP's modules hold
        meanwhile and ``directions`` (this rank's rows) gathered whole. FSDP
        keeps them gathered until the block ends, through the forward and
        the backward to lambda, whose graph holds the whole parameters and
        tangents: memory as FSDP without resharding (ZeRO-2) for that pass."""
        names = _attribute_names(owner, self.owners)
        saved = [_reshard_settings(m) for m in self.modules]
        try:
            for m in self.modules:
                m.set_reshard_after_forward(False, recurse=False)
                m.set_reshard_after_backward(False, recurse=False)
            for m in self.modules:
                m.unshard()
            held = [module._parameters[name] for module, name in names]
            if any(is_sharded(t) for t in held):
                raise ValueError("evograd: FSDP did not gather every parameter for the 'jvp' "
                                 "pass; pass the module built with fully_shard as params")
            gathered = [self._gathered(i, d) for i, d in enumerate(directions)]
            yield held, gathered
        finally:
            for m, settings in zip(self.modules, saved):
                _put_reshard_settings(m, settings)
            self.reshard()

    def _gathered(self, i: int, local: torch.Tensor) -> torch.Tensor:
        """Tensor i whole from every rank's rows of it: one all-gather, each
        rank's piece padded to the longest (FSDP's uneven rows)."""
        spans = self.spans[i]
        piece = local.reshape(-1)
        width = max(count for _, count in spans)
        if piece.numel() < width:
            piece = torch.cat([piece, piece.new_zeros(width - piece.numel())])
        pieces = self.collectives.all_gather_list(piece)
        order = sorted(range(len(spans)), key=lambda r: spans[r][0])
        whole = torch.cat([pieces[r][:spans[r][1]] for r in order])
        return whole.view(self.owners[i].shape).to(local.device)

    def local_gradients(self) -> List[torch.Tensor]:
        """After FSDP's backward: each view's gradient (zeros where unused)."""
        out = []
        for p, v in zip(self.owners, self.views):
            g = p.grad
            out.append(torch.zeros_like(v) if g is None else
                       (g.to_local() if is_sharded(g) else g))
        return out


def _attribute_names(owner, owners: Sequence[torch.Tensor]):
    """(module, name) of the attribute holding each of ``owners``, read while
    sharded: FSDP swaps what those attributes hold when it gathers."""
    index = {id(p): i for i, p in enumerate(owners)}
    found = [None] * len(owners)
    for module in owner.modules():
        for name, t in module._parameters.items():
            i = index.get(id(t)) if t is not None else None
            if i is not None and found[i] is None:
                found[i] = (module, name)
    if any(f is None for f in found):
        raise ValueError(f"evograd: parameter {found.index(None)} is not a parameter of the FSDP "
                         "model's modules; pass the module built with fully_shard as params")
    return found


def _reshard_settings(module):
    """What set_reshard_after_forward/backward change, to put back after the
    step (FSDP has setters for them, no getters)."""
    state = module._get_fsdp_state()
    groups = _setting(state, "_fsdp_param_groups") or []
    return ([(g, _setting(g, "post_forward_mesh_info"), _setting(g, "reshard_after_backward"))
             for g in groups], _setting(state, "_auto_reshard_after_forward"))


def _put_reshard_settings(module, settings):
    groups, auto = settings
    for g, forward, backward in groups:
        g.post_forward_mesh_info, g.reshard_after_backward = forward, backward
    module._get_fsdp_state()._auto_reshard_after_forward = auto


def check_tiling(table: torch.Tensor, owners: Sequence[torch.Tensor]):
    """``table[r]``: rank r's (start, count) pairs, flattened. Every tensor's
    rows must be split over the ranks without gap or overlap."""
    world = table.shape[0]
    base = 0
    for i, p in enumerate(owners):
        spans = sorted((int(table[r, 2 * i]), int(table[r, 2 * i + 1])) for r in range(world))
        spans = [s for s in spans if s[1]]
        at = base
        for start, count in spans:
            if start != at:
                raise ValueError(f"evograd: the ranks' shards of parameter {i} do not tile it "
                                 f"(a piece starts at {start}, expected {at}); every rank must "
                                 "pass the same model sharded the same way")
            at += count
        if at != base + p.numel():
            raise ValueError(f"evograd: the ranks' shards of parameter {i} cover {at - base} of "
                             f"its {p.numel()} elements")
        base += p.numel()
