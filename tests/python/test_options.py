"""The meta-step's options exist once, in include/evograd/options.def: the
Python constructor's keywords and defaults, and C++'s evograd::Options,
come from its rows. An option added to one language only fails here, and
the checks below are shown to catch exactly that."""
import inspect
import math
import re
from pathlib import Path

import pytest
import torch

import evograd
from evograd import options

ROOT = Path(__file__).resolve().parents[2]
HPP = ROOT / "include" / "evograd" / "evograd.hpp"

# EvoGrad's arguments that are not options: the tensors and where they live.
NOT_OPTIONS = {"self", "params", "hyperparams", "buffers", "module", "process_group"}


def python_mismatches(rows, init):
    """What differs between the rows and a constructor signature."""
    params = inspect.signature(init).parameters
    found = []
    for o in rows:
        if o.name not in params:
            found.append(f"{o.name}: a row Python's EvoGrad does not take")
        elif params[o.name].default != o.default:
            found.append(f"{o.name}: default {params[o.name].default!r} here, {o.default!r} in the row")
    names = {o.name for o in rows}
    found += [f"{n}: a keyword with no row" for n in params if n not in names | NOT_OPTIONS]
    return found


def cpp_members(hpp_text):
    """The members evograd::Options declares by hand (beside its rows)."""
    body = re.search(r"struct Options \{(.*?)\n\};", hpp_text, re.S).group(1)
    body = re.sub(r"//[^\n]*", "", body)
    members = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        members.append(re.search(r"(\w+)\s*(=[^;]*)?;$", line).group(1))
    return members


def test_python_takes_every_row_with_its_default_and_nothing_else():
    assert python_mismatches(options.OPTIONS, evograd.EvoGrad.__init__) == []


def test_cpp_options_are_the_rows_and_the_process_group():
    text = HPP.read_text()
    assert '#include "evograd/options.def"' in text.split("struct Options {")[1].split("};")[0]
    assert cpp_members(text) == ["process_group"]


def test_the_checks_fail_for_an_option_in_one_language_only():
    extra = options._parse('EVOGRAD_OPTION(warmup, int64_t, 0, ANY, BOTH, SAVED)\n')
    assert python_mismatches(options.OPTIONS + extra, evograd.EvoGrad.__init__) == [
        "warmup: a row Python's EvoGrad does not take"]

    def init(self, params, hyperparams, population=2, warmup=0):
        pass
    assert "warmup: a keyword with no row" in python_mismatches(options.OPTIONS, init)
    changed = options._parse('EVOGRAD_OPTION(sigma, double, 1e-2, POSITIVE, BOTH, AGREED)\n')
    assert python_mismatches(changed, evograd.EvoGrad.__init__)[0].startswith("sigma: default")
    hand_added = HPP.read_text().replace("struct Options {\n", "struct Options {\n  int64_t warmup = 0;\n")
    assert cpp_members(hand_added) == ["warmup", "process_group"]


def test_rows_the_reader_cannot_parse_are_an_error():
    with pytest.raises(RuntimeError, match="cannot parse"):
        options._parse("EVOGRAD_OPTION(sigma, double, 1e-3, SOMETIMES, BOTH, SAVED)\n")


def python_only_mismatches(rows, design_text):
    """The rows marked PYTHON against the line of docs/design.md that
    enumerates them ("Python-only options: `a`, `b`." or "...: none.")."""
    line = re.search(r"^Python-only options: (.*)$", design_text, re.M)
    if line is None:
        return ["docs/design.md has no 'Python-only options:' line"]
    listed = re.findall(r"`(\w+)`", line.group(1))
    marked = [o.name for o in rows if o.python_only]
    return [f"{n}: marked PYTHON, not listed" for n in marked if n not in listed] + \
        [f"{n}: listed, not marked PYTHON" for n in listed if n not in marked]


def test_the_python_only_rows_are_the_enumerated_differences():
    """C++ lacks exactly the rows marked PYTHON, and docs/design.md says which."""
    design = (ROOT / "docs" / "design.md").read_text()
    assert python_only_mismatches(options.OPTIONS, design) == []
    # A row turned Python-only, or a difference documented that is not one, fails.
    marked = options._parse('EVOGRAD_OPTION(warmup, int64_t, 0, ANY, PYTHON, NONE)\n')
    assert python_only_mismatches(options.OPTIONS + marked, design) == [
        "warmup: marked PYTHON, not listed"]
    listed = re.sub(r"^Python-only options: (.*)\.$", r"Python-only options: \1, `sigma`.",
                    design, flags=re.M)
    assert python_only_mismatches(options.OPTIONS, listed) == ["sigma: listed, not marked PYTHON"]


def test_agreement_sends_a_choice_as_its_index():
    """A third kind of noise must not compare equal to sign (as a
    `noise == "gauss"` flag would)."""
    values = {o.name: o.default for o in options.OPTIONS}
    base = options.agreed(values)
    assert base["noise"] == 0.0 and base["parallel"] == 0.0
    assert options.agreed({**values, "noise": "gauss"})["noise"] == 1.0
    assert options.agreed({**values, "parallel": "candidates"})["parallel"] == 2.0
    assert set(base) == {o.name for o in options.OPTIONS if o.agreed}


def test_each_rule_is_checked_with_the_option_named():
    cases = [("population", 1, ValueError, "population must be >= 2"),
             ("population", 2.0, TypeError, "population must be an int"),
             ("sigma", 0.0, ValueError, "sigma must be finite and > 0"),
             ("temperature", math.inf, ValueError, "temperature must be finite and > 0"),
             ("inner_lr", -1.0, ValueError, "inner_lr must be finite and >= 0"),
             ("noise", "uniform", ValueError, r"noise must be one of \('sign', 'gauss'\)"),
             ("noise", 1, TypeError, "noise must be one of"),
             ("scale", "", ValueError, r"scale must be one of \(None, 't1t2'\)")]
    for name, value, err, match in cases:
        with pytest.raises(err, match=match):
            options.check(name, value)
    assert options.check("inner_lr", 0) == 0.0 and options.check("scale", None) is None


def test_a_checkpoint_from_before_a_row_reads_its_default():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    meta = evograd.EvoGrad([p], [h], buffers=[], seed=1)
    state = meta.state_dict()
    for row in ("estimator", "fd_step"):
        del state["options"][row]
    fresh = evograd.EvoGrad([p], [h], buffers=[], seed=2)
    fresh.load_state_dict(state)
    assert fresh.seed == 1
    state["options"]["noise"] = "gauss"
    with pytest.raises(ValueError, match="noise: saved 'gauss', here 'sign'"):
        fresh.load_state_dict(state)


def test_the_constants_are_the_rows_in_both_languages():
    """COLLAPSE_ESS and the drop gap come from options.def's EVOGRAD_CONSTANT
    rows; C++'s kCollapseEss and kDropGap are expanded from the same rows."""
    assert options.CONSTANTS == {"collapse_ess": 1.01, "drop_gap": 800.0}
    assert evograd.step.COLLAPSE_ESS == options.CONSTANTS["collapse_ess"]
    assert evograd.phases.DROP_GAP == options.CONSTANTS["drop_gap"]
    text = HPP.read_text()
    assert "constexpr double kCollapseEss = constants::collapse_ess;" in text
    step_cpp = (ROOT / "torch_ops" / "api" / "evograd_step.cpp").read_text()
    assert "constexpr double kDropGap = constants::drop_gap;" in step_cpp
    with pytest.raises(RuntimeError, match="cannot parse"):
        options._constants("EVOGRAD_CONSTANT(gap, long double, 1)\n")


def test_the_names_of_choices_are_the_rows():
    """The operators take exactly the noise kinds the noise row lists, and
    step_seed exactly the schedules of the seed_schedule row."""
    p = [torch.zeros(4)]
    for name in options.BY_NAME["noise"].choices:
        assert evograd.perturb(p, 1, 0, 0.5, noise=name)[0].abs().max() > 0
    with pytest.raises(ValueError, match="unknown noise 'uniform'"):
        evograd.perturb(p, 1, 0, 0.5, noise="uniform")
    assert evograd.seeds.SCHEDULES == options.BY_NAME["seed_schedule"].choices
    for name in evograd.seeds.SCHEDULES:
        evograd.step_seed(3, 4, name)
    with pytest.raises(ValueError, match="seed_schedule must be one of"):
        evograd.step_seed(3, 4, "linear")


def test_every_option_is_varied_by_some_cross_language_scenario():
    """tests/ops/scenarios.py: its columns are the rows, and each row takes
    at least two values across the table (C++ must reproduce every one)."""
    import scenarios  # tests/ops, on the path by conftest.py
    assert scenarios.unvaried(scenarios.TABLE) == []
    line = scenarios.table_line(scenarios.TABLE[0])
    assert [f.split("=")[0] for f in line.split()[1:len(scenarios.BOTH) + 1]] == \
        [o.name for o in options.OPTIONS if not o.python_only]
    # The check can fail: without the one scenario that checks replicas, that row is unvaried.
    fewer = [s for s in scenarios.TABLE if not s.options["check_replicas"]]
    assert scenarios.unvaried(fewer) == ["check_replicas"]
    with pytest.raises(ValueError, match="not rows of options.def"):
        scenarios.scenario("typo", sigmaa=0.1)
