"""The meta-step's options exist once, in torch_ops/evograd/options.def: the
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


def test_the_python_only_rows_are_the_enumerated_differences():
    """docs/design.md lists them (none today); C++ lacks exactly these."""
    only = [o.name for o in options.OPTIONS if o.python_only]
    assert only == []
    design = (ROOT / "docs" / "design.md").read_text()
    for name in only:
        assert f"`{name}`" in design, name


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
