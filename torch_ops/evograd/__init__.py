"""evograd: EvoGrad meta-learning hypergradients as PyTorch operators.

``torch.ops.evograd.*`` are loaded on import. See docs/api.md for the API.
"""
from . import _library
from .ops import (check_perturbable, combine, combine_into, loss_cotangent, perturb,
                  perturb_into, project, weights)
from .step import ESTIMATORS, EvoGrad, StepResult
from .base_values import detached
from .seeds import step_seed
from . import baselines, functional, seeds

library_path = _library.library_path
cpu_kernels = _library.cpu_kernels
# Written once, in CMakeLists.txt's project(); the build records it.
__version__ = _library.build_record["evograd"]

__all__ = ["EvoGrad", "StepResult", "ESTIMATORS", "detached", "step_seed", "perturb", "perturb_into", "combine",
           "combine_into", "weights", "project", "loss_cotangent", "check_perturbable", "functional", "baselines", "seeds",
           "library_path", "cpu_kernels"]
