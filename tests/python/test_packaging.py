"""How the package finds and checks its library, as a user meets it: import
from any folder with no environment variables, one version from CMake's
project(), a build record that refuses a library built for another torch,
and the checkout's build/ folder used only inside a checkout."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evograd

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_SOURCES = ROOT / "torch_ops" / "evograd"
INSTALLED = os.environ.get("EVOGRAD_TEST_INSTALLED") == "1"
TORCH_SITE = str(Path(torch.__file__).resolve().parents[1])


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "EVOGRAD_LIBRARY", "PYTHONHOME")}
    env.update(extra)
    return env


def import_isolated(package_parent, cwd, env=None):
    """`import evograd` from a copy under package_parent, with no site
    hooks (no editable-install finder) and torch from its own folder."""
    code = (f"import sys; sys.path[:0] = [{str(package_parent)!r}]; "
            f"sys.path.append({TORCH_SITE!r}); import evograd; print(evograd.library_path)")
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=300)


def copy_package(dest: Path, spec: bool = True) -> Path:
    """The package as pip installs it: its sources, and the options' table
    that the install puts beside the library (in a checkout it is read from
    include/evograd)."""
    dest.mkdir(parents=True)
    shutil.copytree(PACKAGE_SOURCES, dest / "evograd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.json"))
    if spec:
        shutil.copy(ROOT / "include" / "evograd" / "options.def", dest / "evograd" / "options.def")
    return dest


def place_library(folder: Path, torch_version: str):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(evograd.library_path, folder / "libevograd_ops.so")
    record = dict(evograd._library.build_record, torch=torch_version)
    (folder / "libevograd_ops.json").write_text(json.dumps(record))


def test_version_comes_from_cmake_project():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert evograd.__version__ == re.search(r"project\(evograd VERSION ([0-9.]+)", cmake).group(1)
    if INSTALLED:
        from importlib.metadata import version
        assert version("evograd") == evograd.__version__


def test_build_record_names_this_torch():
    assert evograd._library.build_record["torch"] == torch.__version__


@pytest.mark.skipif(not INSTALLED, reason="needs the pip-installed package (main test leg)")
def test_installed_package_imports_from_any_folder_without_environment(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import evograd; print(evograd.library_path)"],
                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout, r.stdout


def test_library_built_for_another_torch_is_refused_with_both_versions(tmp_path):
    parent = copy_package(tmp_path / "site")
    place_library(parent / "evograd", "1.0.0+elsewhere")
    r = import_isolated(parent, tmp_path)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "1.0.0+elsewhere" in r.stderr
    assert torch.__version__ in r.stderr and "pip install --no-build-isolation" in r.stderr


def test_library_without_build_record_is_refused(tmp_path):
    parent = copy_package(tmp_path / "site")
    place_library(parent / "evograd", torch.__version__)
    (parent / "evograd" / "libevograd_ops.json").unlink()
    r = import_isolated(parent, tmp_path)
    assert r.returncode != 0 and "no readable build record" in r.stderr


def test_matching_library_inside_the_package_loads(tmp_path):
    parent = copy_package(tmp_path / "site")
    place_library(parent / "evograd", torch.__version__)
    r = import_isolated(parent, tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(parent / "evograd" / "libevograd_ops.so") in r.stdout


def test_package_without_its_options_table_is_refused(tmp_path):
    parent = copy_package(tmp_path / "site", spec=False)
    place_library(parent / "evograd", torch.__version__)
    r = import_isolated(parent, tmp_path)
    assert r.returncode != 0 and "ImportError: evograd: options.def not found" in r.stderr


def test_the_options_table_is_read_in_place_in_a_checkout():
    """Not a copy: C++ includes the same file (include/evograd/options.def)."""
    assert evograd.options.SPEC_FILE == ROOT / "include" / "evograd" / "options.def"


def test_build_folder_is_used_only_inside_a_source_checkout(tmp_path):
    copy = tmp_path / "copy"
    copy_package(copy / "torch_ops")
    place_library(copy / "build", torch.__version__)  # two folders above the package
    r = import_isolated(copy / "torch_ops", tmp_path)
    assert r.returncode != 0 and "operator library not found" in r.stderr
    # The same layout with the project's CMakeLists.txt beside it is a checkout.
    shutil.copy(ROOT / "CMakeLists.txt", copy / "CMakeLists.txt")
    r = import_isolated(copy / "torch_ops", tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(copy / "build" / "libevograd_ops.so") in r.stdout


def registered_schemas():
    """name -> schema string of every operator in the evograd namespace."""
    return {s.name.split("::")[1]: str(s) for s in torch._C._jit_get_all_schemas()
            if s.name.startswith("evograd::")}


def test_api_operator_table_is_the_registered_schemas():
    """Every row of the operator table in docs/api.md, as written, is a
    registered schema, and every registered operator has its row."""
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| schema | what it does |"):]
    table = table[:table.index("\n\n")]
    rows = re.findall(r"^\| `([a-z_]+)\((.*)\) -> ([^`]*)` \|", table, re.M)
    documented = {name: f"evograd::{name}({args}) -> {ret}" for name, args, ret in rows}
    registered = {k: v for k, v in registered_schemas().items()}
    assert sorted(documented) == sorted(registered)
    for name, schema in registered.items():
        assert documented[name] == schema, (name, documented[name], schema)


def test_every_operator_is_listed_by_dir():
    """Right after import, before any operator was looked up by name."""
    code = "import torch, evograd; print(' '.join(dir(torch.ops.evograd)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split()
    for name in registered_schemas():
        assert name in listed, name
