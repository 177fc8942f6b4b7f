"""Memory leaks: many calls of every C-backed public function leave the resident memory flat.

Each case is called WARMUP (200) times, then the resident set size (RSS, from /proc/self/statm, after
gc.collect() and, on glibc, malloc_trim(0)) is read; then CALLS (10,000) more times and the RSS is read
again. The growth must stay below TOLERANCE = 4 MiB, that is about 420 bytes per call: the inputs are
small but hold a few KiB (64 rows of 128 logits, or 512 short rows on the decoding error paths), so
that leaking a per-call buffer of the kernels (a float64 per row), an output or a reference to an
input would exceed it. The error paths (a NaN or all -inf row, a bad target, an invalid option) are
called as often as the successful ones, since those are where a buffer is most easily not freed. One
more test starts and ends many threads that use the per-thread scratch memory of the decoding kernels.

Linux only (the tests skip elsewhere).
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlm
from fastlm import calibration
from fastlm import ngram as ng

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS from /proc/self/statm (Linux)")

WARMUP = 200
CALLS = 10_000
TOLERANCE = 4 << 20  # bytes
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _malloc_trim():
    """glibc's malloc_trim(0), where there is one: hands free memory held by malloc back to
    the system, so that the RSS counts what is in use rather than what the allocator keeps for later."""
    try:
        libc = ctypes.CDLL(None)
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def rss() -> int:
    """Resident bytes of this process, after gc.collect() (and malloc_trim(0) on glibc)."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _raises(fn, exc=ValueError):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError(f"expected {exc.__name__}")

    return call


def _cases():
    rng = np.random.default_rng(0)
    # (64, 128): 32 KiB of logits, 512 bytes of per-row float64 scratch, a single thread (below the size
    # at which the kernels go parallel, so that no case waits on OpenMP threads)
    x = (rng.standard_normal((64, 128)) * 3).astype(np.float32)
    x64 = x.astype(np.float64)
    x3 = x.reshape(8, 8, 128)
    t = rng.integers(0, 128, 64)
    t3 = t.reshape(8, 8)
    out = np.empty_like(x)
    out64 = np.empty_like(x64)
    bad_t = t.copy()
    bad_t[60] = 128
    w = rng.random(128)
    # the decoding kernels cost more per row: 8 rows of 256 for their successful calls, and 512 short
    # rows with the bad one last for their error paths (4 KiB of per-row scratch, found bad at the end)
    xs = (rng.standard_normal((8, 256)) * 3).astype(np.float32)
    outs = np.empty_like(xs)
    nan = rng.standard_normal((512, 16)).astype(np.float32)
    nan[511, 7] = np.nan
    empty = nan.copy()
    empty[511] = -np.inf
    nan_out = np.empty_like(nan)
    hot = x.copy()
    hot[62, 3] = np.inf  # fit_temperature rejects a row whose max is +inf (after its row-max pass)
    table = rng.standard_normal((64, 64))
    toks = rng.integers(0, 16, 400)  # 3-grams of 4-bit ids: the direct-count path of the kernel
    seqs = [rng.integers(0, 50, n) for n in (12, 8, 15)]
    lm = ng.NgramLM(3, alpha=0.5, bos_id=50, eos_id=51).fit(seqs)
    kn = ng.NgramLM(3, smoothing="kneser-ney", vocab_size=53, bos_id=50, eos_id=51, unk_id=52, discount_fallback=True)
    q = np.stack([toks[i:i + 3] for i in range(0, 60, 3)])

    def step(seqs_):
        return table[seqs_[:, -1] % 64]

    def step_nan(seqs_):
        r = table[seqs_[:, -1] % 64].copy()
        r[-1, 1] = np.nan
        return r

    return {
        "softmax": lambda: fastlm.softmax(x, temperature=0.8),
        "softmax_out_f64": lambda: fastlm.softmax(x64, axis=0, out=out64),
        "softmax_bad_out": _raises(lambda: fastlm.softmax(x, out=out64), TypeError),
        "log_softmax_out": lambda: fastlm.log_softmax(x, out=out),
        "log_softmax_f16": lambda: fastlm.log_softmax(x.astype(np.float16)),
        "logsumexp": lambda: fastlm.logsumexp(x3),
        "logsumexp_bad_temperature": _raises(lambda: fastlm.logsumexp(x, temperature=0.0)),
        "cross_entropy": lambda: fastlm.cross_entropy(x, t, weight=w, label_smoothing=0.1, z_loss=1e-4,
                                                      softcap=20.0),
        "cross_entropy_none": lambda: fastlm.cross_entropy(x3, t3, reduction="none"),
        "cross_entropy_bad_target": _raises(lambda: fastlm.cross_entropy(x, bad_t)),
        "cross_entropy_with_grad": lambda: fastlm.cross_entropy_with_grad(x, t),
        "cross_entropy_grad_out": lambda: fastlm.cross_entropy_with_grad(x64, t, grad_out=out64, reduction="sum"),
        "cross_entropy_with_grad_bad_target": _raises(lambda: fastlm.cross_entropy_with_grad(x, bad_t,
                                                                                            grad_out=out)),
        "token_logprobs": lambda: fastlm.token_logprobs(x3, t3),
        "token_logprobs_bad_target": _raises(lambda: fastlm.token_logprobs(x, bad_t)),
        "top_k_filter": lambda: fastlm.top_k_filter(xs, 20),
        "top_k_filter_out": lambda: fastlm.top_k_filter(xs, np.arange(8), out=outs),
        "top_k_filter_nan": _raises(lambda: fastlm.top_k_filter(nan, 5)),
        "top_p_filter": lambda: fastlm.top_p_filter(xs, 0.9),
        "top_p_filter_out": lambda: fastlm.top_p_filter(xs.astype(np.float64), 0.5, out=np.empty((8, 256))),
        "top_p_filter_nan": _raises(lambda: fastlm.top_p_filter(nan, 0.9)),
        "top_p_filter_empty": _raises(lambda: fastlm.top_p_filter(empty, 0.9, out=nan_out)),
        "top_p_filter_bad_p": _raises(lambda: fastlm.top_p_filter(xs, 1.5)),
        "min_p_filter": lambda: fastlm.min_p_filter(xs, 0.05),
        "min_p_filter_nan": _raises(lambda: fastlm.min_p_filter(nan, 0.05)),
        "typical_filter": lambda: fastlm.typical_filter(xs, 0.8),
        "typical_filter_empty": _raises(lambda: fastlm.typical_filter(empty, 0.8)),
        "cfg_mix": lambda: fastlm.cfg_mix(x, x[::-1], 1.5),
        "greedy": lambda: fastlm.greedy(x3),
        "greedy_nan": _raises(lambda: fastlm.greedy(nan)),
        "sample": lambda: fastlm.sample(xs, temperature=0.7, top_k=40, top_p=0.9, min_p=0.01, seed=3),
        "sample_f64": lambda: fastlm.sample(xs.astype(np.float64), top_p=0.8, seed=np.arange(8)),
        "sample_nan": _raises(lambda: fastlm.sample(nan, seed=1)),
        "sample_empty": _raises(lambda: fastlm.sample(empty, top_k=3, seed=1)),
        "beam_search": lambda: fastlm.beam_search(step, [1, 2], num_beams=2, max_new_tokens=2, eos_id=0),
        "beam_search_nan": _raises(lambda: fastlm.beam_search(step_nan, [1], num_beams=2, max_new_tokens=3)),
        "entropy": lambda: fastlm.entropy(x, base=2),
        "kl_divergence": lambda: fastlm.kl_divergence(x, x64[::-1]),
        "perplexity": lambda: (fastlm.perplexity(x, t), fastlm.bits_per_token(x, t)),
        "sequence_logprob": lambda: fastlm.sequence_logprob(x3, t3, prompt_lengths=np.arange(8), normalize="tokens",
                                                            return_is_greedy=True),
        "calibration_from_logits": lambda: calibration.calibration_from_logits(x, t),
        "fit_temperature": lambda: calibration.fit_temperature(x, t, max_passes=4),
        "fit_temperature_inf": _raises(lambda: calibration.fit_temperature(hot, t)),
        "count_ngrams": lambda: ng.count_ngrams(toks, 3),
        "count_ngrams_wide": lambda: ng.count_ngrams([0, 2**31, 5, 7, 2**31], 3),
        "count_ngrams_bad_id": _raises(lambda: ng.count_ngrams([0, 2**32, 5], 3)),
        "ngram_fit": lambda: ng.NgramLM(2, alpha=0.1, eos_id=51).fit(seqs).update(seqs[:1]),
        "ngram_lookups": lambda: (lm.prob(q[:, 2], q[:, :2]), lm.count(q[0])),
        "ngram_score": lambda: lm.perplexity(seqs[:1]),
        "ngram_full_scores": lambda: lm.full_scores(seqs[:3]),
        "ngram_kneser_ney": lambda: kn.fit(seqs).full_scores(seqs[:2]),
        "ngram_fresh_index": lambda: ng.NgramLM(2, alpha=0.1).fit(seqs[:1]).prob(q[:, 1], q[:, :1]),
        "ngram_merge": lambda: (lm + lm).counts(3),
        "ngram_generate": lambda: lm.generate(seqs[0][:2], 1, seed=5),
        "ngram_bad_sequence": _raises(lambda: ng.NgramLM(2, vocab_size=10).fit([[1, 2, 30]])),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_rss_stays_flat(case):
    fn = CASES[case]
    for _ in range(WARMUP):
        fn()
    before = rss()
    for _ in range(CALLS):
        fn()
    growth = rss() - before
    assert growth < TOLERANCE, f"{case}: RSS grew by {growth / 2**20:.2f} MiB over {CALLS} calls"


_THREADS_SCRIPT = """
import gc, threading
import numpy as np
import fastlm

def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

x = np.random.default_rng(1).standard_normal((4, 20_000)).astype(np.float32)

def work():
    fastlm.top_p_filter(x, 0.9, num_threads=2)
    fastlm.sample(x, top_k=50, seed=1, num_threads=1)
    fastlm.typical_filter(x.astype(np.float64), 0.9, num_threads=1)

def wave(n):
    for _ in range(n):
        threads = [threading.Thread(target=work) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

wave(10)
before = rss()
wave(50)
print(rss() - before)
"""


def test_threads_scratch_is_released():
    """Threads that end free their per-thread scratch (the decoding kernels keep one per thread): 400
    short-lived threads, 8 at a time, each filtering and sampling rows of 20,000 logits (scratch of
    about 1 MB per thread), leave the RSS flat.

    In a fresh process with glibc's mmap threshold fixed at 128 KiB, so that every scratch buffer is its
    own mapping, returned to the system when freed: otherwise the allocator may keep the memory freed by
    ended threads in its per-thread arenas, which this process's history decides."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    script = _THREADS_SCRIPT.replace("PAGE", str(PAGE))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    growth = int(res.stdout.split()[-1])
    assert growth < TOLERANCE, f"RSS grew by {growth / 2**20:.2f} MiB over 400 threads"
