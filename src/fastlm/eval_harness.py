"""An lm-evaluation-harness model for fastlm's n-gram models (``pip install lm-eval``): importing this module
registers ``"fastlm-ngram"``, so that ``lm_eval.simple_evaluate(model="fastlm-ngram",
model_args="path=model.bin", tasks=[...])`` evaluates a fastlm model or an ARPA file (fastlm.ngram.load).

The requests, as the harness defines them, on a model of whitespace words (or bytes):
- ``loglikelihood(context, continuation)``: the natural log probability of the continuation's tokens
  after the context's (context and continuation encoded separately: the harness gives the continuation
  its leading space; the model's BOS padding before the context), and is_greedy: every continuation
  token is the argmax of P(. | its history) over every id but BOS (the lowest id on ties; BOS is never
  predicted, and lmplz stores log10 p(<s>) = 0 for it), as next_token_distribution. All requests are scored in one
  C call (full_scores); is_greedy reads every id's probability at each continuation position.
- ``loglikelihood_rolling(text)``: the model's log probability of the whole text (score_batch: BOS
  context, EOS predicted, as KenLM scores a sentence); no window is needed, an n-gram model reads only
  its last n - 1 tokens.
- ``generate_until(context, until, max_gen_toks)``: the model's seeded sampler (seed 0, or
  ``model_args="path=...,seed=N"``), cut at the first stop string.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from . import ngram

__all__ = ["NgramHarnessLM"]


@register_model("fastlm-ngram")
class NgramHarnessLM(LM):
    """lm-evaluation-harness's LM interface over an NgramLM or ArpaLM with a vocabulary (see the module
    docstring). path: a model file; or model: the model object."""

    def __init__(self, path: str | None = None, model: Any = None, seed: int | str = 0, **_: Any) -> None:
        super().__init__()
        if (path is None) == (model is None):
            raise ValueError("give one of path (a fastlm model or ARPA file) or model")
        self.lm = ngram.load(path) if path is not None else model
        if getattr(self.lm, "vocab", None) is None:
            raise ValueError("the model has no vocabulary: lm-evaluation-harness passes text")
        if self.lm.bos_id is None:
            raise ValueError("the model has no BOS id: the harness's contexts start sentences")
        self.seed = int(seed)

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        flat, lengths = self.lm.vocab.encode_many(texts)
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(texts) else []

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        if not requests:
            return []
        ctx = self._encode([r.args[0] for r in requests])
        cont = self._encode([r.args[1] for r in requests])
        fs = self.lm.full_scores([np.concatenate([a, b]) for a, b in zip(ctx, cont)])
        lo = fs.offsets[:-1] + np.array([a.size for a in ctx])  # each continuation's first token
        sums = [float(fs.logprob[s:s + b.size].sum()) for s, b in zip(lo, cont)]
        return list(zip(sums, self._greedy(ctx, cont)))

    def _greedy(self, ctx: list[np.ndarray], cont: list[np.ndarray], chunk: int = 1 << 20) -> list[bool]:
        """Per request: every continuation token is the argmax of P(. | its last n - 1 tokens, BOS-padded),
        the lowest id on ties; every id's probability at every position, in chunks of C calls."""
        c, V = max(self.lm.order - 1, 0), len(self.lm.vocab)
        pad = np.full(c, self.lm.bos_id if self.lm.bos_id is not None else 0, np.int64)
        hists, want, owner = [], [], []
        for r, (a, b) in enumerate(zip(ctx, cont)):
            h = np.concatenate([pad, a, b])
            for j in range(b.size):  # (the histories of the positions; the scoring below is vectorized)
                end = pad.size + a.size + j
                hists.append(h[end - c:end])
                want.append(b[j])
                owner.append(r)
        ok = np.ones(len(ctx), bool)
        if not hists:
            return ok.tolist()
        H = np.array(hists, np.int64).reshape(len(hists), c)
        per = max(1, chunk // V)
        for s in range(0, H.shape[0], per):
            h = H[s:s + per]
            lp = self.lm.logprob_of(np.tile(np.arange(V), h.shape[0]), np.repeat(h, V, axis=0)).reshape(-1, V)
            lp[:, self.lm.bos_id] = -np.inf  # (never predicted: lmplz's <s> holds log10 p = 0 by convention)
            miss = np.argmax(lp, axis=1) != np.asarray(want[s:s + per])
            ok[np.asarray(owner[s:s + per])[miss]] = False
        return ok.tolist()

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        if not requests:
            return []
        return [float(v) for v in self.lm.score_batch([r.args[0] for r in requests]).logprob]

    def generate_until(self, requests: list[Any]) -> list[str]:
        out = []
        for r in requests:
            context, kwargs = r.args[0], dict(r.args[1]) if len(r.args) > 1 else {}
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if not hasattr(self.lm, "generate"):
                raise ValueError("generate_until needs a fastlm model (NgramLM), not an ARPA file's")
            text = self.lm.generate(context, int(kwargs.get("max_gen_toks", 64)), seed=self.seed)
            text = text[len(context):] if text.startswith(context) else text
            cut = min([text.find(u) for u in until if u and u in text] or [len(text)])
            out.append(text[:cut])
        return out
