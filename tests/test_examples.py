"""The worked examples (examples/*.py) run as a user runs them, `python examples/x.py`, each asserting
what it teaches; their figures land in a temporary folder (FASTLM_EXAMPLES_OUT)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples").glob("[0-9][0-9]_*.py"))


def test_every_example_is_here():
    assert [p.name[:2] for p in EXAMPLES] == [f"{i:02d}" for i in range(1, 9)]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_asserts_what_it_teaches(path, tmp_path):
    pytest.importorskip("matplotlib")
    env = dict(os.environ, FASTLM_EXAMPLES_OUT=str(tmp_path), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = path.read_text(encoding="utf-8")
    assert text.count("# %%") >= 3  # cells: opens as a notebook with jupytext
    if "savefig" in text:
        assert list(tmp_path.glob("*.png")), "the example saves its figures into FASTLM_EXAMPLES_OUT"
