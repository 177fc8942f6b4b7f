"""Thread safety and GIL release of every C-backed public function.

Eight Python threads, started together by a barrier, call each C-backed function several times:
(a) each on its own input, (b) all on one shared read-only input, and (c) all functions at once, one per
thread in turn; out= / grad_out= variants write to per-thread outputs (and in place). Every result
must equal the serial one bit for bit (NaN where the serial result has NaN). The threads alternate
num_threads=1 and 2, since results do not depend on the thread count either.

The GIL tests show that a kernel call overlaps with Python code in another thread, without any timing
assertion: the main thread sees an output array half written (its first row done, its last row still
the NaN sentinel), which it can only see while the kernel is running; or, for functions without an
out=, the main thread keeps running Python code while the worker is inside the call, with the switch
interval raised so that a thread holding the GIL never hands it over on its own.
"""

from __future__ import annotations

import math
import pathlib
import re
import sys
import threading
import time

import numpy as np
import pytest

import fastlm
from fastlm import calibration
from fastlm import ngram as ng

N_THREADS = 8
REPEAT = 3


# ------------------------------------------------------------------------------------------- helpers

def same(a, b) -> bool:
    """Exact equality of results: arrays (dtype, shape, values; NaN equals NaN), scalars, tuples, lists."""
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return type(a) is type(b) and a == b


def snapshot(r):
    """A copy of a result, so that a later write into a reused output cannot change it."""
    if isinstance(r, np.ndarray):
        return r.copy()
    if isinstance(r, tuple):
        return tuple(snapshot(x) for x in r)
    if isinstance(r, list):
        return [snapshot(x) for x in r]
    return r


def read_only(tree):
    """Mark every array in a nested tuple / list / dict read-only (in place); returns tree."""
    if isinstance(tree, np.ndarray):
        tree.flags.writeable = False
    elif isinstance(tree, (tuple, list)):
        for x in tree:
            read_only(x)
    elif isinstance(tree, dict):
        for x in tree.values():
            read_only(x)
    return tree


def run_together(work, n=N_THREADS):
    """Run work(i) in n threads started together by a barrier; returns their results in order and
    re-raises the first exception a thread met."""
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = [None] * n

    def body(i):
        try:
            barrier.wait(timeout=60)
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001 - reported below, in the main thread
            errors[i] = e
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,), name=f"fastlm-test-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a thread is stuck"
    for e in errors:
        if e is not None and not isinstance(e, threading.BrokenBarrierError):
            raise e
    for e in errors:
        if e is not None:
            raise e
    return results


# --------------------------------------------------------------------------------------------- cases
# Each case: make(rng) -> inputs (a tuple), call(inputs, nt, bufs) -> result. bufs is a per-thread dict
# for preallocated outputs (reused across a thread's repeats).

def _logits(rng, shape=(6, 5, 700), dtype=np.float32, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _with_specials(rng, shape=(6, 5, 700), dtype=np.float64):
    x = _logits(rng, shape, dtype)
    x[0, 0, :: 7] = -np.inf  # masked tokens
    x[1, 1, 3] = np.inf  # a row holding +inf: NaN for softmax and cross-entropy
    x[2, 2, 5] = np.nan
    return x


def _targets(rng, x, ignore=True):
    t = rng.integers(0, x.shape[-1], x.shape[:-1])
    if ignore:
        t[..., 0] = -100
    return t


def _out(bufs, key, like):
    """A per-thread output of like's shape and dtype, filled with garbage first."""
    if key not in bufs:
        bufs[key] = np.full(like.shape, 12345.0, like.dtype)
    return bufs[key]


def _finite(rng, shape=(6, 5, 700), dtype=np.float32):
    return (_logits(rng, shape, dtype),)


def _step_table(rng, V=60):
    """A toy model for beam_search: the next-token logits depend on the last token only."""
    return (_logits(rng, (V, V), np.float64, 2.0),)


def _beam(inp, nt, bufs):
    (table,) = inp
    return fastlm.beam_search(lambda seqs: table[seqs[:, -1]], [1, 2, 3], num_beams=4, max_new_tokens=6,
                              eos_id=0, length_penalty=1.0)


def _corpus(rng, n=30, V=40, max_len=40):
    return ([rng.integers(0, V, rng.integers(1, max_len)) for _ in range(n)],)


def _lm_fit_and_score(inp, nt, bufs):
    (seqs,) = inp
    lm = ng.NgramLM(3, alpha=0.1, bos_id=40, eos_id=41).fit(seqs[:20]).update(seqs[20:])
    q = np.stack([s[:3] for s in seqs if s.size >= 3][:8])
    return (lm.counts(3), lm.counts(1), lm.count(seqs[0][:2]), lm.prob(q[:, 2], q[:, :2]),
            lm.logprob(q[:, 2], q[:, :2]), lm.next_token_distribution(seqs[0][:2]), lm.score(seqs[1]),
            lm.perplexity(seqs), lm.generate(seqs[2][:2], 15, seed=7, top_k=10, top_p=0.9))


def _lm_shared(inp, nt, bufs):
    lm = bufs["__shared__"]
    (seqs,) = inp
    q = np.stack([s[:3] for s in seqs if s.size >= 3][:8])
    merged = lm + lm
    return (lm.counts(3), lm.count(seqs[0][:3]), lm.prob(q[:, 2], q[:, :2]), lm.logprob(q[:, 2], q[:, :2]),
            lm.next_token_distribution(seqs[0][:2]), lm.score(seqs[1]), lm.perplexity(seqs),
            lm.generate(seqs[2][:2], 15, seed=3, temperature=0.8), merged.counts(2))


CASES = {
    "softmax": (_finite, lambda i, nt, b: fastlm.softmax(i[0], temperature=0.7, num_threads=nt)),
    "softmax_f64_specials": (lambda r: (_with_specials(r),), lambda i, nt, b: fastlm.softmax(i[0], num_threads=nt)),
    "softmax_axis0": (_finite, lambda i, nt, b: fastlm.softmax(i[0], axis=0, num_threads=nt)),
    "softmax_out": (_finite, lambda i, nt, b: fastlm.softmax(i[0], out=_out(b, "o", i[0]), num_threads=nt)),
    "log_softmax": (lambda r: (_with_specials(r),), lambda i, nt, b: fastlm.log_softmax(i[0], num_threads=nt)),
    "log_softmax_out": (_finite, lambda i, nt, b: fastlm.log_softmax(i[0], temperature=1.3,
                                                                      out=_out(b, "o", i[0]), num_threads=nt)),
    "log_softmax_f16": (lambda r: (_logits(r, dtype=np.float16),),
                        lambda i, nt, b: fastlm.log_softmax(i[0], num_threads=nt)),
    "logsumexp": (lambda r: (_with_specials(r),), lambda i, nt, b: fastlm.logsumexp(i[0], num_threads=nt)),
    "cross_entropy": (lambda r: (x := _logits(r), _targets(r, x), r.random(700)),
                      lambda i, nt, b: (fastlm.cross_entropy(i[0], i[1], num_threads=nt),
                                        fastlm.cross_entropy(i[0], i[1], weight=i[2], label_smoothing=0.1,
                                                             z_loss=1e-4, softcap=30.0, temperature=0.9,
                                                             num_threads=nt),
                                        fastlm.cross_entropy(i[0], i[1], reduction="none", num_threads=nt))),
    "cross_entropy_specials": (lambda r: (x := _with_specials(r), _targets(r, x)),
                               lambda i, nt, b: fastlm.cross_entropy(i[0], i[1], reduction="sum", num_threads=nt)),
    "cross_entropy_with_grad": (lambda r: (x := _logits(r), _targets(r, x)),
                                lambda i, nt, b: fastlm.cross_entropy_with_grad(i[0], i[1], label_smoothing=0.05,
                                                                                num_threads=nt)),
    "cross_entropy_grad_out": (lambda r: (x := _logits(r, dtype=np.float64), _targets(r, x)),
                               lambda i, nt, b: fastlm.cross_entropy_with_grad(
                                   i[0], i[1], reduction="sum", grad_out=_out(b, "g", i[0]), num_threads=nt)),
    "token_logprobs": (lambda r: (x := _logits(r), _targets(r, x)),
                       lambda i, nt, b: fastlm.token_logprobs(i[0], i[1], temperature=1.5, num_threads=nt)),
    "top_k_filter": (_finite, lambda i, nt, b: fastlm.top_k_filter(i[0], 40, num_threads=nt)),
    "top_k_filter_out": (_finite, lambda i, nt, b: fastlm.top_k_filter(
        i[0], np.arange(30).reshape(6, 5), filter_value=-1e4, out=_out(b, "o", i[0]), num_threads=nt)),
    "top_p_filter": (_finite, lambda i, nt, b: fastlm.top_p_filter(i[0], 0.9, num_threads=nt)),
    "top_p_filter_out": (lambda r: (_logits(r, dtype=np.float64),),
                         lambda i, nt, b: fastlm.top_p_filter(i[0], 0.5, min_tokens_to_keep=3,
                                                              out=_out(b, "o", i[0]), num_threads=nt)),
    "min_p_filter": (_finite, lambda i, nt, b: fastlm.min_p_filter(i[0], 0.05, num_threads=nt)),
    "min_p_filter_out": (_finite, lambda i, nt, b: fastlm.min_p_filter(i[0], 0.1, out=_out(b, "o", i[0]),
                                                                        num_threads=nt)),
    "typical_filter": (_finite, lambda i, nt, b: fastlm.typical_filter(i[0], 0.8, num_threads=nt)),
    "typical_filter_out": (lambda r: (_logits(r, dtype=np.float64),),
                           lambda i, nt, b: fastlm.typical_filter(i[0], 0.6, out=_out(b, "o", i[0]),
                                                                  num_threads=nt)),
    "cfg_mix": (lambda r: (_logits(r), _logits(r)), lambda i, nt, b: fastlm.cfg_mix(i[0], i[1], 1.5)),
    "greedy": (_finite, lambda i, nt, b: fastlm.greedy(i[0], num_threads=nt)),
    "sample": (_finite, lambda i, nt, b: (fastlm.sample(i[0], seed=11, num_threads=nt),
                                          fastlm.sample(i[0], temperature=0.8, top_k=50, top_p=0.9, min_p=0.01,
                                                        seed=np.arange(30).reshape(6, 5), num_threads=nt),
                                          fastlm.sample(i[0], top_p=0.7, seed=5, num_threads=nt))),
    "sample_f64": (lambda r: (_logits(r, dtype=np.float64),),
                   lambda i, nt, b: fastlm.sample(i[0], temperature=1.2, min_p=0.02, seed=99, num_threads=nt)),
    "beam_search": (_step_table, _beam),
    "entropy": (lambda r: (_with_specials(r),), lambda i, nt, b: (fastlm.entropy(i[0], num_threads=nt),
                                                                  fastlm.entropy(i[0], axis=1, base=2,
                                                                                 num_threads=nt))),
    "kl_divergence": (lambda r: (_logits(r), _logits(r, dtype=np.float64)),
                      lambda i, nt, b: fastlm.kl_divergence(i[0], i[1], num_threads=nt)),
    "perplexity": (lambda r: (x := _logits(r), _targets(r, x)),
                   lambda i, nt, b: (fastlm.perplexity(i[0], i[1], num_threads=nt),
                                     fastlm.bits_per_token(i[0], i[1], num_threads=nt))),
    "sequence_logprob": (lambda r: (x := _logits(r, (6, 5, 700)), _targets(r, x, ignore=False)),
                         lambda i, nt, b: fastlm.sequence_logprob(i[0], i[1], prompt_lengths=[0, 1, 2, 3, 4, 0],
                                                                  normalize="tokens", return_is_greedy=True,
                                                                  num_threads=nt)),
    "calibration_from_logits": (lambda r: (x := _logits(r, (30, 700)), _targets(r, x, ignore=False)),
                                lambda i, nt, b: calibration.calibration_from_logits(i[0], i[1], num_threads=nt)),
    "fit_temperature": (lambda r: (x := _logits(r, (60, 300)), _targets(r, x, ignore=False)),
                        lambda i, nt, b: calibration.fit_temperature(i[0], i[1], num_threads=nt)),
    "count_ngrams": (lambda r: (r.integers(0, 300, 3000),),
                     lambda i, nt, b: (ng.count_ngrams(i[0], 1), ng.count_ngrams(i[0], 3))),
    "ngram_lm": (_corpus, _lm_fit_and_score),
}


def _serial(case, inp):
    make, call = CASES[case]
    return snapshot(call(inp, 1, {}))


def _repeat(call, inp, nt, bufs, expected, what):
    for rep in range(REPEAT):
        got = call(inp, nt, bufs)
        assert same(got, expected), f"{what}: repeat {rep} differs from the serial result"


@pytest.mark.parametrize("case", sorted(CASES))
def test_separate_inputs(case):
    """(a) Every thread calls the function on its own input; each result equals the serial one."""
    make, call = CASES[case]
    inputs = [make(np.random.default_rng(1000 + i)) for i in range(N_THREADS)]
    expected = [_serial(case, inp) for inp in inputs]

    def work(i):
        _repeat(call, inputs[i], 1 + i % 2, {}, expected[i], f"{case}, thread {i}")

    run_together(work)


@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_read_only_input(case):
    """(b) Every thread calls the function on the same read-only input; outputs are per thread."""
    make, call = CASES[case]
    inp = read_only(make(np.random.default_rng(7)))
    expected = _serial(case, inp)

    def work(i):
        _repeat(call, inp, 1 + i % 2, {}, expected, f"{case}, thread {i}")

    run_together(work)


def test_shared_ngram_model():
    """(b) One fitted n-gram model scored by every thread at once: its lazily built hash indexes are
    created concurrently; every thread gets the serial results."""
    (seqs,) = _corpus(np.random.default_rng(3))
    read_only(seqs)
    reference = ng.NgramLM(3, alpha=0.2, eos_id=40).fit(seqs)
    expected = snapshot(_lm_shared((seqs,), 1, {"__shared__": reference}))
    for _ in range(3):
        shared = ng.NgramLM(3, alpha=0.2, eos_id=40).fit(seqs)  # fresh: no index built yet

        def work(i):
            _repeat(_lm_shared, (seqs,), 1, {"__shared__": shared}, expected, f"shared model, thread {i}")

        run_together(work)


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_in_place(shared):
    """out=x / grad_out=x in place on per-thread copies (of one shared read-only input, or of separate
    inputs), several functions at once."""
    base = [read_only(_logits(np.random.default_rng(5 if shared else 50 + i))) for i in range(N_THREADS)]
    targets = [_targets(np.random.default_rng(9 + i), base[0]) for i in range(N_THREADS)]

    def calls(x, t, nt):
        a = x.copy()
        b = x.copy()
        c = x.copy()
        d = x.copy()
        return (fastlm.softmax(a, out=a, num_threads=nt), fastlm.top_p_filter(b, 0.8, out=b, num_threads=nt),
                fastlm.log_softmax(c, axis=1, out=c, num_threads=nt),
                fastlm.cross_entropy_with_grad(d, t, grad_out=d, num_threads=nt))

    pick = (lambda i: base[0]) if shared else (lambda i: base[i])
    expected = [snapshot(calls(pick(i), targets[i], 1)) for i in range(N_THREADS)]

    def work(i):
        for rep in range(REPEAT):
            assert same(calls(pick(i), targets[i], 1 + i % 2), expected[i]), f"thread {i}, repeat {rep}"

    run_together(work)


def test_all_functions_at_once():
    """(c) Different kernels at the same time: each thread walks the cases in its own order."""
    names = sorted(CASES)
    inputs = {n: read_only(CASES[n][0](np.random.default_rng(21))) for n in names}
    expected = {n: _serial(n, inputs[n]) for n in names}

    def work(i):
        order = names[i:] + names[:i]
        bufs = {n: {} for n in names}
        for rep in range(2):
            for n in order:
                got = CASES[n][1](inputs[n], 1 + (i + rep) % 2, bufs[n])
                assert same(got, expected[n]), f"{n}, thread {i}, round {rep}"

    run_together(work)


# ------------------------------------------------------------------------------------------------ GIL

def _partial_seen(launch, out, tries=3):
    """Run launch() (a kernel call writing `out` row by row, first row first) in a worker thread while
    the main thread watches out: returns how many times it saw out half written (row 0 written, the last
    row still the NaN sentinel). That state exists only while the kernel runs, so with the GIL held
    during the call the main thread could never see it: the count would be 0."""
    for _ in range(tries):
        out.fill(np.nan)
        started = threading.Event()
        errors = []

        def worker():
            started.set()
            try:
                launch()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=worker)
        t.start()
        started.wait()
        seen = 0
        while t.is_alive():
            first, last = out[0, 0], out[-1, 0]
            if first == first and last != last:  # row 0 done, last row untouched
                seen += 1
        t.join()
        if errors:
            raise errors[0]
        assert not np.isnan(out).any(), "the kernel left sentinel values"
        if seen:
            return seen
    return 0


ROWS, V = 1024, 32000  # 131 MB of float32 per array: a call takes tens of milliseconds


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, V), dtype=np.float32)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "cross_entropy_with_grad", "top_p_filter", "top_k_filter"])
def test_gil_released_output_seen_half_written(big, fn):
    """The main thread runs Python code (it reads the output) while the kernel is writing it."""
    out = np.empty_like(big)
    t = np.zeros(ROWS, np.int64)
    launch = {
        "softmax": lambda: fastlm.softmax(big, out=out, num_threads=1),
        "log_softmax": lambda: fastlm.log_softmax(big, out=out, num_threads=1),
        "cross_entropy_with_grad": lambda: fastlm.cross_entropy_with_grad(big, t, grad_out=out, num_threads=1),
        "top_p_filter": lambda: fastlm.top_p_filter(big, 0.9, out=out, num_threads=1),
        "top_k_filter": lambda: fastlm.top_k_filter(big, 50, out=out, num_threads=1),
    }[fn]
    assert _partial_seen(launch, out) > 0, f"{fn} kept the GIL: the output was never seen half written"


def _python_cycles_inside(call):
    """Run call() in a worker thread; return how many rounds of a pure-Python loop the main thread ran
    while the worker was between its flag 'inside' and its flag 'returned'.

    The switch interval is raised to 1000 s, so that a thread holding the GIL keeps it until it releases
    it itself: if the kernel held the GIL, the worker would set both flags without the main thread
    running in between (0 rounds; a few where NumPy would release the GIL around the call, which the
    inputs below avoid). Every 32 rounds the main thread sleeps for 0 s, which releases the GIL, so that
    the worker can take it back when its call returns.
    """
    state = [0]
    errors = []

    def worker():
        state[0] = 1
        try:
            call()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        state[0] = 2

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        t = threading.Thread(target=worker)
        t.start()
        cycles = 0
        while state[0] != 2:
            k = 0
            for _ in range(50):
                k += 1
            if state[0] == 1:
                cycles += 1
            if cycles % 32 == 0:
                time.sleep(0)  # releases the GIL, for the worker to take when its call returns
        t.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]
    return cycles


MIN_CYCLES = 100  # with the GIL held during the kernel: 0, or a few where NumPy releases the GIL
RETRIES = (2, 4, 8, 16)  # calls per attempt


@pytest.fixture(scope="module")
def wide():
    # 256 rows: the wrappers' NumPy work on per-row arrays stays below the size at which NumPy itself
    # releases the GIL, so only the kernel can let the main thread run.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 65536), dtype=np.float32)
    x.flags.writeable = False
    return x


GENERIC = {
    "logsumexp": lambda x, t: fastlm.logsumexp(x, num_threads=1),
    "cross_entropy": lambda x, t: fastlm.cross_entropy(x, t, label_smoothing=0.1, num_threads=1),
    "token_logprobs": lambda x, t: fastlm.token_logprobs(x, t, num_threads=1),
    "entropy": lambda x, t: fastlm.entropy(x, num_threads=1),
    "kl_divergence": lambda x, t: fastlm.kl_divergence(x[1:], x[:-1], num_threads=1),  # views, no copy
    "greedy": lambda x, t: fastlm.greedy(x, num_threads=1),
    "sample": lambda x, t: fastlm.sample(x, top_p=0.9, seed=1, num_threads=1),
    "fit_temperature": lambda x, t: calibration.fit_temperature(x, t, max_passes=3, num_threads=1),
}


@pytest.mark.parametrize("fn", sorted(GENERIC))
def test_gil_released_python_runs_meanwhile(wide, fn):
    """The main thread keeps running Python code while the worker is inside the kernel call."""
    t = np.arange(wide.shape[0], dtype=np.int64)
    seen = []
    for reps in RETRIES:  # retries with more work, should the machine be busy
        seen.append(_python_cycles_inside(lambda: [GENERIC[fn](wide, t) for _ in range(reps)]))
        if seen[-1] >= MIN_CYCLES:
            break
    assert seen[-1] >= MIN_CYCLES, f"{fn}: the main thread ran only {seen} rounds during the calls (GIL held?)"


# ------------------------------------------------------------------------------- static check of nogil

PYX = pathlib.Path(__file__).resolve().parents[1] / "src" / "fastlm" / "_kernels.pyx"
NOT_KERNELS = {"fl_simd_name", "fl_simd_compiled", "fl_simd_supported", "fl_simd_active", "fl_simd_select",
               "fl_openmp_enabled", "fl_max_threads", "fl_scratch", "fl_scratch_release",
               "fl_words_free", "fl_words_size"}  # (a word table's destructor and its size: O(1))


@pytest.mark.skipif(not PYX.exists(), reason="needs the source tree")
def test_every_kernel_call_is_inside_nogil():
    """In _kernels.pyx, every call of a C kernel (fl_*, or a kernel passed as a function pointer) sits in
    a `with nogil:` block."""
    lines = PYX.read_text().splitlines()
    body_start = next(i for i, ln in enumerate(lines) if ln.startswith("SIMD_LEVELS"))  # after the externs
    nogil_indent = None
    offenders = []
    for no, line in enumerate(lines[body_start:], body_start + 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if nogil_indent is not None and indent <= nogil_indent:
            nogil_indent = None
        if stripped == "with nogil:":
            nogil_indent = indent
            continue
        calls = set(re.findall(r"\b(fl_\w+|k32|k64)\s*\(", stripped)) - NOT_KERNELS
        if calls and nogil_indent is None and not stripped.startswith(("def ", "cdef ", "ctypedef ")):
            offenders.append(f"line {no}: {stripped}")
    assert not offenders, "kernel calls holding the GIL:\n" + "\n".join(offenders)
