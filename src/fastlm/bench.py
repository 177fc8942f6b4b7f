"""Benchmark cases shared by `fastlm bench` and bench/ (pytest-benchmark).

Each case times fastlm against the NumPy reference, torch (when installed) and np.copyto of the same
array (the memory floor: one read and one write of the logits), in the same run and on the same data.
"""

from __future__ import annotations

import math
import time

import numpy as np

import fastlm
from fastlm import reference

FULL_SHAPES = [(2048, 32000), (512, 128256)]
QUICK_SHAPES = [(256, 32000), (64, 128256)]


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(np.float32)
    t = rng.integers(0, shape[-1], shape[:-1])
    return x, t


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def make_cases():
    """name -> builder(shape, threads) -> ({label: callable}, logits, error()), error() being the max
    relative error against the float64 reference on the first 64 rows."""
    return {
        "cross_entropy": _build_loss,
        "cross_entropy_with_grad(grad_out=logits)": _build_loss_grad,
        "softmax(out=)": _build_softmax,
    }


def _build_loss(shape, threads):
    x, t = _data(shape)
    torch = _torch()
    fns = {"fastlm": lambda: fastlm.cross_entropy(x, t, num_threads=threads),
           "numpy": lambda: reference.cross_entropy(x, t)}
    if torch is not None:
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        fns["torch"] = lambda: float(torch.nn.functional.cross_entropy(xt, tt))

    def error():
        rows = slice(0, 64)
        got = fastlm.cross_entropy(x[rows], t[rows], reduction="none", num_threads=threads)
        want = reference.cross_entropy(x[rows], t[rows], reduction="none")
        return float(np.max(np.abs(got - want) / np.abs(want)))

    return fns, x, error


def _build_loss_grad(shape, threads):
    x, t = _data(shape)
    work = x.copy()
    torch = _torch()

    fns = {"fastlm": lambda: fastlm.cross_entropy_with_grad(work, t, grad_out=work, num_threads=threads),
           "numpy": lambda: reference.cross_entropy_with_grad(x, t)}
    if torch is not None:
        xt, tt = torch.from_numpy(x.copy()).requires_grad_(True), torch.from_numpy(t)

        def torch_fb():
            xt.grad = None
            torch.nn.functional.cross_entropy(xt, tt).backward()
            return xt.grad

        fns["torch"] = torch_fb

    def error():
        rows = slice(0, 64)
        _, g = fastlm.cross_entropy_with_grad(x[rows], t[rows], reduction="sum", num_threads=threads)
        _, gw = reference.cross_entropy_with_grad(x[rows], t[rows], reduction="sum")
        return float(np.max(np.abs(g - gw)) / np.max(np.abs(gw)))

    return fns, x, error


def _build_softmax(shape, threads):
    x, _ = _data(shape)
    out = np.empty_like(x)
    torch = _torch()
    fns = {"fastlm": lambda: fastlm.softmax(x, out=out, num_threads=threads),
           "numpy": lambda: reference.softmax(x)}
    if torch is not None:
        xt = torch.from_numpy(x)
        fns["torch"] = lambda: torch.softmax(xt, -1)

    def error():
        rows = slice(0, 64)
        got = fastlm.softmax(x[rows], num_threads=threads)
        want = reference.softmax(x[rows])
        return float(np.max(np.abs(got - want)) / np.max(want))

    return fns, x, error


def best_time(fn, repeat: int) -> float:
    """Best wall time of `repeat` calls after one warm-up call (repeat 0: one call, no warm-up), in seconds."""
    if repeat > 0:
        fn()  # warm-up
    best = float("inf")
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(shapes, threads: int = 1, repeat: int = 5, include_numpy: bool = True, log=None):
    """Time every case on every shape; returns a list of result dicts (times in seconds)."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    results = []
    for shape in shapes:
        x0, _ = _data(shape)
        dst = np.empty_like(x0)
        floor = best_time(lambda: np.copyto(dst, x0), repeat)
        for name, build in make_cases().items():
            fns, _, error = build(shape, threads)
            row = {"case": name, "shape": shape, "copyto": floor, "error": error()}
            for label, fn in fns.items():
                if label == "numpy" and not include_numpy:
                    continue
                row[label] = best_time(fn, 1 if label == "numpy" else repeat)
            results.append(row)
            if log:
                log(row)
    return results


def format_table(results) -> str:
    """A Markdown table: times in ms and the ratios that matter."""
    head = ("| case | shape | fastlm ms | torch ms | vs torch | numpy ms | vs numpy | np.copyto ms "
            "| / copyto | max rel err |")
    lines = [head, "|" + "---|" * 10]
    for r in results:
        f = r["fastlm"]
        torch_ms = f"{r['torch'] * 1e3:.1f}" if "torch" in r else "n/a"
        vs_torch = f"{r['torch'] / f:.1f}x" if "torch" in r else "n/a"
        np_ms = f"{r['numpy'] * 1e3:.0f}" if "numpy" in r else "n/a"
        vs_np = f"{r['numpy'] / f:.0f}x" if "numpy" in r else "n/a"
        lines.append(f"| {r['case']} | {r['shape'][0]}x{r['shape'][1]} | {f * 1e3:.1f} | {torch_ms} | {vs_torch} "
                     f"| {np_ms} | {vs_np} | {r['copyto'] * 1e3:.1f} | {f / r['copyto']:.2f} | {r['error']:.1e} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ decoding
# Logits N(0, s^2): s = 5 gives a peaked distribution (a nucleus of tens of tokens, as language models
# mostly produce), s = 3 a flat one (thousands of tokens in the top-p 0.9 nucleus), s = 2 a flatter one
# (a quarter of the vocabulary), s = 1 a very flat one (more than half of it).
DECODE_SHAPES = [(1, 128256), (32, 128256)]
DECODE_SCALES = [5.0, 3.0, 2.0, 1.0]


def _hf_top_p(torch, xt, p):
    """Hugging Face's TopPLogitsWarper in torch: sort, softmax, cumsum, scatter."""
    sorted_logits, sorted_indices = torch.sort(xt, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative_probs <= (1 - p)
    remove[..., -1:] = 0
    remove = remove.scatter(1, sorted_indices, remove)
    return xt.masked_fill(remove, -float("inf"))


def _hf_sample(torch, xt, temperature, top_k, top_p, generator):
    """Hugging Face's warper chain (temperature, top-k unless 0, top-p) and torch.multinomial."""
    z = xt / temperature
    if top_k:
        z = z.masked_fill(z < torch.topk(z, top_k)[0][..., -1, None], -float("inf"))
    z = _hf_top_p(torch, z, top_p)
    return torch.multinomial(torch.softmax(z, dim=-1), 1, generator=generator)


def make_decoding_cases():
    """name -> builder(x, threads) -> {label: callable}: "fastlm", and "torch" (Hugging Face's warpers in
    torch) when torch is installed; the reference cost, a softmax of the same array, is timed apart."""
    torch = _torch()

    def top_p(x, threads):
        out = np.empty_like(x)
        fns = {"fastlm": lambda: fastlm.top_p_filter(x, 0.9, out=out, num_threads=threads)}
        if torch is not None:
            xt = torch.from_numpy(x)
            fns["torch"] = lambda: _hf_top_p(torch, xt, 0.9)
        return fns

    def sample(x, threads):
        fns = {"fastlm": lambda: fastlm.sample(x, temperature=0.8, top_k=50, top_p=0.9, seed=0,
                                               num_threads=threads)}
        if torch is not None:
            xt, gen = torch.from_numpy(x), torch.Generator().manual_seed(0)
            fns["torch"] = lambda: _hf_sample(torch, xt, 0.8, 50, 0.9, gen)
        return fns

    def sample_top_p(x, threads):
        fns = {"fastlm": lambda: fastlm.sample(x, top_p=0.9, seed=0, num_threads=threads)}
        if torch is not None:
            xt, gen = torch.from_numpy(x), torch.Generator().manual_seed(0)
            fns["torch"] = lambda: _hf_sample(torch, xt, 1.0, 0, 0.9, gen)
        return fns

    return {"top_p_filter(p=0.9)": top_p, "sample(T=0.8, top_k=50, top_p=0.9)": sample,
            "sample(top_p=0.9)": sample_top_p}


def run_decoding(shapes=None, threads: int = 1, repeat: int = 5, log=None):
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    results = []
    for scale in DECODE_SCALES:
        for shape in shapes or DECODE_SHAPES:
            rng = np.random.default_rng(1)
            x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))
            out = np.empty_like(x)
            softmax = lambda: fastlm.softmax(x, out=out, num_threads=threads)  # noqa: E731
            nucleus = int(np.isfinite(fastlm.top_p_filter(x[:1], 0.9)).sum())
            rows, fns = [], []
            for name, build in make_decoding_cases().items():
                rows.append({"case": name, "shape": shape, "scale": scale, "nucleus": nucleus})
                fns.append(build(x, threads))
            # three rounds, the softmax and every case in each, each keeping its best: against noise on a
            # shared machine, both sides of a ratio get as many tries, spread over the same time
            soft = math.inf
            for _ in range(3):
                soft = min(soft, best_time(softmax, repeat))
                for row, fn in zip(rows, fns):
                    row["fastlm"] = min(row.get("fastlm", math.inf), best_time(fn["fastlm"], repeat))
            for row, fn in zip(rows, fns):
                row["softmax"] = soft
                if "torch" in fn:
                    row["torch"] = best_time(fn["torch"], max(1, repeat // 2))
                if log:
                    log(row)
            results += rows
    return results


def format_decoding_table(results) -> str:
    head = ("| case | logits | nucleus | fastlm ms | HF-style torch ms | vs torch | softmax ms | / softmax |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        f = r["fastlm"]
        t = f"{r['torch'] * 1e3:.2f} | {r['torch'] / f:.0f}x" if "torch" in r else "n/a | n/a"
        lines.append(f"| {r['case']} | {r['shape'][0]}x{r['shape'][1]} N(0,{r['scale']:g}^2) | {r['nucleus']} "
                     f"| {f * 1e3:.3f} | {t} | {r['softmax'] * 1e3:.3f} | {f / r['softmax']:.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- evaluation
def run_evaluation(shape=(2048, 32000), temp_shape=(100000, 1000), threads=1, repeat=3, include_slow=True):
    """entropy / kl_divergence against scipy and one read pass (np.max); fit_temperature against
    scipy.optimize.minimize_scalar over a NumPy objective."""
    from . import calibration

    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(3)
    y = rng.standard_normal(shape, dtype=np.float32) * np.float32(3)
    out = {"shape": shape, "temp_shape": temp_shape}
    out["np.max"] = best_time(lambda: x.max(axis=-1), repeat)
    out["entropy"] = best_time(lambda: fastlm.entropy(x, num_threads=threads), repeat)
    out["kl"] = best_time(lambda: fastlm.kl_divergence(x, y, num_threads=threads), repeat)
    try:
        import scipy.optimize
        import scipy.special
        import scipy.stats
    except ImportError:
        scipy = None
    if scipy is not None and include_slow:
        sm = scipy.special.softmax
        out["scipy entropy"] = best_time(lambda: scipy.stats.entropy(sm(x, axis=-1), axis=-1), 1)
        out["scipy kl"] = best_time(lambda: scipy.special.rel_entr(sm(x, axis=-1), sm(y, axis=-1)).sum(-1), 1)
    # overconfident logits: labels drawn from softmax(logits / 2) (Gumbel-max), so the best T is near 2
    logits = rng.standard_normal(temp_shape, dtype=np.float32) * np.float32(3)
    labels = np.concatenate([
        np.argmax(logits[i:i + 10000] / np.float32(2)
                  + rng.gumbel(size=(min(10000, temp_shape[0] - i), temp_shape[1])).astype(np.float32), axis=1)
        for i in range(0, temp_shape[0], 10000)])
    calls = []
    orig = calibration._kernels.temperature_stats

    def counting(*a):
        calls.append(1)
        return orig(*a)

    calibration._kernels.temperature_stats = counting
    try:
        out["fit_temperature"] = best_time(lambda: calibration.fit_temperature(logits, labels, num_threads=threads), 1)
    finally:
        calibration._kernels.temperature_stats = orig
    out["passes"] = len(calls) // 2 + 1  # per call (best_time runs it twice), plus the row-max pass
    if scipy is not None and include_slow:
        rows = np.arange(labels.size)

        def objective(log_t):
            zz = logits / np.float32(np.exp(log_t))
            return float(np.mean(scipy.special.logsumexp(zz, axis=1) - zz[rows, labels]))

        out["scipy fit"] = best_time(lambda: scipy.optimize.minimize_scalar(
            objective, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6}), 0)
    return out


def format_evaluation_table(r) -> str:
    shp = f"{r['shape'][0]}x{r['shape'][1]}"
    rows = ["| measurement | fastlm ms | alternative ms | speedup | / np.max (one read pass) |", "|---|---|---|---|---|"]
    for key, alt, label, passes in (("entropy", "scipy entropy", "entropy", 1), ("kl", "scipy kl", "kl_divergence", 2)):
        a = f"{r[alt] * 1e3:.0f} | {r[alt] / r[key]:.0f}x" if alt in r else "n/a | n/a"
        rows.append(f"| {label} {shp} | {r[key] * 1e3:.1f} | {a} | {r[key] / (passes * r['np.max']):.2f} |")
    t = r["temp_shape"]
    a = f"{r['scipy fit'] * 1e3:.0f} | {r['scipy fit'] / r['fit_temperature']:.0f}x" if "scipy fit" in r else "n/a | n/a"
    rows.append(f"| fit_temperature {t[0]}x{t[1]} ({r['passes']} passes) | {r['fit_temperature'] * 1e3:.0f} | {a} | |")
    return "\n".join(rows)
