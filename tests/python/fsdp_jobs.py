"""What each rank runs in test_shards.py: EvoGrad over a model sharded by
FSDP2's fully_shard (gloo on the CPU, float64, uneven row shards)."""
import torch
from torch import nn
from torch.nn import functional as F

import evograd
from distributed_jobs import CLASSES, FEATURES, make_data, make_model, shard

HIDDEN = 7  # rows split 4+3 on 2 ranks, 3+3+1 on 3: uneven shards
OPTIONS = dict(population=4, sigma=1e-3, temperature=0.05, seed=5)
ITERATIONS = 3


class FeatureHyper(nn.Module):
    """A per-class loss weighting that the validation loss also reads and,
    with ``inside``, lambda inside the model too: a learned input scaling, as
    LFT's feature-wise layers, whose gradient flows back through FSDP's
    modules. Without it the training loss's graph to lambda never enters the
    model (as in MWN), and FSDP runs no backward in the candidate phase."""

    def __init__(self, inside=True):
        super().__init__()
        if inside:
            self.log_scale = nn.Parameter(torch.linspace(-0.2, 0.2, FEATURES,
                                                         dtype=torch.float64))
        self.class_logits = nn.Parameter(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))


def train_loss(model, hyper, x, y):
    w = torch.softmax(hyper.class_logits, 0)[y] * CLASSES
    scale = hyper.log_scale.exp() if hasattr(hyper, "log_scale") else 1.0
    return (w * F.cross_entropy(model(x * scale), y, reduction="none")).mean()


def val_loss(model, hyper, x, y):
    return F.cross_entropy(model(x), y) + 0.01 * (hyper.class_logits ** 2).sum()


def batches(iteration):
    return make_data(12, 100 + iteration), make_data(6, 200 + iteration)


def sharded_model(world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    model = make_model(HIDDEN)
    mesh = init_device_mesh("cpu", (world,))
    fully_shard(model[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def meta_step(model, hyper, meta, x, y, xv, yv, record=lambda phase: None):
    """One meta-step: lambda.grad (flat) and the step's result. A forward
    with no backward first, as a caller may do (FSDP then keeps the root's
    parameters gathered, and the step must still see its own candidates)."""
    for h in hyper.parameters():
        h.grad = None
    model(x)
    r = meta.step(lambda: record("train") or train_loss(model, hyper, x, y),
                  lambda: record("val") or val_loss(model, hyper, xv, yv))
    return torch.cat([h.grad.reshape(-1) for h in hyper.parameters()]).clone(), r


def updates(model, hyper, x, y):
    """The meta-optimiser's SGD step, then the model's own at the new lambda."""
    with torch.no_grad():
        for h in hyper.parameters():
            h -= 0.5 * h.grad
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    train_loss(model, hyper, x, y).backward()
    opt.step()


def job_fsdp_training(rank, world):
    return fsdp_training(rank, world, inside=True)


def job_fsdp_training_outside(rank, world):
    return fsdp_training(rank, world, inside=False)


def fsdp_training(rank, world, inside):
    """ITERATIONS of meta-step + updates on this rank's share of each batch.
    Records the local rows of every candidate and of theta* in the first
    step, and whether each step left the rows and their .grad as it found them."""
    model, hyper = sharded_model(world), FeatureHyper(inside)
    owners = list(model.parameters())  # DTensors; their local tensors are this rank's rows
    meta = evograd.EvoGrad(model, hyper, parallel="data", **OPTIONS)

    def rows():
        return [p.to_local().detach().clone() for p in owners]

    def grads():
        return [None if p.grad is None else p.grad.to_local().clone() for p in owners]

    def same(a, b):
        return all((x is None and y is None) or (x is not None and y is not None
                                                 and torch.equal(x, y)) for x, y in zip(a, b))
    out = {"initial": rows(), "grads": [], "losses": [], "val": [], "seeds": [],
           "untouched": [], "seen": {"train": [], "val": []}}
    for it in range(ITERATIONS):
        (x, y), (xv, yv) = [(shard(a, rank, world), shard(b, rank, world))
                            for a, b in batches(it)]
        before, grads_before = rows(), grads()
        record = ((lambda phase: out["seen"][phase].append(rows())) if it == 0
                  else (lambda phase: None))
        grad, r = meta_step(model, hyper, meta, x, y, xv, yv, record)
        out["untouched"].append(same(before, rows()) and same(grads_before, grads()))
        out["grads"].append(grad)
        out["losses"].append(r.losses)
        out["val"].append(r.val_loss)
        out["seeds"].append(r.seed)
        updates(model, hyper, x, y)
    out["final"] = rows()
    out["hyper"] = [h.detach().clone() for h in hyper.parameters()]
    return out


def reference_training(inside):
    """The same run in one process on the unsharded model and whole batches."""
    model, hyper = make_model(HIDDEN), FeatureHyper(inside)
    meta = evograd.EvoGrad(model, hyper, **OPTIONS)
    out = {"initial": [p.detach().clone() for p in model.parameters()], "grads": [],
           "losses": [], "val": [], "seeds": []}
    for it in range(ITERATIONS):
        (x, y), (xv, yv) = batches(it)
        grad, r = meta_step(model, hyper, meta, x, y, xv, yv)
        out["grads"].append(grad)
        out["losses"].append(r.losses)
        out["val"].append(r.val_loss)
        out["seeds"].append(r.seed)
        updates(model, hyper, x, y)
    out["final"] = [p.detach().clone() for p in model.parameters()]
    out["hyper"] = [h.detach().clone() for h in hyper.parameters()]
    return out


def _error(build_and_step):
    try:
        build_and_step()
    except (ValueError, TypeError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def job_fsdp_errors(rank, world):
    """Each misuse, on every rank: the error each rank raised, and whether
    the model's rows came through unchanged."""
    (x, y), (xv, yv) = [(shard(a, rank, world), shard(b, rank, world)) for a, b in batches(0)]
    out = {}

    def step(meta, model, hyper):
        meta.step(lambda: train_loss(model, hyper, x, y), lambda: val_loss(model, hyper, xv, yv))

    model, hyper = sharded_model(world), FeatureHyper()
    out["no parallel"] = _error(lambda: evograd.EvoGrad(model, hyper, **OPTIONS))
    out["candidates"] = _error(lambda: evograd.EvoGrad(model, hyper, parallel="candidates",
                                                       **OPTIONS))
    out["list without module"] = _error(lambda: evograd.EvoGrad(
        list(model.parameters()), hyper, parallel="data", buffers=[], **OPTIONS))
    before = [p.to_local().clone() for p in model.parameters()]
    for name, setting in (("divide factor", lambda m: m.set_gradient_divide_factor(1.0)),
                          ("gradient sync off", lambda m: m.set_requires_gradient_sync(False))):
        model, hyper = sharded_model(world), FeatureHyper()
        meta = evograd.EvoGrad(model, hyper, parallel="data", **OPTIONS)
        setting(model)
        out[name] = _error(lambda: step(meta, model, hyper))
        out[name + " untouched"] = all(torch.equal(p.to_local(), b) for p, b in
                                       zip(model.parameters(), before))
    # An FSDP that keeps its settings under other names (another torch):
    # refused, not guessed.
    model, hyper = sharded_model(world), FeatureHyper()
    meta = evograd.EvoGrad(model, hyper, parallel="data", **OPTIONS)
    for group in model._get_fsdp_state()._fsdp_param_groups:
        del group.reduce_grads
    out["settings unknown"] = _error(lambda: step(meta, model, hyper))
    # A loss that is not finite on rank 1 only, where lambda's gradient flows
    # through the model (FSDP's backward is collective): no rank may hang.
    for name, phase, nonfinite in (("nan candidate, drop", "train", "drop"),
                                   ("nan candidate, raise", "train", "raise"),
                                   ("nan validation", "val", "raise")):
        model, hyper = sharded_model(world), FeatureHyper(inside=True)
        meta = evograd.EvoGrad(model, hyper, parallel="data", nonfinite=nonfinite, **OPTIONS)
        calls = {"train": 0, "val": 0}

        def poisoned(which, loss):
            calls[which] += 1
            bad = rank == 1 and which == phase and (which == "val" or calls[which] == 3)
            return loss * float("nan") if bad else loss
        result = {}

        def nan_step():
            result["r"] = meta.step(
                lambda: poisoned("train", train_loss(model, hyper, x, y)),
                lambda: poisoned("val", val_loss(model, hyper, xv, yv)))
        out[name] = _error(nan_step)
        if "r" in result:
            out[name + " dropped"] = result["r"].dropped
            out[name + " grad"] = torch.cat([h.grad.reshape(-1) for h in hyper.parameters()])
        out[name + " untouched"] = all(torch.equal(p.to_local(), b) for p, b in
                                       zip(model.parameters(), before))
    # estimator="jvp": a loss that is not finite on rank 1 only, in each of
    # the step's passes, is an error on every rank; none hangs in FSDP's
    # collectives.
    for phase, call in (("inner", 1), ("validation", 1), ("through", 2)):
        model, hyper = sharded_model(world), FeatureHyper(True)
        meta = evograd.EvoGrad(model, hyper, estimator="jvp", inner_lr=JVP_LR,
                               parallel="data")
        calls = {"train": 0, "val": 0}
        which = "val" if phase == "validation" else "train"

        def poisoned(kind, loss):
            calls[kind] += 1
            return loss * float("nan") if rank == 1 and kind == which and \
                calls[kind] == call else loss
        before = [p.to_local().clone() for p in model.parameters()]
        out["jvp nan " + phase] = _error(lambda: meta.step(
            lambda: poisoned("train", train_loss(model, hyper, x, y)),
            lambda: poisoned("val", val_loss(model, hyper, xv, yv))))
        out["jvp nan " + phase + " untouched"] = all(
            torch.equal(p.to_local(), b) for p, b in zip(model.parameters(), before)) and \
            all(p.grad is None for p in model.parameters())
    model, hyper = sharded_model(world), FeatureHyper()
    out["jvp lookahead"] = _error(lambda: evograd.EvoGrad(model, hyper, estimator="lookahead",
                                                      inner_lr=JVP_LR, parallel="data"))
    return out


# ---- estimator="jvp" (T1-T2's hypergradient) on FSDP shards -------------

JVP_LR = 0.1


def jvp_batches():
    """Whole batches that 2 and 4 ranks split evenly: the ranks' mean is then
    the whole batch's mean."""
    return make_data(24, 300), make_data(8, 400)


def jvp_step(model, hyper, x, y, xv, yv, **options):
    """One jvp meta-step after a forward of the caller's: lambda's gradient
    (flat), the result, and the bytes and calls the step's own exchanges
    made (FSDP's collectives are not counted)."""
    meta = evograd.EvoGrad(model, hyper, estimator="jvp", inner_lr=JVP_LR, seed=3, **options)
    coll = meta.exchange.collectives
    before = (coll.bytes_sent, coll.calls) if coll else (0, 0)
    grad, r = meta_step(model, hyper, meta, x, y, xv, yv)
    sent = (coll.bytes_sent - before[0], coll.calls - before[1]) if coll else (0, 0)
    return grad, r, sent


def fsdp_settings(model):
    """What the jvp pass changes in FSDP and must put back."""
    return [(g.post_forward_mesh_info, g.reshard_after_backward)
            for m in model.modules() if hasattr(m, "_get_fsdp_state")
            for g in m._get_fsdp_state()._fsdp_param_groups]


def job_fsdp_jvp(rank, world):
    """Both placements of lambda; without and with keep_train_grad. Records
    lambda's gradient, the losses, whether the default step left the rows,
    their .grad and FSDP's settings as it found them, the kept gradient
    gathered whole, and the rows after one FSDP training update that follows
    the step (on the kept gradient with keep_train_grad)."""
    (x, y), (xv, yv) = [(shard(a, rank, world), shard(b, rank, world))
                        for a, b in jvp_batches()]
    out = {}
    for inside in (True, False):
        for keep in (False, True):
            model, hyper = sharded_model(world), FeatureHyper(inside)
            model(x)  # FSDP settles its settings in its first forward,
            model.reshard()  # and keeps the root gathered after it
            before, settings = [p.to_local().clone() for p in model.parameters()], \
                fsdp_settings(model)
            grad, r, sent = jvp_step(model, hyper, x, y, xv, yv, parallel="data",
                                     keep_train_grad=keep)
            same = (all(torch.equal(p.to_local(), b) for p, b in zip(model.parameters(), before))
                    and fsdp_settings(model) == settings)
            kept = [None if p.grad is None else p.grad.full_tensor()
                    for p in model.parameters()]
            update(model, hyper, x, y, keep)
            out[(inside, keep)] = {"grad": grad, "losses": r.losses, "val": r.val_loss,
                                   "same": same, "kept": kept, "sent": sent,
                                   "rows": [p.to_local().numel() for p in model.parameters()],
                                   "after": [p.full_tensor() for p in model.parameters()]}
    return out


def update(model, hyper, x, y, kept):
    """The model's SGD step: on the kept gradient, or after its own backward."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if not kept:
        opt.zero_grad()
        train_loss(model, hyper, x, y).backward()
    opt.step()


def reference_jvp():
    """The same steps in one process on the unsharded model and whole batches."""
    (x, y), (xv, yv) = jvp_batches()
    out = {}
    for inside in (True, False):
        for keep in (False, True):
            model, hyper = make_model(HIDDEN), FeatureHyper(inside)
            grad, r, _ = jvp_step(model, hyper, x, y, xv, yv, keep_train_grad=keep)
            kept = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            update(model, hyper, x, y, keep)
            out[(inside, keep)] = {"grad": grad, "losses": r.losses, "val": r.val_loss,
                                   "kept": kept,
                                   "after": [p.detach().clone() for p in model.parameters()]}
    return out
