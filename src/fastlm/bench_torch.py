"""Benchmark cases of fastlm.torch, shared by `fastlm bench` and bench/ (pytest-benchmark).

- cross_entropy fwd + bwd through autograd, against the raw NumPy call (fastlm.cross_entropy_with_grad,
  which allocates its gradient as autograd does) and torch's F.cross_entropy fwd + bwd.
- linear_cross_entropy fwd + bwd against the naive torch (h @ W.T, F.cross_entropy, backward), with
  the peak extra memory of each (the peak resident set size, VmHWM, above the resident size once the inputs
  are made), measured in a fresh subprocess per side (Linux).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CE_SHAPES = [(8, 1024, 32000)]
CE_QUICK = [(2, 256, 32000)]
LINEAR_SHAPES = [(4096, 512, 32000), (8192, 256, 128256)]
LINEAR_QUICK = [(1024, 256, 32000)]


def _best(fn, repeat: int) -> float:
    """The best of `repeat` timed calls after one warm-up, in ms."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def make_ce_cases(shape, dtype_name: str, threads: int):
    """{label: fwd + bwd callable} for cross_entropy on (B, T, V) logits of dtype_name."""
    import torch

    import fastlm
    import fastlm.torch as ft

    B, T, V = shape
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype_name)
    x = (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    t = torch.randint(0, V, (B, T), generator=g)

    def fastlm_torch():
        xa = x.detach().requires_grad_()
        ft.cross_entropy(xa, t).backward()

    def torch_ce():
        xa = x.detach().requires_grad_()
        torch.nn.functional.cross_entropy(xa.reshape(-1, V), t.reshape(-1)).backward()

    fns = {"fastlm.torch": fastlm_torch, "torch": torch_ce}
    if dtype_name != "bfloat16":
        xn, tn = x.numpy(), t.numpy()
        fns["raw numpy call"] = lambda: fastlm.cross_entropy_with_grad(xn, tn, num_threads=threads)
    return fns


def run_ce(quick: bool = False, threads: int = 1, repeat: int = 3):
    import torch

    torch.set_num_threads(threads)
    rows = []
    for shape in CE_QUICK if quick else CE_SHAPES:
        for dtype_name in ("float32", "bfloat16"):
            fns = make_ce_cases(shape, dtype_name, threads)
            times: dict[str, float] = {}
            for _ in range(2):  # interleaved rounds, the best of each side
                for label, fn in fns.items():
                    times[label] = min(times.get(label, float("inf")), _best(fn, repeat))
            rows.append({"shape": shape, "dtype": dtype_name, **times})
    return rows


def format_ce_table(rows) -> str:
    lines = ["| case | logits | fastlm.torch ms | raw numpy call ms | / raw | torch ms | vs torch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        raw, ours = r.get("raw numpy call"), r["fastlm.torch"]
        lines.append(f"| cross_entropy fwd+bwd | {'x'.join(map(str, r['shape']))} {r['dtype']} | {ours:.1f} | "
                     f"{'n/a' if raw is None else f'{raw:.1f}'} | {'n/a' if raw is None else f'{ours / raw:.2f}'} | "
                     f"{r['torch']:.1f} | {r['torch'] / ours:.1f}x |")
    return "\n".join(lines)


_CHILD = r"""
import json, sys, time
import torch
side, N, D, V, threads, repeat = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(threads)
import fastlm, fastlm.torch as ft
fastlm.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
h = torch.randn(N, D, generator=g)
W = torch.randn(V, D, generator=g) / D ** 0.5
t = torch.randint(0, V, (N,), generator=g)

def status_mb(field):  # VmRSS: resident now; VmHWM: its peak (reset by exec, unlike ru_maxrss)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024

def step():
    hh, WW = h.detach().requires_grad_(), W.detach().requires_grad_()
    if side == "naive":
        loss = torch.nn.functional.cross_entropy(hh @ WW.T, t)
    else:
        loss = ft.linear_cross_entropy(hh, WW, t)
    loss.backward()
    return float(loss)

base = status_mb("VmRSS")
loss = step()
peak = status_mb("VmHWM") - base
best = float("inf")
for _ in range(repeat):
    t0 = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"ms": best * 1e3, "peak_extra_mb": peak, "loss": loss}))
"""


def run_linear_side(side: str, shape, threads: int = 1, repeat: int = 2) -> dict:
    """One side ("naive" or "fastlm") of the linear case in a fresh process: time and peak extra memory."""
    N, D, V = shape
    out = subprocess.run([sys.executable, "-c", _CHILD, side, str(N), str(D), str(V), str(threads), str(repeat)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_linear(quick: bool = False, threads: int = 1, repeat: int = 2):
    rows = []
    for shape in LINEAR_QUICK if quick else LINEAR_SHAPES:
        rows.append({"shape": shape, "naive": run_linear_side("naive", shape, threads, repeat),
                     "fastlm": run_linear_side("fastlm", shape, threads, repeat)})
    return rows


def format_linear_table(rows) -> str:
    lines = ["| case | N, D, V | fastlm.torch ms | naive torch ms | time / naive | fastlm peak extra MB | "
             "naive peak extra MB | memory / naive |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, n = r["fastlm"], r["naive"]
        lines.append(f"| linear_cross_entropy fwd+bwd | {', '.join(map(str, r['shape']))} | {f['ms']:.0f} | "
                     f"{n['ms']:.0f} | {f['ms'] / n['ms']:.2f} | {f['peak_extra_mb']:.0f} | "
                     f"{n['peak_extra_mb']:.0f} | {f['peak_extra_mb'] / n['peak_extra_mb']:.2f} |")
    return "\n".join(lines)
