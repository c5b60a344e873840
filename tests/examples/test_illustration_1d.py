"""The paper's 1-D problem: EvoGrad's mean estimate tracks the true hypergradient."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "illustration_1d"))
import problem  # noqa: E402


def test_k100_mean_estimate_has_the_true_sign_and_shape():
    lams = np.round(np.linspace(0.1, 2.0, 20), 3).tolist()
    means, _ = problem.estimate_curve(lams, population=100, repetitions=100, sigma=1.0,
                                      temperature=0.5, seed=0)
    true = [problem.true_hypergradient(l) for l in lams]
    for lam, m, t in zip(lams, means, true):
        if abs(lam - 1.0) >= 0.2 - 1e-9:
            assert np.sign(m) == np.sign(t), (lam, m, t)
    assert np.corrcoef(means, true)[0, 1] >= 0.95


def test_trajectory_with_evograd_moves_lambda_like_the_true_hypergradient():
    # Starting at lam = 0.2 (< 1) the true hypergradient is negative: lam grows.
    ev = problem.trajectory(0.0, 0.2, hypergradient="evograd", seed=3)
    tr = problem.trajectory(0.0, 0.2, hypergradient="true")
    assert len(ev) == 6 and ev[-1][1] > ev[0][1] and tr[-1][1] > tr[0][1]
