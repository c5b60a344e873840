"""The meta-step's options, read from ``options.def``: the one table both
languages expand (C++ includes it into ``evograd::Options``). From it come
each value's check, what ranks agree on and what a checkpoint records; a
row's C++ spelling of "unset" (``""``, ``{}``) is Python's ``None``. Its
EVOGRAD_ESTIMATOR rows are ``USES`` (the options each estimator uses;
``check_uses`` refuses the others), its EVOGRAD_CONSTANT rows ``CONSTANTS``.

The file sits beside the C++ headers (``include/evograd/options.def``) and
is read there in a source checkout; an installed package carries it next to
its library, as the build installs both."""
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from . import _library

_ROW = re.compile(r"^EVOGRAD_OPTION\((\w+), ([\w:<>]+), (.+?), (ANY|AT_LEAST_2|POSITIVE|NONNEGATIVE|"
                  r"CHOICES\(.*?\)), (BOTH|PYTHON), ([A-Z_ |]+)\)$")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str                       # "int", "float", "str", "bool"
    optional: bool                  # None allowed (a c10::optional, or "" among the choices)
    default: Any
    rule: str                       # ANY, AT_LEAST_2, POSITIVE, NONNEGATIVE or CHOICES
    choices: Optional[Tuple[Any, ...]]
    python_only: bool
    agreed: bool
    saved: bool


_ESTIMATOR = re.compile(r'^EVOGRAD_ESTIMATOR\((\w+), "([\w ]*)"\)$')
_CONSTANT = re.compile(r"^EVOGRAD_CONSTANT\((\w+), ([\w:]+), (.+?)\)$")

_KINDS = {"int64_t": "int", "double": "float", "std::string": "str", "bool": "bool"}


def _literal(token: str, kind: str):
    if token in ("{}", '""'):
        return None
    if kind == "str":
        return token.strip('"')
    if kind == "bool":
        return {"true": True, "false": False}[token]
    return int(token) if kind == "int" else float(token)


def _constants(text: str) -> Dict[str, Any]:
    found = {}
    for line in text.splitlines():
        if line.startswith("EVOGRAD_CONSTANT("):
            m = _CONSTANT.match(line.strip())
            if m is None or m.group(2) not in _KINDS:
                raise RuntimeError(f"options.def: a constant this reader cannot parse: {line!r}")
            found[m.group(1)] = _literal(m.group(3), _KINDS[m.group(2)])
    return found


def _uses(text: str) -> Dict[str, Tuple[str, ...]]:
    found = {}
    for line in text.splitlines():
        if line.startswith("EVOGRAD_ESTIMATOR("):
            m = _ESTIMATOR.match(line.strip())
            if m is None:
                raise RuntimeError(f"options.def: an estimator row this reader cannot parse: {line!r}")
            found[m.group(1)] = tuple(m.group(2).split())
    return found


def _parse(text: str) -> Tuple[Option, ...]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("EVOGRAD_OPTION("):
            continue
        m = _ROW.match(line.strip())
        if m is None:
            raise RuntimeError(f"options.def: a row this reader cannot parse: {line!r}")
        name, ctype, default, rule, where, flags = m.groups()
        optional = ctype.startswith("c10::optional<")
        kind = _KINDS[ctype[len("c10::optional<"):-1] if optional else ctype]
        choices = None
        if rule.startswith("CHOICES"):
            choices = tuple(_literal(c.strip(), "str") for c in rule[8:-1].split(","))
            optional = None in choices
            rule = "CHOICES"
        rows.append(Option(name, kind, optional, _literal(default, kind), rule, choices,
                           where == "PYTHON", "AGREED" in flags, "SAVED" in flags))
    return tuple(rows)


def _spec_file() -> Path:
    """The checkout's include/evograd/options.def, or the installed copy on
    the package's path (an editable install's package spans both folders):
    the places the operator library is looked for, in the same order."""
    root = _library._checkout_root()
    candidates = [root / "include" / "evograd" / "options.def"] if root is not None else []
    candidates += [Path(folder) / "options.def" for folder in _library._package_path()]
    for path in candidates:
        if path.is_file():
            return path
    raise ImportError("evograd: options.def not found (looked in: "
                      + ", ".join(map(str, candidates)) + "); reinstall the package")


SPEC_FILE = _spec_file()
_SPEC = SPEC_FILE.read_text()
OPTIONS: Tuple[Option, ...] = _parse(_SPEC)
CONSTANTS: Dict[str, Any] = _constants(_SPEC)
BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}
USES: Dict[str, Tuple[str, ...]] = _uses(_SPEC)


def check_uses(estimator: str, given: Dict[str, Any]) -> None:
    """ValueError for an option ``estimator`` does not use, set to anything
    but its default (the same rule as C++'s)."""
    uses = USES[estimator]
    for o in OPTIONS:
        if o.name != "estimator" and o.name not in uses and given.get(o.name, o.default) != o.default:
            raise ValueError(f"estimator '{estimator}' does not use {o.name} (got "
                             f"{given[o.name]!r}); it uses: {', '.join(uses)}")


def check(name: str, value):
    """``value`` as option ``name`` holds it, or TypeError/ValueError."""
    o = BY_NAME[name]
    if value is None and o.optional:
        return None
    if o.kind == "bool":
        return bool(value)
    if o.choices:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be one of {o.choices}, got {type(value).__name__}")
        if value not in o.choices:
            raise ValueError(f"{name} must be one of {o.choices}, got {value!r}")
        return value
    return number(name, value, o.kind, o.rule)


_FAILS = {"AT_LEAST_2": (lambda v: v < 2, ">= 2"),
          "POSITIVE": (lambda v: not (math.isfinite(v) and v > 0), "finite and > 0"),
          "NONNEGATIVE": (lambda v: not (math.isfinite(v) and v >= 0), "finite and >= 0")}


def number(name: str, value, kind: str = "float", rule: str = "ANY"):
    """``value`` as an int or float that satisfies ``rule``, or TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind == "int" and not isinstance(value, int)):
        raise TypeError(f"{name} must be {'an int' if kind == 'int' else 'a float'}, "
                        f"got {type(value).__name__}")
    value = int(value) if kind == "int" else float(value)
    if rule in _FAILS and _FAILS[rule][0](value):
        raise ValueError(f"{name} must be {_FAILS[rule][1]}, got {value}")
    return value


def agreed(values: Dict[str, Any]) -> Dict[str, float]:
    """What ranks compare, as float64: each AGREED option (a choice as its
    index among the choices)."""
    out = {}
    for o in OPTIONS:
        if o.agreed:
            v = values[o.name]
            out[o.name] = (float("nan") if v is None and not o.choices else
                           float(o.choices.index(v) if o.choices else v))
    return out


def with_defaults(recorded: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's options with the rows it predates read as their defaults."""
    return {**{o.name: o.default for o in OPTIONS if o.saved}, **recorded}
