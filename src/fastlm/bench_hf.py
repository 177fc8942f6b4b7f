"""Benchmarks of fastlm.hf (the `fastlm bench` group "Hugging Face"): one sampling step's processors
(temperature 0.7, top-k 50, top-p 0.9) on (8, 128256) float32 scores, fastlm's against Hugging Face's
own, same threads, each on a fresh copy of the same tensor; and batched beam search with a KV cache on a
tiny GPT-2, fastlm.beam_search + CausalLMStep against generate(num_beams=...), each side's own time per
step outside the model's forward."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def same_threads(threads: int) -> Iterator[None]:
    """torch and fastlm both on `threads` threads inside the block."""
    import torch

    from . import _config

    saved = torch.get_num_threads(), _config.get_num_threads()
    torch.set_num_threads(threads)
    _config.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        _config.set_num_threads(saved[1])


def run_processors(rows: int = 8, vocab: int = 128256, threads: int = 1, repeat: int = 20) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, vocab, generator=g) * 2
    ids = torch.randint(0, vocab, (rows, 16), generator=g)
    sides = {"fastlm.hf.processors": processors_under_test(), "Hugging Face warpers": hugging_face_warpers()}
    r: dict[str, Any] = {"shape": (rows, vocab), "threads": threads}
    with same_threads(threads):
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
    return r


def format_processors_table(r: dict[str, Any]) -> str:
    ours, theirs = r["fastlm.hf.processors"], r["Hugging Face warpers"]
    rows = [f"| processor step {r['shape'][0]}x{r['shape'][1]} float32 (T 0.7, top-k 50, top-p 0.9), "
            f"{r['threads']} thread(s) | ms | speed-up |", "|---|---|---|",
            f"| fastlm.hf.processors | {ours * 1e3:.2f} | {theirs / ours:.1f}x |",
            f"| Hugging Face warpers | {theirs * 1e3:.2f} | 1.0x |"]
    rows.append(f"Same output tensor: {r['same output']}.")
    return "\n".join(rows)


def tiny_gpt2(vocab: int = 50257) -> Any:
    """A 2-layer GPT-2 of width 64 with GPT-2's vocabulary, random weights (built from a config)."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(cfg).eval()


def run_beam(batch: int = 4, num_beams: int = 4, new_tokens: int = 32, prompt: int = 16, repeat: int = 5,
             threads: int = 1) -> dict[str, Any]:
    """Per step: wall time of the whole search and the time inside the model's forward (hooks), for
    fastlm.beam_search with CausalLMStep and for generate(num_beams=...), no EOS (every step runs), same
    threads; both return the same sequences."""
    import numpy as np
    import torch

    from . import decoding, hf

    model = tiny_gpt2()
    inside = [0.0, 0]

    def pre(*_: Any) -> None:
        inside.append(time.perf_counter())

    def post(*_: Any) -> None:
        inside[0] += time.perf_counter() - inside.pop()
        inside[1] += 1

    h1, h2 = model.register_forward_pre_hook(pre), model.register_forward_hook(post)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)

    def fastlm_side() -> Any:
        return decoding.beam_search(hf.CausalLMStep(model), ids.numpy(), num_beams=num_beams, max_new_tokens=new_tokens)

    def hf_side() -> Any:
        return model.generate(ids, attention_mask=mask, num_beams=num_beams, num_return_sequences=num_beams,
                              max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, top_k=None, top_p=None,
                              temperature=None)

    r: dict[str, Any] = {"batch": batch, "num_beams": num_beams, "steps": new_tokens, "vocab": model.config.vocab_size,
                         "threads": threads}
    try:
        with same_threads(threads):
            for label, fn in (("fastlm", fastlm_side), ("Hugging Face", hf_side)):
                best = None
                for _ in range(repeat + 1):  # (the first call warms up)
                    inside[0], inside[1] = 0.0, 0
                    t0 = time.perf_counter()
                    out = fn()
                    total = time.perf_counter() - t0
                    own = (total - inside[0]) / inside[1]
                    if best is None or own < best[0]:
                        best = (own, total / inside[1], inside[0] / inside[1])
                r[label] = best
                r[label + " output"] = out
            ours = np.array([seq for res in r.pop("fastlm output") for seq, _ in res])
            r["same sequences"] = bool(np.array_equal(ours, r.pop("Hugging Face output").numpy()))
    finally:
        h1.remove()
        h2.remove()
    return r


def format_beam_table(r: dict[str, Any]) -> str:
    ours, theirs = r["fastlm"], r["Hugging Face"]
    rows = [f"| beam search, {r['batch']} prompts x {r['num_beams']} beams, {r['steps']} steps, V = {r['vocab']}, "
            f"KV cache, {r['threads']} thread(s) | own ms per step | model ms per step | total ms per step |",
            "|---|---|---|---|",
            f"| fastlm.beam_search + CausalLMStep | {ours[0] * 1e3:.2f} | {ours[2] * 1e3:.2f} | {ours[1] * 1e3:.2f} |",
            f"| generate(num_beams=...) | {theirs[0] * 1e3:.2f} | {theirs[2] * 1e3:.2f} | {theirs[1] * 1e3:.2f} |"]
    rows.append(f"Own time per step (outside the model's forward): fastlm {theirs[0] / ours[0]:.1f}x less than "
                f"Hugging Face. Same sequences: {r['same sequences']}.")
    return "\n".join(rows)
