"""Benchmarks of fastlm.hf (the `fastlm bench` group "Hugging Face processors"): one sampling step's
processors (temperature 0.7, top-k 50, top-p 0.9) on (8, 128256) float32 scores, fastlm's against
Hugging Face's own, same threads, each on a fresh copy of the same tensor."""

from __future__ import annotations

import time
from typing import Any

TEMPERATURE, TOP_K, TOP_P = 0.7, 50, 0.9


def processors_under_test() -> Any:
    from . import hf

    return hf.processors(temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)


def hugging_face_warpers() -> Any:
    from transformers import LogitsProcessorList
    from transformers.generation import logits_process as lp

    return LogitsProcessorList([lp.TemperatureLogitsWarper(TEMPERATURE), lp.TopKLogitsWarper(TOP_K),
                                lp.TopPLogitsWarper(TOP_P)])


def run_processors(rows: int = 8, vocab: int = 128256, threads: int = 1, repeat: int = 20) -> dict[str, Any]:
    import torch

    from . import _config

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, vocab, generator=g) * 2
    ids = torch.randint(0, vocab, (rows, 16), generator=g)
    sides = {"fastlm.hf.processors": processors_under_test(), "Hugging Face warpers": hugging_face_warpers()}
    torch_threads, fastlm_threads = torch.get_num_threads(), _config.get_num_threads()
    torch.set_num_threads(threads)
    _config.set_num_threads(threads)
    r: dict[str, Any] = {"shape": (rows, vocab), "threads": threads}
    try:
        for label, plist in sides.items():
            best = float("inf")
            for _ in range(repeat):
                y = x.clone()
                t0 = time.perf_counter()
                plist(ids, y)
                best = min(best, time.perf_counter() - t0)
            r[label] = best
        r["same output"] = bool(torch.equal(sides["fastlm.hf.processors"](ids, x.clone()),
                                            sides["Hugging Face warpers"](ids, x.clone())))
    finally:
        torch.set_num_threads(torch_threads)
        _config.set_num_threads(fastlm_threads)
    return r


def format_processors_table(r: dict[str, Any]) -> str:
    ours, theirs = r["fastlm.hf.processors"], r["Hugging Face warpers"]
    rows = [f"| processor step {r['shape'][0]}x{r['shape'][1]} float32 (T 0.7, top-k 50, top-p 0.9), "
            f"{r['threads']} thread(s) | ms | speed-up |", "|---|---|---|",
            f"| fastlm.hf.processors | {ours * 1e3:.2f} | {theirs / ours:.1f}x |",
            f"| Hugging Face warpers | {theirs * 1e3:.2f} | 1.0x |"]
    rows.append(f"Same output tensor: {r['same output']}.")
    return "\n".join(rows)
