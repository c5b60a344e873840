"""examples/precision/autocast.py as a user runs it, with few seeds: the
paper's estimator under bfloat16 autocast against float32 on the same noise,
a table, JSON and a plot; at sigma = 1e-3 the step warns that its loss
differences are rounding, at sigma = 0.1 it mostly does not."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
PROGRAM = os.path.join(HERE, "..", "..", "examples", "precision", "autocast.py")


def test_the_autocast_table(tmp_path):
    done = subprocess.run([sys.executable, PROGRAM, "--seeds", "3", "--sigmas", "1e-3", "1e-1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["sigma"], r["dtype"]): r for r in json.loads((tmp_path / "autocast.json").read_text())["rows"]}
    assert {d for _, d in rows} >= {"bfloat16"}
    assert all(len(r["cosines"]) == 3 and -1 <= r["mean"] <= 1 for r in rows.values())
    # (tests/python/test_autocast.py holds the warning's condition to the losses)
    assert rows[(1e-3, "bfloat16")]["warned"] == 3
    assert rows[(1e-1, "bfloat16")]["warned"] < 3
    assert rows[(1e-1, "bfloat16")]["mean"] > rows[(1e-3, "bfloat16")]["mean"]
    assert "warned" in done.stdout and (tmp_path / "autocast.png").stat().st_size > 0
