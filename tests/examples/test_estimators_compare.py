"""The estimator benchmark (examples/estimators/compare.py) as a user runs
it, on its smallest application (rotation), with few steps: every estimator
is compared with exact T1-T2 in float64, float32 and under bfloat16 autocast,
every cost row is measured (float32 and under autocast), and the table, JSON
and plot are written."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
PROGRAM = os.path.join(HERE, "..", "..", "examples", "estimators", "compare.py")


def _compare(out, *part):
    done = subprocess.run([sys.executable, PROGRAM, "--apps", "rotation", "--seeds", "2", "--steps", "2",
                           "--repeats", "1", "--threads", "1", "--out", str(out), *part],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


OTHER_APP = dict(app="mwn", method="plain", precision="float32", seconds=1.0, peak_bytes=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The two parts one after the other into one folder, as a user re-runs
    one of them: the second keeps the first's rows. The folder already holds
    a row of another application, which both runs keep."""
    out = tmp_path_factory.mktemp("estimators")
    (out / "estimators.json").write_text(json.dumps(dict(meta={}, quality=[], cost=[OTHER_APP])))
    stdout = _compare(out, "--no-quality", "--cost-precisions", "float32", "autocast-bfloat16")
    assert not (out / "estimators.png").exists() and "no quality rows to plot" in stdout
    stdout += _compare(out, "--no-cost", "--dtypes", "float64", "float32", "autocast-bfloat16")
    return out, stdout, json.loads((out / "estimators.json").read_text())


def test_every_estimator_is_compared_with_exact_t1t2(run):
    _, stdout, saved = run
    assert {r["dtype"] for r in saved["quality"]} == {"float64", "float32", "autocast-bfloat16"}
    rows = {r["estimator"]: r for r in saved["quality"] if r["dtype"] == "float64"}
    assert set(rows) == {"t1t2", "evograd", "evograd-antithetic", "lookahead", "jvp"}
    assert all(r["app"] == "rotation" and r["steps"] >= 1 and r["collapsed"] == 0.0 for r in rows.values())
    assert all(set(r["kinds"]) == {"angle"} for r in saved["quality"] if "refused" not in r)
    # One angle: a cosine can only be +1 or -1 here, so it checks the sign
    # alone; lookahead's must agree with T1-T2 (the paper's estimator's
    # single-step sign is random), and its size too: a central difference
    # in float64 (relative step sqrt(eps)) has truncation O(h^2) and
    # rounding O(eps/h), both near 1e-8 of the norm.
    assert rows["lookahead"]["single_cos"] == pytest.approx(1.0, abs=1e-9)
    assert rows["lookahead"]["norm_ratio"] == pytest.approx(1.0, abs=1e-5)
    # jvp takes no difference: T1-T2 to float64 rounding, and in float32 to
    # float32's (the angle's derivative passes through a whole LeNet).
    assert rows["jvp"]["single_cos"] == pytest.approx(1.0, abs=1e-12)
    assert rows["jvp"]["norm_ratio"] == pytest.approx(1.0, abs=1e-9)
    jvp32 = next(r for r in saved["quality"] if r["dtype"] == "float32" and r["estimator"] == "jvp")
    assert jvp32["single_cos"] == pytest.approx(1.0, abs=1e-9)
    assert jvp32["norm_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert rows["t1t2"]["norm_ratio"] == 1.0
    assert "rotation  float64           lookahead" in stdout
    assert "rotation  float32           jvp" in stdout


def test_under_autocast_lookahead_refuses_and_jvp_follows_t1t2_under_it(run):
    _, stdout, saved = run
    rows = {r["estimator"]: r for r in saved["quality"] if r["dtype"] == "autocast-bfloat16"}
    assert set(rows) == {"t1t2", "evograd", "evograd-antithetic", "lookahead", "jvp"}
    assert "bfloat16" in rows["lookahead"]["refused"] and "estimator='jvp'" in rows["lookahead"]["refused"]
    assert rows["t1t2"]["same_precision_t1t2_cos"] == 1.0
    assert rows["jvp"]["same_precision_t1t2_cos"] == pytest.approx(1.0, abs=1e-9)  # the sign
    assert "rotation  autocast-bfloat16 lookahead           refused" in stdout


def test_costs_beside_plain_training_with_and_without_the_hyperparameters(run):
    out, stdout, saved = run
    methods = ["plain", "plain+hyper", "t1t2", "evograd", "lookahead", "jvp"]
    assert saved["cost"][0] == OTHER_APP  # an application not re-run keeps its rows
    saved = dict(saved, cost=saved["cost"][1:])
    assert [(r["precision"], r["method"]) for r in saved["cost"]] == \
        [(p, m) for p in ("float32", "autocast-bfloat16") for m in methods]
    refused = [r for r in saved["cost"] if "refused" in r]
    assert [(r["precision"], r["method"]) for r in refused] == [("autocast-bfloat16", "lookahead")]
    cost = {r["method"]: r for r in saved["cost"] if r["precision"] == "float32"}
    assert list(cost) == methods
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 and r["parameters"] == 61706
               and r["hyperparameters"] == 1 and r["parameter_bytes"] == 61706 * 4 for r in cost.values())
    assert "x plain+hyper" in stdout
    assert saved["meta"]["threads"] == 1 and "--no-cost" in saved["meta"]["command"]
    # Rows kept from the first run still name the command that measured them.
    assert all("--no-quality" in r["command"] and r["date"] and r["torch"] for r in saved["cost"])
    assert all("--no-cost" in r["command"] for r in saved["quality"])
    assert (out / "estimators.png").stat().st_size > 0


def test_whole_iterations_cost_with_and_without_the_model_update_pass(tmp_path):
    """--iteration-cost: the meta-step plus the model's update, each method
    in its own processes, printed against plain training and T1-T2, and
    plotted."""
    stdout = _compare(tmp_path, "--no-quality", "--no-cost", "--iteration-cost")
    saved = json.loads((tmp_path / "estimators.json").read_text())
    whole = {r["method"]: r for r in saved["cost"]}
    assert list(whole) == [f"iteration:{m}" for m in ("plain", "t1t2", "jvp", "jvp-onestep")]
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 and r["precision"] == "float32"
               for r in whole.values())
    assert "Cost per full iteration" in stdout and "rotation  float32    jvp-onestep" in stdout
    assert "Cost per meta-step" not in stdout and "Quality" not in stdout
    assert (tmp_path / "iteration_cost.png").stat().st_size > 0
