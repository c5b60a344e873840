"""What the documents say about the code, checked against the code, so that
the next drift fails here and not a reader: the Debian packages the
Makefile installs, the legs `make test` runs, the size rule for library
sources, and the scenario table's size."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = (ROOT / "docs" / "design.md").read_text()
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def makefile_list(name: str):
    """A Makefile variable's words (``NAME := a b \\`` continued lines)."""
    m = re.search(rf"^{name}\s*:?=(.*?)(?<!\\)$", MAKEFILE, re.M | re.S)
    return m.group(1).replace("\\\n", " ").split()


def design_packages(text: str):
    """The Debian packages docs/design.md lists (in its Tests section)."""
    m = re.search(r"the Debian packages\s+\(after `apt-get update`[^)]*\)\s+`([^`]*)`", text)
    return m.group(1).split() if m else []


def test_design_lists_the_debian_packages_the_makefile_installs():
    packages = makefile_list("DEB_PACKAGES")
    assert "libgloo-dev" in packages and "make" in packages
    assert design_packages(DESIGN) == packages
    dropped = DESIGN.replace(" libgloo-dev", "", 1)
    assert design_packages(dropped) != packages  # the check can fail


def test_readme_names_the_legs_make_test_runs():
    legs = makefile_list("TEST_LEGS")
    assert legs and "$(TEST_LEGS)" in re.search(r"^test:\n\t(.*)$", MAKEFILE, re.M).group(1)
    said = re.search(r"<!-- legs: (.*?) -->", README)
    assert said is not None, "README.md has no <!-- legs: ... --> line under the two commands"
    assert said.group(1).split() == legs
    for leg in legs:
        assert f"`make {leg}`" in README, leg


def source_files():
    kinds = {".py", ".c", ".h", ".cpp", ".hpp", ".cu", ".cuh", ".def"}
    for top in ("csrc", "torch_ops", "include"):
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and p.suffix in kinds and "__pycache__" not in p.parts:
                yield p


def too_long(files, limit):
    return [f"{p.relative_to(ROOT)}: {n} lines" for p in files
            if (n := len(p.read_text().splitlines())) > limit]


def test_library_sources_stay_under_the_stated_size():
    limit = int(re.search(r"No library source file[^.]*? is longer than (\d+) lines", DESIGN).group(1))
    files = list(source_files())
    assert len(files) > 50 and any(p.name == "evograd_step.cpp" for p in files)
    assert too_long(files, limit) == []
    assert too_long(files, 100)  # the check can fail: many are longer than 100


def test_design_states_the_scenario_tables_size():
    import scenarios  # tests/ops, on the path by conftest.py
    stated = int(re.search(r"one table of (\d+) scenarios", DESIGN).group(1))
    assert stated == len(scenarios.TABLE)
