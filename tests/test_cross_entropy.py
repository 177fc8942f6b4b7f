"""cross_entropy, cross_entropy_with_grad and token_logprobs against fastlm.reference (and torch)."""

import numpy as np
import pytest
from conftest import SIZES, close, logits_like
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastlm
from fastlm import reference as ref

DTYPES = [np.float32, np.float64]
OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"softcap": 5.0},
    {"temperature": 0.7},
    {"weight": "random"},
    {"weight": "random", "label_smoothing": 0.2, "z_loss": 1e-2, "softcap": 3.0, "temperature": 1.3},
]


def materialize(opts, V, rng):
    opts = dict(opts)
    if opts.get("weight") == "random":
        opts["weight"] = rng.uniform(0.1, 2.0, V)
    return opts


def targets_for(rng, shape, V, ignore_frac=0.2, ignore_index=-100):
    t = rng.integers(0, V, shape)
    t[rng.random(shape) < ignore_frac] = ignore_index
    return t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", SIZES)
def test_loss_and_grad_match_reference(simd, rng, dtype, V):
    shape = (2, 3)
    x = logits_like(rng, shape + (V,), dtype)
    t = targets_for(rng, shape, V)
    for opts in OPTIONS:
        kw = materialize(opts, V, rng)
        for reduction in ("mean", "sum", "none"):
            want, gwant = ref.cross_entropy_with_grad(x, t, reduction=reduction, **kw)
            got = fastlm.cross_entropy(x, t, reduction=reduction, **kw)
            close(got, want, dtype, scale=10)
            got2, g = fastlm.cross_entropy_with_grad(x, t, reduction=reduction, **kw)
            close(got2, want, dtype, scale=10)
            close(g, gwant, dtype)
            assert g.dtype == dtype and g.shape == x.shape
            if reduction == "none":
                assert got.dtype == dtype and got.shape == t.shape
            else:
                assert isinstance(got, float)


@pytest.mark.parametrize("dtype", DTYPES)
def test_token_logprobs(simd, rng, dtype):
    for V in (1, 33, 2049):
        x = logits_like(rng, (4, 5, V), dtype)
        t = targets_for(rng, (4, 5), V, ignore_index=-1)
        for T in (1.0, 0.5):
            lp = fastlm.token_logprobs(x, t, ignore_index=-1, temperature=T)
            close(lp, ref.token_logprobs(x, t, ignore_index=-1, temperature=T), dtype, scale=10)
            assert lp.dtype == dtype
            assert (lp[t == -1] == 0).all()


@pytest.mark.parametrize("opts", OPTIONS)
def test_finite_difference_gradient(simd, rng, opts):
    """Central differences of the float64 loss against the kernel's gradient, for every option."""
    V, shape = 7, (3, 2)
    x = logits_like(rng, shape + (V,), np.float64, scale=2.0)
    t = targets_for(rng, shape, V, ignore_frac=0.2)
    t[0, 0] = 3
    kw = materialize(opts, V, rng)
    for reduction in ("mean", "sum", "none"):
        def f(z):
            v = fastlm.cross_entropy(z, t, reduction=reduction, **kw)
            return float(np.sum(v))
        _, g = fastlm.cross_entropy_with_grad(x, t, reduction=reduction, **kw)
        h = 1e-6
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h
            xm[idx] -= h
            num[idx] = (f(xp) - f(xm)) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES + [np.float16])
def test_grad_out_in_place_and_preallocated(simd, rng, dtype):
    x = logits_like(rng, (6, 1000), dtype)
    t = targets_for(rng, (6,), 1000)
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    buf = x.copy()
    loss, g = fastlm.cross_entropy_with_grad(buf, t, label_smoothing=0.1, grad_out=buf)
    assert g is buf
    close(loss, want_loss, dtype, scale=10)
    close(buf, want_grad, dtype)
    pre = np.full_like(x, np.nan)
    loss, g = fastlm.cross_entropy_with_grad(x, t, label_smoothing=0.1, grad_out=pre)
    assert g is pre
    close(pre, want_grad, dtype)
    strided = np.zeros((6, 2000), dtype)
    fastlm.cross_entropy_with_grad(x, t, label_smoothing=0.1, grad_out=strided[:, ::2])
    close(strided[:, ::2], want_grad, dtype)
    assert (strided[:, 1::2] == 0).all()


def test_layouts(simd, rng):
    base = logits_like(rng, (5, 8, 130), np.float32)
    tb = rng.integers(0, 65, (5, 8))
    for x, t in [(base[::2, 1:, :], tb[::2, 1:]), (base[:, :, ::2], tb), (base.transpose(1, 0, 2), tb.T)]:
        close(fastlm.cross_entropy(x, t), ref.cross_entropy(x, t), np.float32, 10)
        _, g = fastlm.cross_entropy_with_grad(x, t, reduction="sum")
        close(g, ref.cross_entropy_with_grad(x, t, reduction="sum")[1], np.float32)
    ro = base.copy()
    ro.flags.writeable = False
    close(fastlm.cross_entropy(ro, tb % 130), ref.cross_entropy(ro, tb % 130), np.float32, 10)
    for tdtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64):
        t = (tb % 100).astype(tdtype)
        close(fastlm.cross_entropy(base, t), ref.cross_entropy(base, t), np.float32, 10)
    close(fastlm.cross_entropy(base.tolist(), tb.tolist()), ref.cross_entropy(base, tb), np.float32, 10)


def test_ignore_index_semantics(simd, rng):
    x = logits_like(rng, (4, 10), np.float64)
    t = np.full(4, -100)
    assert np.isnan(fastlm.cross_entropy(x, t))
    assert fastlm.cross_entropy(x, t, reduction="sum") == 0.0
    loss, g = fastlm.cross_entropy_with_grad(x, t)
    assert np.isnan(loss) and (g == 0).all()
    assert np.isnan(fastlm.cross_entropy(np.zeros((0, 5)), np.zeros(0, np.int64)))
    assert fastlm.cross_entropy(np.zeros((0, 5)), np.zeros(0, np.int64), reduction="sum") == 0.0
    t = np.array([1, 7, 7, 2])
    np.testing.assert_allclose(fastlm.cross_entropy(x, t, ignore_index=7, reduction="none")[1:3], 0.0)
    close(fastlm.cross_entropy(x, t, ignore_index=7), ref.cross_entropy(x, t, ignore_index=7), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(simd, dtype):
    inf, nan = np.inf, np.nan
    x = np.array([[0.0, -inf, 1.0, 2.0],
                  [0.0, nan, 1.0, 2.0],
                  [0.0, -inf, 1.0, 2.0],
                  [inf, 0.0, 1.0, 2.0],
                  [-inf, -inf, -inf, -inf]], dtype)
    t = np.array([0, 0, 1, 2, 0])
    per = fastlm.cross_entropy(x, t, reduction="none")
    close(per[0], ref.cross_entropy(x, t, reduction="none")[0], dtype)
    assert np.isnan(per[1])          # NaN in the row: never dropped
    assert per[2] == inf             # target logit -inf
    assert np.isnan(per[3])          # +inf in the row, as torch
    assert np.isnan(per[4])          # all -inf, as torch
    assert np.isnan(fastlm.cross_entropy(x, t))
    _, g = fastlm.cross_entropy_with_grad(x, t, reduction="none")
    assert np.isnan(g[1]).all() and np.isnan(g[4]).all()
    assert g[0, 1] == 0              # zero probability, zero gradient
    close(g[0], ref.cross_entropy_with_grad(x, t, reduction="none")[1][0], dtype)


def test_threads_are_deterministic(rng):
    x = logits_like(rng, (257, 1500), np.float32)
    t = targets_for(rng, (257,), 1500)
    kw = {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 20.0}
    l1, g1 = fastlm.cross_entropy_with_grad(x, t, num_threads=1, **kw)
    for n in (2, 3, 7):
        ln, gn = fastlm.cross_entropy_with_grad(x, t, num_threads=n, **kw)
        assert ln == l1
        np.testing.assert_array_equal(gn, g1)
        assert fastlm.cross_entropy(x, t, num_threads=n, **kw) == fastlm.cross_entropy(x, t, num_threads=1, **kw)
    fastlm.set_num_threads(3)
    try:
        assert fastlm.get_num_threads() == 3
        assert fastlm.cross_entropy(x, t, **kw) == fastlm.cross_entropy(x, t, num_threads=1, **kw)
    finally:
        fastlm.set_num_threads(2)


def test_bad_input_raises_before_writing(rng):
    x = logits_like(rng, (2, 3, 5), np.float32)
    t = np.array([[0, 1, 2], [3, 5, 4]])
    sentinel = np.full_like(x, 9.0)
    with pytest.raises(ValueError, match=r"targets\[1, 1\] = 5 is not a class index in \[0, 5\)"):
        fastlm.cross_entropy_with_grad(x, t, grad_out=sentinel)
    np.testing.assert_array_equal(sentinel, 9.0)
    inplace = x.copy()
    with pytest.raises(ValueError, match=r"targets\[0, 2\] = -3"):
        fastlm.cross_entropy_with_grad(inplace, np.array([[0, 1, -3], [0, 0, 0]]), grad_out=inplace)
    np.testing.assert_array_equal(inplace, x)
    with pytest.raises(ValueError, match=r"targets\[1\] = 9"):
        fastlm.token_logprobs(x[0], np.array([0, 9, 1]))
    with pytest.raises(ValueError, match=r"targets has shape \(2, 2\).*\(2, 3, 5\).*\(2, 3\)"):
        fastlm.cross_entropy(x, np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="logits must be a float"):
        fastlm.cross_entropy(np.zeros((2, 5), np.int32), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="targets must be an integer"):
        fastlm.cross_entropy(x, t.astype(np.float32))
    with pytest.raises(TypeError, match="targets must be an integer"):
        fastlm.cross_entropy(x, t > 0)
    with pytest.raises(ValueError, match="does not fit in int64"):
        fastlm.cross_entropy(x[0], np.array([0, 1, 2**64 - 100], np.uint64))
    bad_options = [
        ({"label_smoothing": -0.1}, "label_smoothing"), ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"label_smoothing": np.nan}, "label_smoothing"), ({"temperature": 0.0}, "temperature"),
        ({"temperature": -2}, "temperature"), ({"softcap": 0.0}, "softcap"), ({"softcap": -1.0}, "softcap"),
        ({"reduction": "avg"}, "reduction"), ({"weight": np.ones(4)}, r"weight has shape \(4,\)"),
        ({"z_loss": -1.0}, "z_loss"), ({"num_threads": 0}, "num_threads"),
    ]
    for kw, msg in bad_options:
        with pytest.raises(ValueError, match=msg):
            fastlm.cross_entropy_with_grad(x, t % 5, grad_out=sentinel, **kw)
        np.testing.assert_array_equal(sentinel, 9.0)
    with pytest.raises(TypeError, match="ignore_index"):
        fastlm.cross_entropy(x, t % 5, ignore_index=1.5)
    with pytest.raises(TypeError, match="grad_out has dtype float64"):
        fastlm.cross_entropy_with_grad(x, t % 5, grad_out=np.zeros(x.shape))
    with pytest.raises(ValueError, match="grad_out has shape"):
        fastlm.cross_entropy_with_grad(x, t % 5, grad_out=np.zeros((2, 3, 4), np.float32))
    ro = np.zeros_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out is read-only"):
        fastlm.cross_entropy_with_grad(x, t % 5, grad_out=ro)
    with pytest.raises(ValueError, match="at least one dimension"):
        fastlm.cross_entropy(np.float32(1), 0)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=st.floats(-50, 50)),
       st.floats(-100, 100), st.floats(0, 1), st.data())
def test_properties(x, c, e, data):
    N, V = x.shape
    t = data.draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, V - 1)))
    w = data.draw(hnp.arrays(np.float64, (V,), elements=st.floats(0.1, 3)))
    loss, g = fastlm.cross_entropy_with_grad(x, t, label_smoothing=e, weight=w, reduction="sum")
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-9 * max(1.0, float(w.sum())))   # rows sum to 0
    np.testing.assert_allclose(fastlm.cross_entropy(x + c, t, label_smoothing=e, weight=w, reduction="sum"), loss,
                               rtol=1e-9, atol=1e-9)                                       # shift invariance
    assert loss >= -1e-9


def test_more_than_2_31_elements():
    """64-bit indexing: the last row starts past element 2^31. The zero pages are never written."""
    V = 2**30 + 8
    x = np.zeros((3, V), np.float32)
    x[2, V - 1] = 5.0
    t = np.array([0, -100, V - 1])
    per = fastlm.cross_entropy(x, t, reduction="none")
    lse2 = np.log((V - 1) + np.exp(5.0))
    np.testing.assert_allclose(per, [np.log(V), 0.0, lse2 - 5.0], rtol=1e-6)
    np.testing.assert_allclose(fastlm.logsumexp(x[1:]), [np.log(V), lse2], rtol=1e-6)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    V = 503
    x = logits_like(rng, (4, 6, V), np.float64)
    t = targets_for(rng, (4, 6), V)
    w = rng.uniform(0.2, 2.0, V)
    for kw in [{}, {"label_smoothing": 0.15}, {"weight": w}, {"weight": w, "label_smoothing": 0.3}]:
        for reduction in ("mean", "sum", "none"):
            xt = torch.tensor(x, requires_grad=True)
            tkw = {k: (torch.tensor(v) if k == "weight" else v) for k, v in kw.items()}
            lt = F.cross_entropy(xt.reshape(-1, V), torch.tensor(t).reshape(-1), reduction=reduction, **tkw)
            lt.sum().backward()
            loss, g = fastlm.cross_entropy_with_grad(x, t, reduction=reduction, **kw)
            np.testing.assert_allclose(np.ravel(loss), lt.detach().numpy().ravel(), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    # z_loss, softcap and temperature composed in torch
    cap, T, zl = 4.0, 0.8, 1e-3
    xt = torch.tensor(x, requires_grad=True)
    z = (cap * torch.tanh(xt / cap) / T).reshape(-1, V)
    tt = torch.tensor(t).reshape(-1)
    keep = tt != -100
    lt = F.cross_entropy(z, tt) + zl * (torch.logsumexp(z, -1)[keep] ** 2).sum() / keep.sum()
    lt.backward()
    loss, g = fastlm.cross_entropy_with_grad(x, t, softcap=cap, temperature=T, z_loss=zl)
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-14)
    # float32 end to end
    x32 = x.astype(np.float32)
    xt = torch.tensor(x32, requires_grad=True)
    lt = F.cross_entropy(xt.reshape(-1, V), torch.tensor(t).reshape(-1))
    lt.backward()
    loss, g = fastlm.cross_entropy_with_grad(x32, t)
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-5)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-4, atol=1e-8)
    lp = torch.log_softmax(torch.tensor(x), -1).gather(-1, torch.tensor(np.where(t < 0, 0, t))[..., None])[..., 0]
    np.testing.assert_allclose(fastlm.token_logprobs(x, t), np.where(t < 0, 0, lp.numpy()), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_whose_max_keeps_rising(simd, rng, dtype):
    """The read pass leaves exponentials relative to the max seen so far; rows whose max rises block
    after block (slowly: many small rescales; fast: jumps too large for one pass) check that bookkeeping,
    in place and not, for the gradient and for softmax."""
    V = 40000
    rows = np.stack([
        np.linspace(0, 60, V),                       # ~20 small rises
        np.linspace(-400, 400, V),                   # rises of ~40 per block: rebases
        np.where(np.arange(V) % 2048 == 5, np.arange(V) / 2048 * 70.0, -5.0),  # a jump > 64 in every block
        rng.standard_normal(V) * 3 + np.linspace(0, 30, V),
    ]).astype(dtype)
    rows[3, 100] = -np.inf
    t = np.array([V - 1, 17, 2048 * 19 + 5, 100 + 1])
    kw = {"weight": rng.uniform(0.5, 1.5, V), "label_smoothing": 0.05}
    want_loss, want_grad = ref.cross_entropy_with_grad(rows, t, reduction="none", **kw)
    loss, g = fastlm.cross_entropy_with_grad(rows, t, reduction="none", **kw)
    close(loss, want_loss, dtype, scale=100)
    close(g, want_grad, dtype)
    buf = rows.copy()
    loss, _ = fastlm.cross_entropy_with_grad(buf, t, reduction="none", grad_out=buf, **kw)
    close(buf, want_grad, dtype)
    close(loss, want_loss, dtype, scale=100)
    buf = rows.copy()
    fastlm.softmax(buf, out=buf)
    close(buf, ref.softmax(rows), dtype)
    close(fastlm.softmax(rows, temperature=0.5), ref.softmax(rows, temperature=0.5), dtype)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_shapes_and_options_match_reference(data):
    """Random leading dims, vocabulary, dtype and options against the reference."""
    lead = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), label="lead")
    V = data.draw(st.integers(1, 300), label="V")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    x = data.draw(hnp.arrays(dtype, lead + (V,), elements=st.floats(-30, 30, width=32)), label="x")
    t = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(-1, V - 1)), label="t")
    kw = {
        "ignore_index": -1,
        "reduction": data.draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": data.draw(st.sampled_from([0.0, 0.3])),
        "z_loss": data.draw(st.sampled_from([0.0, 1e-2])),
        "softcap": data.draw(st.sampled_from([None, 10.0])),
        "temperature": data.draw(st.sampled_from([1.0, 0.6])),
    }
    if data.draw(st.booleans(), label="weighted"):
        kw["weight"] = data.draw(hnp.arrays(np.float64, (V,), elements=st.floats(0.1, 2)))
    want, gwant = ref.cross_entropy_with_grad(x, t, **kw)
    got, g = fastlm.cross_entropy_with_grad(x, t, **kw)
    close(got, want, dtype, scale=10)
    close(g, gwant, dtype)


def test_mean_over_zero_weight_is_nan(simd):
    x = np.float32([[1, 2]])
    assert np.isnan(fastlm.cross_entropy(x, [0], weight=[0.0, 1.0], label_smoothing=0.1))
    assert np.isnan(ref.cross_entropy(x, [0], weight=[0.0, 1.0], label_smoothing=0.1))
    assert np.isnan(fastlm.cross_entropy(np.float32([[0, 1], [0, 1]]), [0, 1], weight=[1.0, -1.0]))


@pytest.mark.parametrize("offset", [1e3, 1e4, 3e4])
def test_smoothing_with_large_logits_and_weights(simd, rng, offset):
    x = (rng.standard_normal((3, 4096)) + offset).astype(np.float32)
    w = np.full(4096, 0.1)
    t = np.array([0, 5, 4095])
    for kw in ({"weight": w, "label_smoothing": 1.0}, {"weight": w, "label_smoothing": 0.3, "temperature": 0.7}):
        close(fastlm.cross_entropy(x, t, reduction="none", **kw), ref.cross_entropy(x, t, reduction="none", **kw),
              np.float32, 10)
    close(fastlm.token_logprobs(x, t, temperature=0.5), ref.token_logprobs(x, t, temperature=0.5), np.float32, 10)
