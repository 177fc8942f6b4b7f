"""Calibration (expected_calibration_error, reliability_bins, plot_reliability_diagram,
calibration_from_logits, fit_temperature) against the reference."""

from __future__ import annotations

from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlm import calibration
from fastlm import reference as ref

from .helpers import (FLOATS, assert_match, decoding_input, eps_of, expect_errors, expect_ok, finite_max, fn_id, fuzz,
                      logits_input, ref_outcome, spoil_row, tols)

BIN_FNS = {"ece": calibration.expected_calibration_error, "bins": calibration.reliability_bins,
           "plot": calibration.plot_reliability_diagram}
BIN_OPTIONS = {"n_bins": [1, 2, 5, 15], "strategy": ["uniform", "quantile"], "closed": ["right", "left"]}
BAD_BIN_OPTIONS = {"n_bins": [0, -1, 2.5, True], "strategy": ["other"], "closed": ["both"]}
NO_MATPLOTLIB = pytest.mark.skipif(find_spec("matplotlib") is None, reason="needs matplotlib")


@st.composite
def bins_call(draw, fn):
    """A valid call: SimpleNamespace(conf, correct (bool, int or float 0/1), kwargs, rng)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 30))
    grid = np.array([0.0, 0.1, 0.5, 0.55, 1.0, 1 / 3, 2 / 3, 0.999])
    conf = rng.choice(grid, n) if draw(st.booleans()) else rng.random(n)
    correct = (rng.random(n) < 0.6).astype(draw(st.sampled_from([bool, np.int64, np.float64])))
    kwargs = {name: draw(st.sampled_from(values)) for name, values in BIN_OPTIONS.items()}
    if fn == "ece":
        kwargs["norm"] = draw(st.sampled_from(["l1", "l2", "max"]))
    return SimpleNamespace(conf=conf, correct=correct, kwargs=kwargs, rng=rng)


@pytest.mark.parametrize("fn", ["ece", "bins"])
@fuzz(30)
@given(data=st.data())
def test_bins_match_reference(fn, data):
    """The ECE, or every bin's edges, count, mean confidence and accuracy, as the reference's."""
    c = data.draw(bins_call(fn))
    res = expect_ok(BIN_FNS[fn], c.conf, c.correct, **c.kwargs)
    if c.kwargs["strategy"] == "quantile" and np.unique(c.conf).size == 1:
        return  # the reference's quantile edges collapse to one (no bin, or an error); fastlm keeps [0, 1]
    ref_fn = ref.expected_calibration_error if fn == "ece" else ref.reliability_bins
    rok, want = ref_outcome(ref_fn, c.conf, c.correct.astype(np.float64), **c.kwargs)
    assert rok, want
    for key in ["lower", "upper", "count", "confidence", "accuracy"] if fn == "bins" else [None]:
        assert_match(res[key] if key else res, want[key] if key else want, 1e-9, 1e-12)


@NO_MATPLOTLIB
@fuzz(6)
@given(data=st.data())
def test_plot_accepts_valid_input(data):
    c = data.draw(bins_call("plot"))
    expect_ok(calibration.plot_reliability_diagram, c.conf, c.correct, **c.kwargs)


@pytest.mark.parametrize("fn", ["bins", "ece", pytest.param("plot", marks=NO_MATPLOTLIB)])
@fuzz(12)
@given(data=st.data())
def test_bins_bad_input_raises(fn, data):
    """correct holding a 2, strings, or one entry too many; a confidence of NaN, < 0, > 1 or inf; no
    confidences; a bad n_bins, strategy or closed (and norm "linf" for the ECE)."""
    c = data.draw(bins_call(fn))
    f, n = BIN_FNS[fn], c.conf.size
    twos = c.correct.astype(np.int64) * 2
    twos[c.rng.integers(0, n)] = 2
    expect_errors(lambda bad: f(c.conf, bad, **c.kwargs), [twos, c.correct.astype(str), np.append(c.correct, True)])
    bad_conf = [np.where(np.arange(n) == c.rng.integers(0, n), v, c.conf) for v in (np.nan, -0.1, 1.5, np.inf)]
    expect_errors(lambda bad: f(bad, c.correct, **c.kwargs), bad_conf)
    expect_errors(lambda bad: f(*bad, **c.kwargs), [(c.conf[:0], c.correct[:0])])
    bads = [{name: v} for name, values in BAD_BIN_OPTIONS.items() for v in values] + [{"norm": "linf"}] * (fn == "ece")
    expect_errors(lambda bad: f(c.conf, c.correct, **{**c.kwargs, **bad}), bads)


def bad_labels(labels, V):
    """Labels (not empty) with one id of V, of float dtype, or one short (flattened)."""
    too_big = labels.copy()
    too_big.reshape(-1)[0] = V
    return [too_big, labels.astype(np.float64), labels.reshape(-1)[:-1]]


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(12)
@given(data=st.data())
def test_calibration_from_logits_matches_reference(dtype, data):
    """Confidence within the softmax's rounding; correct exactly."""
    x, x64, _ = data.draw(decoding_input([dtype], max_dims=2, max_v=12))
    labels = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, max(x.shape[-1], 1), x.shape[:-1])
    conf, correct = expect_ok(calibration.calibration_from_logits, x, labels)
    if x.size == 0:
        assert np.shape(conf) == x.shape[:-1] and np.shape(correct) == x.shape[:-1]
        return
    wconf, wcorrect = ref.calibration_from_logits(x64, labels)
    rtol, atol = tols(dtype)
    assert_match(conf, wconf, rtol, atol + 16 * eps_of(dtype) * (1 + finite_max(x64)))
    np.testing.assert_array_equal(correct, wcorrect)


@fuzz(15)
@given(data=st.data())
def test_calibration_from_logits_bad_input_raises(data):
    """Bad labels (out of range, float, another shape); rows of V = 0; a row holding NaN or only -inf."""
    x, x64, dtype = data.draw(logits_input(max_dims=2, max_v=12).filter(lambda c: c[0].size > 0))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, x.shape[-1], x.shape[:-1])
    expect_errors(lambda bad: calibration.calibration_from_logits(x, bad), bad_labels(labels, x.shape[-1]))
    spoiled = [spoil_row(x64, kind, rng).astype(dtype) for kind in ("nan", "-inf")]
    expect_errors(lambda bad: calibration.calibration_from_logits(bad, labels), spoiled + [x[..., :0]])


BOUNDS = [(0.05, 20.0), (0.5, 2.0), (1e-3, 1e3)]
BAD_BOUNDS = [(0, 1), (2, 1), (1, np.inf), (np.nan, 1), 5, ("a", "b")]


@st.composite
def fit_call(draw, dtypes=FLOATS):
    """A valid fit_temperature call: (N >= 1, V >= 1) logits finite at each row's max, labels, bounds."""
    x, x64, dtype = draw(logits_input(shape=draw(st.tuples(st.integers(1, 5), st.sampled_from([1, 1, 2, 3, 7, 8, 9,
                                                                                                  12]))),
                                      dtypes=dtypes).filter(lambda c: np.isfinite(np.max(c[1], axis=1)).all()))
    labels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, x.shape[1], x.shape[0])
    return x, x64, dtype, labels, draw(st.sampled_from(BOUNDS))


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(15)
@given(data=st.data())
def test_fit_temperature_matches_reference(dtype, data):
    """A temperature within the bounds whose mean NLL is no worse than the reference's optimum's."""
    x, x64, _, labels, bounds = data.draw(fit_call([dtype]))
    res = expect_ok(calibration.fit_temperature, x, labels, bounds=bounds)
    assert isinstance(res, float) and bounds[0] <= res <= bounds[1]
    if finite_max(x64, axis=None) > 1e4:
        return  # huge logits: the NLL is flat or steep beyond float precision
    T_ref = ref.fit_temperature(x64, labels, bounds=bounds)
    nll = ref.mean_nll_at_temperature(x64, labels, res)
    nll_ref = ref.mean_nll_at_temperature(x64, labels, T_ref)
    assert nll <= nll_ref + 1e-5 * (1 + abs(nll_ref)), (res, T_ref, nll, nll_ref)


@fuzz(15)
@given(data=st.data())
def test_fit_temperature_bad_input_raises(data):
    """Bad bounds; bad labels; 1-D logits, no rows, V = 0; a row not finite at its max (NaN, +inf, all -inf)."""
    x, x64, dtype, labels, bounds = data.draw(fit_call())
    fit = calibration.fit_temperature
    expect_errors(lambda bad: fit(x, labels, bounds=bad), BAD_BOUNDS)
    expect_errors(lambda bad: fit(x, bad, bounds=bounds), bad_labels(labels, x.shape[1]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    plus_inf = x64.copy()
    plus_inf[rng.integers(0, x.shape[0]), rng.integers(0, x.shape[1])] = np.inf
    bad_x = [spoil_row(x64, kind, rng).astype(dtype) for kind in ("nan", "-inf")] + [plus_inf.astype(dtype)]
    expect_errors(lambda bad: fit(bad[0], bad[1], bounds=bounds),
                  [(b, labels) for b in bad_x] + [(x[0], labels[:0]), (x[:0], labels[:0]), (x[:, :0], labels)])
