"""Static typing of the installed package (PEP 561).

* py.typed and the stub of the compiled module (_kernels.pyi) ship in the installed package;
* every public function, class and method is fully annotated (parameters and return);
* mypy --strict accepts tests/typed_usage.py, a typed tour of the API, checked against the installed
  fastlm, and rejects a call whose result is bound to the wrong type (so the annotations are seen);
* mypy accepts the package itself, and stubtest finds _kernels.pyi in line with the compiled module.

mypy runs in a subprocess with a temporary directory as cwd (so that the source tree is not what it
finds) and MYPYPATH unset.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("mypy")

import fastlm  # noqa: E402
from fastlm import calibration, ngram, reference  # noqa: E402

HERE = Path(__file__).resolve().parent
PKG = Path(fastlm.__file__).resolve().parent
PUBLIC_MODULES = [fastlm, calibration, ngram, reference]

# Settings for checking the package itself. Its optional third-party imports (scipy in the benchmarks,
# matplotlib for the reliability diagram, the adapters' frameworks) may be absent or untyped where the
# tests run.
MYPY_INI = """\
[mypy]

[mypy-scipy.*,torch.*,matplotlib.*,lm_eval.*,transformers.*,dask.*,distributed.*]
ignore_missing_imports = True
"""

# Checks on top of mypy's defaults for the package: its private helpers are not all annotated, so
# --strict (which adds --disallow-untyped-defs / --disallow-untyped-calls / --warn-return-any) is used on
# the usage example only; the public API's completeness is checked by test_public_api_is_fully_annotated.
# (--warn-unused-ignores is left out: an ignore a newer numpy or mypy no longer needs is not an error.)
PACKAGE_FLAGS = ["--strict-equality", "--warn-redundant-casts", "--no-implicit-reexport", "--extra-checks"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not any(part in ("site-packages", "dist-packages") for part in PKG.parts):
        pytest.skip(f"fastlm is imported from {PKG}, not an installed copy (an editable install or the source "
                    f"tree): mypy would not check what gets shipped")
    d = tmp_path_factory.mktemp("typing")
    (d / "mypy.ini").write_text(MYPY_INI)
    return d


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """python *args in workdir, without MYPYPATH / PYTHONPATH (fastlm comes from site-packages)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)


def run_mypy(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(workdir, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", ".mypy_cache", *args)


def test_marker_and_stub_are_installed() -> None:
    assert (PKG / "py.typed").is_file()
    assert (PKG / "_kernels.pyi").is_file()
    compiled = [p for p in PKG.iterdir() if p.name.startswith("_kernels.") and p.suffix in (".so", ".pyd")]
    assert compiled, f"no compiled _kernels module in {PKG}"


def _callables() -> list[tuple[str, Callable[..., object]]]:
    """(qualified name, function) of every public function and method of the public modules."""
    out: list[tuple[str, Callable[..., object]]] = []
    for mod in PUBLIC_MODULES:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            qual = f"{mod.__name__}.{name}"
            if not inspect.isclass(obj):
                out.append((qual, obj))
                continue
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__len__", "__add__"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member):
                    out.append((f"{qual}.{attr}", member))
    return out


def test_public_api_is_fully_annotated() -> None:
    names = [q for q, _ in _callables()]
    assert "fastlm.softmax" in names and "fastlm.ngram.NgramLM.generate" in names
    assert "fastlm.reference.NgramLM.perplexity" in names and "fastlm.calibration.fit_temperature" in names
    missing = []
    for qual, fn in _callables():
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
        missing += [f"{qual}({p.name})" for p in params if p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{qual} -> ?")
    assert not missing, f"unannotated: {missing}"


def test_stub_covers_the_compiled_module() -> None:
    """Every public name of the compiled module is in its stub (stubtest below checks the signatures)."""
    import ast

    from fastlm import _kernels

    tree = ast.parse((PKG / "_kernels.pyi").read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stubbed |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    runtime = {n for n in vars(_kernels) if not n.startswith("_") and n not in ("np", "cnp")}
    assert runtime - stubbed == set()


def test_usage_example_passes_mypy_strict(workdir: Path) -> None:
    shutil.copy(HERE / "typed_usage.py", workdir / "typed_usage.py")
    r = run_mypy(workdir, "--strict", "typed_usage.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_usage_example_runs(workdir: Path) -> None:
    shutil.copy(HERE / "typed_usage.py", workdir / "typed_usage.py")
    r = run(workdir, "typed_usage.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_sees_the_annotations(workdir: Path) -> None:
    """A wrongly typed binding must fail: the package's types are seen, not Any."""
    (workdir / "wrong_usage.py").write_text(
        "import numpy as np\nimport fastlm\n\n"
        "ppl: str = fastlm.perplexity(np.zeros((2, 3)), np.zeros(2, np.int64))\n"
        "ids: float = fastlm.greedy(np.zeros(3))\n")
    r = run_mypy(workdir, "--strict", "wrong_usage.py")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count("Incompatible types in assignment") == 2, r.stdout


def test_package_passes_mypy(workdir: Path) -> None:
    r = run_mypy(workdir, *PACKAGE_FLAGS, "-p", "fastlm")
    assert r.returncode == 0, r.stdout + r.stderr


def test_stub_matches_compiled_module(workdir: Path) -> None:
    # __test__ is the doctest dictionary Cython adds to every module
    (workdir / "stubtest_allowlist.txt").write_text("fastlm._kernels.__test__\n")
    r = run(workdir, "-m", "mypy.stubtest", "--mypy-config-file", "mypy.ini", "--allowlist", "stubtest_allowlist.txt",
            "fastlm._kernels")
    assert r.returncode == 0, r.stdout + r.stderr
