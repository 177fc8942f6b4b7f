"""show_config, thread settings, SIMD selection and the command line."""

import subprocess
import sys

import numpy as np
import pytest

import fastlm
from fastlm import _kernels, bench, cli


def test_show_config(capsys):
    cfg = fastlm.show_config()
    printed = capsys.readouterr().out
    assert cfg["version"] == fastlm.__version__ and fastlm.__version__ in printed
    assert cfg["simd_active"] in cfg["simd_available"]
    assert set(cfg["simd_available"]) <= set(cfg["simd_compiled"])
    assert "scalar" in cfg["simd_available"]
    assert cfg["num_threads"] >= 1


def test_simd_select_rejects_unknown_and_unavailable():
    with pytest.raises(ValueError, match="not available"):
        _kernels.simd_select("sse9")
    missing = [lv for lv in _kernels.SIMD_LEVELS if lv not in _kernels.simd_supported()]
    for level in missing:
        with pytest.raises(ValueError, match="not available"):
            _kernels.simd_select(level)


def test_levels_agree_with_each_other(rng):
    """Every SIMD level agrees with the scalar specification within the stated error."""
    x = (rng.standard_normal((9, 5000)) * 5).astype(np.float32)
    t = rng.integers(0, 5000, 9)
    previous = _kernels.simd_active()
    results = {}
    try:
        for level in _kernels.simd_supported():
            _kernels.simd_select(level)
            results[level] = fastlm.cross_entropy_with_grad(x, t, label_smoothing=0.1, softcap=30.0)
    finally:
        _kernels.simd_select(previous)
    loss0, g0 = results["scalar"]
    for loss, g in results.values():
        np.testing.assert_allclose(loss, loss0, rtol=1e-6)
        np.testing.assert_allclose(g, g0, rtol=1e-5, atol=1e-9)


def test_set_num_threads_validation():
    before = fastlm.get_num_threads()
    with pytest.raises(ValueError):
        fastlm.set_num_threads(0)
    with pytest.raises(TypeError):
        fastlm.set_num_threads(1.5)
    with pytest.raises(TypeError):
        fastlm.set_num_threads(True)
    assert fastlm.get_num_threads() == before


def test_cli_info_and_bench(capsys):
    assert cli.main(["info"]) == 0
    assert "simd_active" in capsys.readouterr().out
    results = bench.run([(8, 300)], repeat=1)
    table = bench.format_table(results)
    assert table.count("\n") == 1 + len(bench.make_cases())
    for r in results:
        assert r["error"] < 1e-5 and r["fastlm"] > 0 and r["copyto"] > 0


def test_console_script():
    out = subprocess.run([sys.executable, "-m", "fastlm.cli", "info"], capture_output=True, text=True, check=True)
    assert "simd_compiled" in out.stdout
