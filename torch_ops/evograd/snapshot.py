"""What a step changes about the model, saved to be put back bit for bit:
values, ``.grad``, ``requires_grad``, buffers and the modules' training
flags; and the torch RNG
states, replayed per candidate for common random numbers."""
import torch

from .layout import NoiseLayout


class Snapshot:
    """What a step changes about the model, to put back afterwards: the
    parameters' values (their local shards for FSDP), ``.grad`` and
    ``requires_grad``, the buffers, and the training flags of ``owner``'s
    modules (a closure may switch the model to eval for validation)."""

    def __init__(self, layout: NoiseLayout, buffers, owner=None):
        self.layout, self.buffers = layout, buffers
        layout.reshard()  # a forward of the caller's may have left FSDP's root gathered
        self.params, self.views = layout.owners, layout.views
        # The step writes the parameters and buffers through .data aliases,
        # which leave their autograd version counters alone: every value is
        # put back bit for bit before the step returns, so a graph recorded
        # before the step (LFT builds its auxiliary loss before the meta
        # block and backpropagates it after) stays valid and exact.
        self.targets = [v.data for v in self.views]
        self.buffer_targets = [b.data for b in buffers]
        with torch.no_grad():
            self.saved = [v.detach().clone() for v in self.views]
            self.saved_buffers = [b.detach().clone() for b in buffers]
        self.grads = [p.grad for p in self.params]
        self.flags = [p.requires_grad for p in self.params]
        self.modes = [(m, m.training) for m in owner.modules()] if owner is not None else []
        for p in self.params:  # closures calling backward() must not touch these
            p.grad = None

    def release_values(self):
        """The parameters hold theta again, bit for bit, and nothing writes
        them before the step ends: the saved copy is freed (one parameter-
        sized tensor less for the rest of the step) and restore() leaves
        the values as they are."""
        self.saved = None

    def restore_buffers(self):
        with torch.no_grad():
            for b, s in zip(self.buffer_targets, self.saved_buffers):
                b.copy_(s)

    def set_requires_grad(self, flag: bool):
        for p in self.params:
            p.requires_grad_(flag)

    def freeze(self, tensors):
        """Tensors neither perturbed nor hyperparameters (the encoder below a
        perturbed head) record nothing during the step."""
        self.frozen = [t for t in tensors if t.requires_grad]
        for t in self.frozen:
            t.requires_grad_(False)

    def restore(self):
        self.layout.reshard()
        with torch.no_grad():
            for i, (p, g, f) in enumerate(zip(self.params, self.grads, self.flags)):
                p.requires_grad_(f)
                if self.saved is not None:
                    self.targets[i].copy_(self.saved[i])
                p.grad = g
        for t in getattr(self, "frozen", ()):
            t.requires_grad_(True)
        for m, training in self.modes:
            m.training = training
        self.restore_buffers()


class RngSnapshot:
    """Torch RNG states (CPU and the parameters' CUDA devices) to replay per candidate."""

    def __init__(self, params):
        self.cpu = torch.get_rng_state()
        self.cuda = {}
        for p in params:
            if p.is_cuda and p.device.index not in self.cuda:
                self.cuda[p.device.index] = torch.cuda.get_rng_state(p.device)

    def replay(self):
        torch.set_rng_state(self.cpu)
        for index, state in self.cuda.items():
            torch.cuda.set_rng_state(state, index)
