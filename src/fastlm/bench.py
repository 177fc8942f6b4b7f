"""Benchmark cases shared by `fastlm bench` and bench/ (pytest-benchmark).

Each case times fastlm against the NumPy reference, torch (when installed) and np.copyto of the same
array (the memory floor: one read and one write of the logits), in the same run and on the same data.
"""

from __future__ import annotations

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


def best_time(fn, repeat: int, min_time: float = 0.0) -> float:
    """Best wall time of `repeat` calls (after one warm-up call), in seconds."""
    fn()
    best = float("inf")
    t_end = time.perf_counter() + min_time
    i = 0
    while i < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        i += 1
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
