"""Evaluation metrics and calibration against fastlm.reference (and scipy / torchmetrics where installed)."""

import math

import numpy as np
import pytest
from conftest import SIZES, close, logits_like

import fastlm
from fastlm import calibration as cal
from fastlm import reference as ref

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", SIZES)
def test_entropy_and_kl_match_reference(simd, rng, dtype, V):
    x = logits_like(rng, (3, V), dtype)
    y = logits_like(rng, (3, V), dtype)
    close(fastlm.entropy(x), ref.entropy(x), dtype, scale=10)
    close(fastlm.kl_divergence(x, y), ref.kl_divergence(x, y), dtype, scale=10)
    close(fastlm.entropy(x, base=2), ref.entropy(x, base=2), dtype, scale=10)
    assert fastlm.entropy(x).dtype == dtype


def test_entropy_kl_special_values_axis_and_layouts(simd, rng):
    inf = np.inf
    x = np.array([[0.0, -inf, 1.0, -inf], [2.0, 2.0, 2.0, 2.0], [0.0, np.nan, 1.0, 2.0], [-inf] * 4])
    h = fastlm.entropy(x)
    close(h[:2], ref.entropy(x)[:2], np.float64)
    assert h[1] == pytest.approx(math.log(4))
    assert np.isnan(h[2]) and np.isnan(h[3])
    q = np.array([[0.0, 0.0, -inf, 0.0], [1.0, 0.0, 0.0, -inf]])
    p = np.array([[0.0, -inf, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    kl = fastlm.kl_divergence(p, q)
    assert kl[0] == inf and kl[1] == inf  # q = 0 < p
    assert fastlm.kl_divergence(x[:1], x[:1])[0] == 0.0  # p = 0 entries: no NaN
    assert (fastlm.kl_divergence(logits_like(rng, (50, 7), np.float32), logits_like(rng, (50, 7), np.float32)) >= 0).all()
    z = logits_like(rng, (3, 40, 5), np.float32)
    for axis in (0, 1, -1):
        close(fastlm.entropy(z, axis=axis), ref.entropy(z, axis=axis), np.float32, 10)
        close(fastlm.kl_divergence(z, z[::-1], axis=axis), ref.kl_divergence(z, z[::-1], axis=axis), np.float32, 10)
    with pytest.raises(ValueError, match="shape"):
        fastlm.kl_divergence(z, z[:2])
    with pytest.raises(ValueError, match="base"):
        fastlm.entropy(z, base=1)
    with pytest.raises(ValueError, match="empty axis"):
        fastlm.entropy(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="empty axis"):
        fastlm.kl_divergence(np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(TypeError):
        fastlm.entropy(np.zeros((2, 3), np.int32))


def test_against_scipy(rng):
    special = pytest.importorskip("scipy.special")
    stats = pytest.importorskip("scipy.stats")
    x = logits_like(rng, (20, 300), np.float64)
    y = logits_like(rng, (20, 300), np.float64)
    p, q = special.softmax(x, axis=-1), special.softmax(y, axis=-1)
    np.testing.assert_allclose(fastlm.entropy(x), stats.entropy(p, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(fastlm.entropy(x, base=2), stats.entropy(p, axis=-1, base=2), rtol=1e-12)
    np.testing.assert_allclose(fastlm.kl_divergence(x, y), special.rel_entr(p, q).sum(-1), rtol=1e-10)


def test_perplexity_family(simd, rng):
    x = logits_like(rng, (4, 9, 50), np.float32)
    t = rng.integers(0, 50, (4, 9))
    t[0, :3] = -100
    assert fastlm.perplexity(x, t) == pytest.approx(ref.perplexity(x, t), rel=1e-5)
    assert fastlm.bits_per_token(x, t) == pytest.approx(ref.bits_per_token(x, t), rel=1e-5)
    assert math.isnan(fastlm.perplexity(x, np.full((4, 9), -100)))
    text = "naïve café — 東京"  # multi-byte UTF-8: 14 characters, more bytes
    nbytes = len(text.encode("utf-8"))
    assert nbytes > len(text)
    lps = np.array([-12.5, -30.0])
    assert fastlm.bits_per_byte(lps, [nbytes, nbytes]) == pytest.approx(ref.bits_per_byte(lps, [nbytes, nbytes]))
    assert fastlm.bits_per_byte(-42.0, nbytes) == pytest.approx(42.0 / (nbytes * math.log(2)))
    assert fastlm.byte_perplexity(lps, [nbytes] * 2) == pytest.approx(ref.byte_perplexity(lps, [nbytes] * 2))
    assert fastlm.word_perplexity(lps, [3, 4]) == pytest.approx(ref.word_perplexity(lps, [3, 4]))
    with pytest.raises(ValueError, match="n_bytes"):
        fastlm.bits_per_byte(-1.0, 0)
    # a mean NLL past e^709 gives +inf (as NumPy's exp), not OverflowError
    huge = np.float32([1e30, 1.0, 0.0])
    assert fastlm.perplexity(huge, 2) == ref.perplexity(huge, 2) == math.inf
    assert fastlm.byte_perplexity(-1e6, 10) == ref.byte_perplexity(-1e6, 10) == math.inf
    assert fastlm.word_perplexity(-1e6, 10) == ref.word_perplexity(-1e6, 10) == math.inf


@pytest.mark.parametrize("normalize", [None, "tokens", "chars", "bytes"])
def test_sequence_logprob(simd, rng, normalize):
    B, T, V = 5, 12, 30
    x = logits_like(rng, (B, T, V), np.float64)
    t = rng.integers(0, V, (B, T))
    t[1, -2:] = -100
    mask = rng.random((B, T)) > 0.2
    prompt = rng.integers(0, 6, B)
    lengths = rng.integers(5, 40, B)
    want, want_g = ref.sequence_logprob(x, t, mask=mask, prompt_lengths=prompt, normalize=normalize,
                                        lengths=lengths, return_is_greedy=True)
    got, got_g = fastlm.sequence_logprob(x, t, mask=mask, prompt_lengths=prompt, normalize=normalize,
                                         lengths=lengths, return_is_greedy=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(got_g, want_g)
    # a greedy answer is recognized
    g = np.argmax(x, axis=-1)
    assert fastlm.sequence_logprob(x, g, return_is_greedy=True)[1].all()


def test_left_and_right_padding_agree(simd, rng):
    V, P = 20, 3
    answers = [rng.integers(0, V, n) for n in (2, 5, 4)]
    prompts = [rng.integers(0, V, n) for n in (3, 1, 2)]
    T = max(len(a) + len(p) for a, p in zip(answers, prompts)) + 2
    rows = [np.concatenate([p, a]) for p, a in zip(prompts, answers)]
    step = rng.standard_normal((V, V))  # logits depend only on the token itself: padding cannot leak

    def batch(left):
        toks = np.full((3, T), P, np.int64)
        mask = np.zeros((3, T), bool)
        plen = []
        for b, r in enumerate(rows):
            off = T - len(r) if left else 0
            toks[b, off:off + len(r)] = r
            mask[b, off:off + len(r)] = True
            plen.append(off + len(prompts[b]))
        return step[toks], toks, mask, np.array(plen)

    xl, tl, ml, pl = batch(True)
    xr, tr, mr, pr = batch(False)
    left = fastlm.sequence_logprob(xl, tl, mask=ml, prompt_lengths=pl, normalize="tokens")
    right = fastlm.sequence_logprob(xr, tr, mask=mr, prompt_lengths=pr, normalize="tokens")
    np.testing.assert_allclose(left, right, rtol=1e-12)


def test_choose(rng):
    ll = rng.standard_normal((40, 4))
    ll[0] = [1.0, 3.0, 3.0, 0.0]  # ties: first index
    lengths = rng.integers(1, 30, (40, 4))
    np.testing.assert_array_equal(fastlm.choose(ll), ref.choose(ll))
    assert fastlm.choose(ll)[0] == 1
    for norm in ("chars", "bytes"):
        np.testing.assert_array_equal(fastlm.choose(ll, lengths=lengths, normalize=norm),
                                      ref.choose(ll, lengths=lengths, normalize=norm))
    assert fastlm.choose([0.5, -1.0, 2.0]) == 2
    with pytest.raises(ValueError, match="lengths"):
        fastlm.choose(ll, normalize="chars")
    with pytest.raises(ValueError, match="NaN"):
        fastlm.choose([np.nan, 1.0])


@pytest.mark.parametrize("max_length, stride", [(1, None), (1, 1), (4, None), (4, 1), (4, 3), (16, None),
                                               (16, 1), (16, 3), (16, 16)])
def test_rolling_windows_score_every_token_once(max_length, stride):
    """Every token scored once (the first only after a prefix token), each window's input at most
    max_length tokens, and a causal model's logits of the window, taken as returned, predict exactly the
    returned targets: a toy model whose logit j is one-hot on (its input token j) + 1 gets them all."""
    for n in (0, 1, 2, max_length - 1, max_length, 3 * max_length + 1, 50):
        if n < 0:
            continue
        for prefix in (False, True):
            w = fastlm.rolling_windows(n, max_length, stride=stride, prefix_token=prefix)
            np.testing.assert_array_equal(w, ref.rolling_windows(n, max_length, stride=stride, prefix_token=prefix))
            text = np.arange(n) + 1  # token ids; the prefix is 0, and each token is the one before plus 1
            scored = np.zeros(n, int)
            for i0, i1, l0, l1, t0, t1 in w:
                assert -int(prefix) <= i0 < i1 <= n and i1 - i0 <= max_length and l1 - l0 == t1 - t0
                inputs = np.concatenate([[0], text])[i0 + 1:i1 + 1] if prefix else text[i0:i1]
                logits = np.eye(n + 2)[inputs + 1]  # the toy model: next token = this one + 1
                np.testing.assert_array_equal(logits[l0:l1].argmax(1), text[t0:t1])
                scored[t0:t1] += 1
            assert (scored == 1).all() if prefix else (scored[1:] == 1).all() and scored[:1].sum() == 0
    with pytest.raises(ValueError, match="stride"):
        fastlm.rolling_windows(10, 4, stride=5)
    with pytest.raises(ValueError, match="max_length"):
        fastlm.rolling_windows(10, 0)
    with pytest.raises(TypeError, match="n_tokens"):
        fastlm.rolling_windows(2.5, 4)


TORCHMETRICS_VECTORS = {"l1": 0.2900, "l2": 0.2918, "max": 0.3167}


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_torchmetrics_docstring_vectors(norm):
    p, t = [0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1]
    got = cal.expected_calibration_error(p, t, n_bins=2, norm=norm, closed="left")
    assert got == pytest.approx(TORCHMETRICS_VECTORS[norm], abs=1e-4)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("closed", ["right", "left"])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_and_bins_match_reference(rng, strategy, closed, norm):
    c = np.round(rng.random(500), 2)  # ties and values on bin edges
    c[:5] = [0.0, 1.0, 0.5, 0.2, 0.4]
    k = rng.random(500) < c
    for n_bins in (1, 5, 10, 15):
        assert cal.expected_calibration_error(c, k, n_bins=n_bins, strategy=strategy, norm=norm, closed=closed) == \
            pytest.approx(ref.expected_calibration_error(c, k, n_bins=n_bins, strategy=strategy, norm=norm,
                                                         closed=closed), rel=1e-12)
        got = cal.reliability_bins(c, k, n_bins=n_bins, strategy=strategy, closed=closed)
        want = ref.reliability_bins(c, k, n_bins=n_bins, strategy=strategy, closed=closed)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
    b = cal.reliability_bins([0.05, 0.95], [1, 0], n_bins=4)
    assert b["count"].tolist() == [1, 0, 0, 1] and np.isnan(b["confidence"][1])


def test_calibration_bad_input():
    with pytest.raises(ValueError, match=r"confidences\[1\] = 1.5"):
        cal.expected_calibration_error([0.5, 1.5], [1, 0])
    with pytest.raises(ValueError, match="entries"):
        cal.expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError, match="n_bins"):
        cal.expected_calibration_error([0.5], [1], n_bins=0)
    for kw, msg in (({"strategy": "kmeans"}, "strategy"), ({"norm": "l3"}, "norm"), ({"closed": "both"}, "closed")):
        with pytest.raises(ValueError, match=msg):
            cal.expected_calibration_error([0.5], [1], **kw)
    with pytest.raises(ValueError, match="empty"):
        cal.expected_calibration_error([], [])
    with pytest.raises(ValueError, match="labels"):
        cal.calibration_from_logits(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="bounds"):
        cal.fit_temperature(np.zeros((2, 3)), [0, 1], bounds=(2.0, 1.0))


def test_against_torchmetrics(rng):
    F = pytest.importorskip("torchmetrics.functional.classification")
    torch = pytest.importorskip("torch")
    logits = logits_like(rng, (400, 6), np.float32, 2.0)
    labels = rng.integers(0, 6, 400)
    conf, correct = cal.calibration_from_logits(logits, labels)
    for norm in ("l1", "l2", "max"):
        want = F.multiclass_calibration_error(torch.softmax(torch.from_numpy(logits), -1), torch.from_numpy(labels),
                                              num_classes=6, n_bins=10, norm=norm)
        got = cal.expected_calibration_error(conf, correct, n_bins=10, norm=norm, closed="left")
        assert got == pytest.approx(float(want), abs=1e-5)


def test_calibration_from_logits(simd, rng):
    x = logits_like(rng, (7, 3, 40), np.float32)
    y = rng.integers(0, 40, (7, 3))
    conf, correct = cal.calibration_from_logits(x, y)
    rc, rk = ref.calibration_from_logits(x, y)
    np.testing.assert_allclose(conf, rc, rtol=2e-5)
    np.testing.assert_array_equal(correct, rk)


def synthetic(rng, n, V, sharpen):
    """Labels drawn from softmax(z); the logits returned are sharpen * z (sharpen > 1: overconfident)."""
    z = rng.standard_normal((n, V)) * 2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    u = rng.random((n, 1))
    y = np.minimum((p.cumsum(1) < u).sum(1), V - 1)
    return (z * sharpen), y


def test_fit_temperature(simd, rng):
    z, y = synthetic(rng, 4000, 8, 1.0)
    T = cal.fit_temperature(z, y)
    assert T == pytest.approx(ref.fit_temperature(z, y), rel=1e-4)
    assert 0.9 < T < 1.1  # calibrated data
    zs = z * 2.5
    T2 = cal.fit_temperature(zs.astype(np.float32), y)
    assert T2 == pytest.approx(ref.fit_temperature(zs, y), rel=1e-4)
    assert T2 > 2.0  # overconfident data
    grid = np.exp(np.linspace(np.log(T2) - 0.01, np.log(T2) + 0.01, 201))
    nll = [ref.mean_nll_at_temperature(zs, y, t) for t in grid]
    assert abs(grid[int(np.argmin(nll))] / T2 - 1) < 1e-4 + 1e-4  # the grid's best is within a grid step
    assert cal.fit_temperature(zs, y, bounds=(0.5, 1.5)) == pytest.approx(1.5)  # the bound binds


def test_plot_reliability_diagram(rng):
    """Bars at the bins' real edges (quantile bins too) with the accuracies, gap bars to the mean
    confidences, empty bins marked, a counts panel, and n / ECE / bins / strategy in the title."""
    pytest.importorskip("matplotlib")
    c = np.concatenate([rng.random(300) * 0.3, 0.7 + rng.random(200) * 0.3])  # nothing in (0.3, 0.7)
    k = rng.random(500) < c
    for strategy in ("uniform", "quantile"):
        b = cal.reliability_bins(c, k, n_bins=10, strategy=strategy)
        fig = cal.plot_reliability_diagram(c, k, n_bins=10, strategy=strategy)
        ax, counts = fig.axes
        title = ax.get_title()
        ece = cal.expected_calibration_error(c, k, n_bins=10, strategy=strategy)
        assert f"ECE {ece:.4f}" in title and "n = 500" in title and f"10 {strategy} bins" in title
        live = b["count"] > 0
        bars = ax.patches[:int(live.sum())]
        np.testing.assert_allclose([p.get_x() for p in bars], b["lower"][live])
        np.testing.assert_allclose([p.get_width() for p in bars], (b["upper"] - b["lower"])[live])
        np.testing.assert_allclose([p.get_height() for p in bars], b["accuracy"][live])
        gaps = ax.patches[int(live.sum()):2 * int(live.sum())]
        np.testing.assert_allclose([p.get_height() for p in gaps], (b["confidence"] - b["accuracy"])[live])
        np.testing.assert_allclose([p.get_height() for p in counts.patches], b["count"])
        marked = [ln for ln in ax.get_lines() if ln.get_label() == "empty bin"]
        assert (len(marked) == 1) == (not live.all())
        if marked:
            np.testing.assert_allclose(marked[0].get_xdata(), ((b["lower"] + b["upper"]) / 2)[~live])
    assert not cal.reliability_bins(c, k, n_bins=10)["count"][3:7].any()  # (the uniform bins have empties)


@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_rows_whose_max_rises_across_blocks(simd, rng, dtype):
    x = logits_like(rng, (6, 9000), dtype, scale=1.0)
    x[1, 5000] = 30.0      # a small rise in a later block
    x[2, 8999] = 500.0     # a jump larger than one pass allows
    x[3, :2048] = -1e4     # a first block far below the rest
    x[4] = np.linspace(-300, 300, 9000)
    x[5, ::3] = -np.inf
    close(fastlm.entropy(x), ref.entropy(x), dtype, scale=100)
    y = x[::-1].copy()
    close(fastlm.kl_divergence(x, y), ref.kl_divergence(x, y), dtype, scale=1000)


def test_sequence_logprob_bad_input(rng):
    x = logits_like(rng, (2, 4, 6), np.float64)
    t = rng.integers(0, 6, (2, 4))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        fastlm.sequence_logprob(x[0], t)
    with pytest.raises(ValueError, match="mask has shape"):
        fastlm.sequence_logprob(x, t, mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="prompt_lengths"):
        fastlm.sequence_logprob(x, t, prompt_lengths=[0, 5])
    with pytest.raises(ValueError, match="needs lengths"):
        fastlm.sequence_logprob(x, t, normalize="chars")
    with pytest.raises(ValueError, match="lengths must be > 0"):
        fastlm.sequence_logprob(x, t, normalize="bytes", lengths=[3, 0])
    with pytest.raises(ValueError, match="normalize"):
        fastlm.sequence_logprob(x, t, normalize="words")
    with pytest.raises(ValueError, match=r"targets\[0, 2\] = 6"):
        fastlm.sequence_logprob(x, np.where(np.arange(4) == 2, 6, t))


def test_fit_temperature_options_checked(rng):
    x = rng.standard_normal((20, 5)).astype(np.float32)
    y = rng.integers(0, 5, 20)
    for kw, err in (({"tol": float("nan")}, ValueError), ({"tol": -1.0}, ValueError),
                    ({"max_passes": 0}, ValueError), ({"max_passes": 1.5}, TypeError)):
        with pytest.raises(err, match=next(iter(kw))):
            fastlm.calibration.fit_temperature(x, y, **kw)
    # the row maxima skip NaN, so a NaN logit below a row's max is caught by the statistics pass
    x[3, 2] = np.nan
    x[3, 0] = 9.0
    with pytest.raises(ValueError, match=r"logits\[3\] contains NaN"):
        fastlm.calibration.fit_temperature(x, y)
    # the NLL keeps falling up to a bound: that bound itself, not a point a bisection stopped near
    edge = np.float16([[0.0, 24.66]])
    assert fastlm.calibration.fit_temperature(edge, [0]) == 20.0
    assert fastlm.calibration.fit_temperature(edge, [0], bounds=(0.1, 3.0)) == 3.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_causal_helpers_match_a_hand_written_torch_computation(simd, side):
    """causal_targets and score_continuations against torch, position by position, for left and right
    padding: the continuation's tokens j >= context_length of each unpadded request, each scored by the
    logits at the position of token j - 1."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    V, T = 11, 9
    reqs = [(list(range(1, 8)), 3), ([4, 2], 1), ([5, 5, 5, 1, 2, 3, 4, 6, 7], 8), ([9, 3, 3], 2)]
    B = len(reqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (toks, _) in enumerate(reqs):
        at = T - len(toks) if side == "left" else 0
        ids[b, at:at + len(toks)] = torch.tensor(toks)
        mask[b, at:at + len(toks)] = 1
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    logits[0, 2, 5] = 50.0  # (a greedy continuation for row 0 somewhere)
    want_lp, want_greedy, want_targets = [], [], torch.full((B, T), -100)
    for b, (toks, c) in enumerate(reqs):
        at = T - len(toks) if side == "left" else 0
        lp, greedy = 0.0, True
        for j in range(1, len(toks)):
            row = logits[b, at + j - 1]
            want_targets[b, at + j - 1] = toks[j]
            if j >= c:
                lp += torch.log_softmax(row, -1)[toks[j]].item()
                greedy &= int(row.argmax()) == toks[j]
        want_lp.append(lp)
        want_greedy.append(greedy)
    np.testing.assert_array_equal(fastlm.causal_targets(ids.numpy(), mask.numpy()), want_targets.numpy())
    got_lp, got_greedy = fastlm.score_continuations(logits.numpy(), ids.numpy(), [c for _, c in reqs],
                                                    attention_mask=mask.numpy())
    np.testing.assert_allclose(got_lp, want_lp, rtol=1e-12)
    assert got_greedy.tolist() == want_greedy
    pairs = fastlm.loglikelihood(logits.numpy(), ids.numpy(), [c for _, c in reqs], attention_mask=mask.numpy())
    assert [g for _, g in pairs] == want_greedy and np.allclose([p for p, _ in pairs], want_lp)
    loss = fastlm.cross_entropy(logits.numpy().reshape(-1, V), fastlm.causal_targets(ids.numpy(), mask.numpy()).reshape(-1))
    ref_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), want_targets.reshape(-1))
    assert float(loss) == pytest.approx(ref_loss.item(), rel=1e-12)
    with pytest.raises(ValueError, match="context_lengths"):
        fastlm.score_continuations(logits.numpy(), ids.numpy(), [0, 1, 1, 1], attention_mask=mask.numpy())
    with pytest.raises(ValueError, match="padding between"):
        fastlm.causal_targets(ids.numpy(), np.array([[1, 0, 1] + [1] * (T - 3)] * B))
    with pytest.raises(ValueError, match="ignore_index"):
        fastlm.causal_targets(np.array([[1, -100, 2]]))
