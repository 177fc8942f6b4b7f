"""Fuzzing linear_cross_entropy(_with_grad) against fastlm.reference: random shapes (empty, V = 1, D = 1),
dtypes, chunk sizes, options and targets, valid or not. The call returns the reference's result or
raises ValueError / TypeError exactly when the input is invalid."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@st.composite
def problems(draw):
    N = draw(st.integers(0, 9))
    D = draw(st.integers(1, 5))
    V = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h = rng.standard_normal((N, D)) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    W = rng.standard_normal((V, D))
    b = rng.standard_normal(V) if draw(st.booleans()) else None
    ignore_index = draw(st.sampled_from([-100, 0, V - 1]))
    t = rng.integers(0, V, N)
    if N:
        t[rng.random(N) < 0.3] = ignore_index
    opts = dict(ignore_index=ignore_index,
                reduction=draw(st.sampled_from(["mean", "sum", "none"])),
                label_smoothing=draw(st.sampled_from([0.0, 0.3, 1.0])),
                z_loss=draw(st.sampled_from([0.0, 1e-2])),
                softcap=draw(st.sampled_from([None, 2.0])),
                temperature=draw(st.sampled_from([1.0, 0.5, 3.0])))
    if draw(st.booleans()):
        opts["class_weight"] = rng.random(V) + 0.1
    bad = draw(st.sampled_from([None, None, None, "target", "chunk", "bias_shape", "dtype"]))
    chunk = draw(st.sampled_from([None, 1, 2, 5]))
    if bad == "target" and N:
        t[draw(st.integers(0, N - 1))] = draw(st.sampled_from([V, -1 if ignore_index != -1 else V + 3, 10**6]))
    elif bad == "chunk":
        chunk = draw(st.sampled_from([0, -3]))
    elif bad == "bias_shape":
        b = np.zeros(V + 1)
    valid = bad in (None, "dtype") and not (bad == "target" and N)
    W = W.astype(np.float32 if (bad == "dtype" and dtype == np.float64) else dtype)
    valid = valid and W.dtype == dtype
    return h.astype(dtype), W, t, None if b is None else b.astype(dtype), chunk, opts, valid


@settings(max_examples=150, **SETTINGS)
@given(problems())
def test_linear_cross_entropy_matches_reference_or_raises(p):
    h, W, t, b, chunk, opts, valid = p
    try:
        got = fastlm.linear_cross_entropy_with_grad(h, W, t, bias=b, chunk_size=chunk, **opts)
        loss = fastlm.linear_cross_entropy(h, W, t, bias=b, chunk_size=chunk, **opts)
    except (ValueError, TypeError):
        assert not valid
        return
    assert valid
    with np.errstate(all="ignore"):
        want = ref.linear_cross_entropy_with_grad(h, W, t, bias=b, **opts)
    rtol = 1e-4 if h.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(loss, want[0], rtol=rtol, atol=rtol)
    for g, w in zip(got[1:], want[1:]):
        if w is None:
            assert g is None
            continue
        scale = np.nanmax(np.abs(w)) if np.isfinite(w).any() else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)
