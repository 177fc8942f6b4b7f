"""Hugging Face transformers adapters (``pip install fastlm[hf]``): LogitsProcessor classes that run
fastlm's decoding kernels inside ``model.generate``, and a processor that makes ``generate`` draw with
fastlm's reproducible sampler.

Each processor takes Hugging Face's parameter names and validates them as Hugging Face does (same
ValueError messages), and works in place on CPU score tensors of float32, float16 or bfloat16, raw logits
or log-probabilities (beam search passes log_softmax; the filters only depend on differences of scores).
float32 and float16 scores are filtered through a NumPy view of the tensor; bfloat16 scores are read as
float32 (exactly) and the removed entries are written back.

Exactness: fastlm ranks tokens and accumulates probability in float64 (csrc/README.md, "Top-p"), so its
kept set is the exact one for the scores given. Hugging Face's top-p, min-p and typical accumulate
softmax in the scores' dtype (float32 in ``generate``), so the two can differ only for a token whose
cumulative probability is within float32 rounding (about 1e-7 relative) of the threshold; top-k,
temperature, the penalties and the bias are identical.

``processors(...)`` builds the list in the order ``generate`` applies its own: sequence bias, repetition
penalty, then (sampling) temperature, top-k, top-p, min-p, typical. Pass it with Hugging Face's own
warpers off (``top_k=0, top_p=1.0, temperature=1.0``), or with ``sample=True`` and ``do_sample=False``
to draw with fastlm's sampler: ``SampleProcessor`` leaves only the drawn token finite, so greedy
selection returns it. Its draw for batch row r at a step depends only on (seed, the sequence length,
r, the row's scores): reproducible across runs, batch compositions and thread counts.

``CausalLMStep(model)`` runs a causal LM under ``fastlm.beam_search`` with its KV cache (the prompts once,
then one token per beam and step).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from . import decoding

__all__ = ["TopKProcessor", "TopPProcessor", "TopKTopPProcessor", "MinPProcessor", "TypicalProcessor", "TemperatureProcessor",
           "RepetitionPenaltyProcessor", "LogitBiasProcessor", "SampleProcessor", "processors", "CausalLMStep"]


def _check_scores(scores: Any) -> None:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise TypeError(f"scores must be a 2-D torch tensor (batch, vocab), got {type(scores).__name__}"
                        f"{'' if not isinstance(scores, torch.Tensor) else f' of shape {tuple(scores.shape)}'}")
    if scores.device.type != "cpu":
        raise ValueError(f"fastlm.hf processors run on CPU tensors; scores are on {scores.device}")
    if scores.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"scores must be float32, float16 or bfloat16, got {scores.dtype}")


def _filter_in_place(scores: torch.Tensor, fn: Any) -> torch.Tensor:
    """scores with fn(x, out) applied in place: through a NumPy view (float32 / float16, contiguous), else
    through a float32 copy written back (bfloat16 values convert to float32 and back exactly; a computed
    value is rounded once, as torch's bfloat16 arithmetic rounds its float32 result)."""
    _check_scores(scores)
    if scores.dtype != torch.bfloat16 and scores.is_contiguous():
        x = scores.numpy()
        fn(x, x)
        return scores
    x = scores.to(torch.float32).contiguous().numpy()
    fn(x, x)
    return scores.copy_(torch.from_numpy(x))


def _positive_int(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` has to be a {what}, but is {value}")
    return int(value)


def _keep(min_tokens_to_keep: Any) -> int:
    return _positive_int(min_tokens_to_keep, "min_tokens_to_keep", "positive integer")


def _fill(filter_value: Any) -> float:
    if isinstance(filter_value, bool) or not isinstance(filter_value, numbers.Real) or math.isnan(filter_value):
        raise TypeError(f"filter_value must be a real number (-inf allowed), got {filter_value!r}")
    return float(filter_value)


class TopKProcessor(LogitsProcessor):
    """Hugging Face's TopKLogitsWarper: keep the max(top_k, min_tokens_to_keep) highest scores and every
    score tied with the last of them; the rest get filter_value."""

    top_k: int
    filter_value: float

    def __init__(self, top_k: int, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        self.top_k = max(_positive_int(top_k, "top_k", "strictly positive integer"), _keep(min_tokens_to_keep))
        self.filter_value = _fill(filter_value)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return _filter_in_place(scores, lambda x, out: decoding.top_k_filter(
            x, self.top_k, filter_value=self.filter_value, out=out))


class _MassFilter(LogitsProcessor):
    """A filter with one real parameter (Hugging Face's name `param`, valid where ok(value), else ValueError
    with Hugging Face's message), filter_value and min_tokens_to_keep, run by fastlm's `kernel`."""

    param: str
    message: str
    kernel: Any  # fastlm's filter (logits, value, *, min_tokens_to_keep, filter_value, out)
    value: float
    min_tokens_to_keep: int
    filter_value: float

    def __init__(self, value: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not self.ok(float(value)):
            raise ValueError(self.message.format(value))
        self.value = float(value)  # (also under Hugging Face's name)
        setattr(self, self.param, self.value)
        self.min_tokens_to_keep = _keep(min_tokens_to_keep)
        self.filter_value = _fill(filter_value)

    @staticmethod
    def ok(v: float) -> bool:
        raise NotImplementedError

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return _filter_in_place(scores, lambda x, out: self.kernel(
            x, self.value, min_tokens_to_keep=self.min_tokens_to_keep, filter_value=self.filter_value, out=out))


class TopPProcessor(_MassFilter):
    """Hugging Face's TopPLogitsWarper(top_p, filter_value, min_tokens_to_keep): keep the smallest set of
    highest-probability tokens whose mass reaches top_p (at least min_tokens_to_keep); fastlm's exact
    float64 accumulation."""

    param, message = "top_p", "`top_p` has to be a float > 0 and < 1, but is {}"
    ok = staticmethod(lambda v: 0 <= v <= 1)
    kernel = staticmethod(decoding.top_p_filter)

    def __init__(self, top_p: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(top_p, filter_value, min_tokens_to_keep)


class MinPProcessor(_MassFilter):
    """Hugging Face's MinPLogitsWarper(min_p, filter_value, min_tokens_to_keep): remove tokens whose
    probability is below min_p times the top token's (at least min_tokens_to_keep stay)."""

    param, message = "min_p", "`min_p` has to be a float in the [0, 1] interval, but is {}"
    ok = staticmethod(lambda v: 0 <= v <= 1)
    kernel = staticmethod(decoding.min_p_filter)

    def __init__(self, min_p: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_p, filter_value, min_tokens_to_keep)


class TypicalProcessor(_MassFilter):
    """Hugging Face's TypicalLogitsWarper(mass=0.9, filter_value, min_tokens_to_keep): locally typical
    sampling."""

    param, message = "mass", "`typical_p` has to be a float > 0 and < 1, but is {}"
    ok = staticmethod(lambda v: 0 < v < 1)
    kernel = staticmethod(decoding.typical_filter)

    def __init__(self, mass: float = 0.9, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(mass, filter_value, min_tokens_to_keep)


class TemperatureProcessor(LogitsProcessor):
    """Hugging Face's TemperatureLogitsWarper: scores / temperature, in place (the same float operation)."""

    temperature: float

    def __init__(self, temperature: float) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
            raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your "
                             f"next token scores will be invalid.")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        _check_scores(scores)
        return scores.div_(self.temperature)


class TopKTopPProcessor(LogitsProcessor):
    """Hugging Face's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper applied in that order,
    fused in one pass (fastlm.top_k_top_p_filter): what processors() gives for top_k with top_p."""

    top_k: int
    top_p: float
    temperature: float
    min_tokens_to_keep: int
    filter_value: float

    def __init__(self, top_k: int, top_p: float, temperature: float = 1.0, filter_value: float = -math.inf,
                 min_tokens_to_keep: int = 1) -> None:
        self.top_k = TopKProcessor(top_k).top_k
        self.top_p = TopPProcessor(top_p).value
        self.temperature = TemperatureProcessor(temperature).temperature
        self.min_tokens_to_keep = _keep(min_tokens_to_keep)
        self.filter_value = _fill(filter_value)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return _filter_in_place(scores, lambda x, out: decoding.top_k_top_p_filter(
            x, self.top_k, self.top_p, temperature=self.temperature, min_tokens_to_keep=self.min_tokens_to_keep,
            filter_value=self.filter_value, out=out))


class RepetitionPenaltyProcessor(LogitsProcessor):
    """Hugging Face's RepetitionPenaltyLogitsProcessor (`penalty`, once per distinct token of input_ids after
    the first prompt_ignore_length; score < 0 ? score * penalty : score / penalty), then OpenAI's presence
    and frequency penalties (score - frequency_penalty * count - presence_penalty * [count > 0]), as
    fastlm.apply_penalties."""

    penalty: float
    prompt_ignore_length: int | None
    presence_penalty: float
    frequency_penalty: float

    def __init__(self, penalty: float = 1.0, prompt_ignore_length: int | None = None, *,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> None:
        if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        if prompt_ignore_length is not None and (isinstance(prompt_ignore_length, bool) or not isinstance(
                prompt_ignore_length, numbers.Integral) or prompt_ignore_length < 0):
            raise ValueError(f"`prompt_ignore_length` has to be a positive integer, but is {prompt_ignore_length}")
        for name, v in (("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"`{name}` has to be a finite float, but is {v}")
        self.penalty = float(penalty)
        self.prompt_ignore_length = prompt_ignore_length
        self.presence_penalty, self.frequency_penalty = float(presence_penalty), float(frequency_penalty)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        history = input_ids[:, self.prompt_ignore_length or 0:].numpy()
        history = np.where(history < scores.shape[-1], history, -1)  # (ids past the head's vocab: never drawn)
        return _filter_in_place(scores, lambda x, out: decoding.apply_penalties(
            x, history, repetition_penalty=self.penalty, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, out=out))


class LogitBiasProcessor(LogitsProcessor):
    """Hugging Face's SequenceBiasLogitsProcessor: sequence_bias {tuple of ids: bias} or [[ids, bias], ...];
    a one-token sequence biases that token always, a longer one biases its last token when the other ids
    end input_ids."""

    def __init__(self, sequence_bias: Any) -> None:
        items = list(sequence_bias.items()) if isinstance(sequence_bias, dict) else sequence_bias
        ok = isinstance(items, (list, tuple)) and len(items) > 0
        pairs: list[tuple[tuple[int, ...], float]] = []
        for it in items if ok else []:
            seq, bias = (it[0], it[1]) if isinstance(it, (list, tuple)) and len(it) == 2 else (None, None)
            if not (isinstance(seq, (list, tuple)) and seq and all(
                    isinstance(t, numbers.Integral) and not isinstance(t, bool) and int(t) >= 0 for t in seq)
                    and isinstance(bias, numbers.Real) and not isinstance(bias, bool)):
                ok = False
                break
            pairs.append((tuple(int(t) for t in seq), float(bias)))
        if not ok:
            raise ValueError(f"Each element in `sequence_bias` has to be a non-empty list of lists of positive "
                             f"integers and float, but is {sequence_bias}.")
        self.sequence_bias = pairs
        single = [(s[0], b) for s, b in pairs if len(s) == 1]
        self._single = (np.array([s for s, _ in single], np.int64), np.array([b for _, b in single], np.float64))
        self._multi = [(s, b) for s, b in pairs if len(s) > 1]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        _check_scores(scores)
        V = scores.shape[-1]
        bad = [s for s, _ in self.sequence_bias if s[-1] >= V]
        if bad:
            raise ValueError(f"sequence_bias {list(bad[0])} ends in a token id >= the vocabulary size {V}")
        bias = torch.zeros(scores.shape, dtype=torch.float32)
        if self._single[0].size:
            b = np.zeros(V, np.float64)
            np.add.at(b, self._single[0], self._single[1])
            bias += torch.from_numpy(b.astype(np.float32))
        for seq, value in self._multi:
            n = len(seq) - 1
            if input_ids.shape[1] >= n:
                match = (input_ids[:, -n:] == torch.tensor(seq[:-1])).all(dim=1)
                bias[match, seq[-1]] += value
        return scores.add_(bias.to(scores.dtype))


class SampleProcessor(LogitsProcessor):
    """Draws the next token with fastlm.sample (temperature -> top-k -> top-p -> min-p, fused) and leaves
    only it finite (0; every other score -inf), so that ``generate(do_sample=False)`` returns it. The draw
    for batch row r is seeded by (seed, sequence length, r): see the module docstring."""

    seed: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float

    def __init__(self, *, seed: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"`seed` has to be an integer in [0, 2^63), but is {seed}")
        decoding.sample(np.zeros((1, 2)), temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=0)
        self.seed, self.temperature, self.top_k, self.top_p, self.min_p = int(seed), temperature, top_k, top_p, min_p

    def step_seed(self, length: int) -> int:
        """The seed of the draws at sequence length `length` (a 64-bit mix of seed and length)."""
        z = (self.seed * 0x9E3779B97F4A7C15 + length * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z ^= z >> 31
        return (z * 0x94D049BB133111EB & (2**64 - 1)) >> 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        _check_scores(scores)
        x = scores.to(torch.float32).numpy() if scores.dtype == torch.bfloat16 else scores.numpy()
        ids = decoding.sample(x, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                              seed=self.step_seed(int(input_ids.shape[1])))
        scores.fill_(-math.inf)
        scores[torch.arange(scores.shape[0]), torch.from_numpy(np.asarray(ids).reshape(-1))] = 0.0
        return scores


def processors(*, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
               min_p: float | None = None, typical_p: float | None = None, repetition_penalty: float | None = None,
               presence_penalty: float = 0.0, frequency_penalty: float = 0.0, sequence_bias: Any = None,
               min_tokens_to_keep: int = 1, sample: bool = False, seed: int | None = None) -> Any:
    """A transformers LogitsProcessorList of fastlm processors in ``generate``'s order (see the module
    docstring); options left None (or neutral: temperature 1, top_k 0, top_p 1) add nothing. top_k with
    top_p (and temperature) become one TopKTopPProcessor.

    sample=True ends the list with SampleProcessor(seed=...) holding temperature, top_k, top_p and min_p
    (use it with do_sample=False); typical_p is then applied before the draw."""
    from transformers import LogitsProcessorList

    out: list[LogitsProcessor] = []
    if sequence_bias is not None:
        out.append(LogitBiasProcessor(sequence_bias))
    if (repetition_penalty not in (None, 1.0)) or presence_penalty or frequency_penalty:
        out.append(RepetitionPenaltyProcessor(1.0 if repetition_penalty is None else repetition_penalty,
                                              presence_penalty=presence_penalty, frequency_penalty=frequency_penalty))
    if sample:
        if seed is None:
            raise ValueError("sample=True needs a seed (an integer: the draws are reproducible)")
        if typical_p is not None and typical_p < 1.0:
            out.append(TypicalProcessor(typical_p, min_tokens_to_keep=min_tokens_to_keep))
        out.append(SampleProcessor(seed=seed, temperature=1.0 if temperature is None else temperature,
                                   top_k=top_k or 0, top_p=1.0 if top_p is None else top_p,
                                   min_p=0.0 if min_p is None else min_p))
        return LogitsProcessorList(out)
    t = 1.0 if temperature is None else temperature
    if top_k and top_p is not None and top_p < 1.0:  # the three warpers in one pass
        out.append(TopKTopPProcessor(top_k, top_p, t, min_tokens_to_keep=min_tokens_to_keep))
    else:
        if t != 1.0:
            out.append(TemperatureProcessor(t))
        if top_k is not None and top_k != 0:
            out.append(TopKProcessor(top_k, min_tokens_to_keep=min_tokens_to_keep))
        if top_p is not None and top_p < 1.0:
            out.append(TopPProcessor(top_p, min_tokens_to_keep=min_tokens_to_keep))
    if min_p is not None:
        out.append(MinPProcessor(min_p, min_tokens_to_keep=min_tokens_to_keep))
    if typical_p is not None and typical_p < 1.0:
        out.append(TypicalProcessor(typical_p, min_tokens_to_keep=min_tokens_to_keep))
    return LogitsProcessorList(out)



class CausalLMStep:
    """A transformers causal LM as ``fastlm.beam_search``'s cached step (fastlm.decoding.CachedStep).

    start() runs the left-padded prompts once, with position ids counted over the attention mask as
    ``generate`` counts them (padding at 0), and keeps the model's cache; step() reorders the cache and
    the mask by beam_idx (``cache.reorder_cache``, as ``generate``'s beam search does) and runs only the
    new token of each beam. Returns the last position's logits as float32 NumPy arrays. ``model_seconds``
    accumulates the time spent inside the model's forward (the rest of a search is fastlm's own)."""

    def __init__(self, model: Any) -> None:
        import inspect

        self.model = model
        # the cache's argument and output name: "cache" in recent transformers, "past_key_values" before
        self._cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.model_seconds = 0.0

    def _forward(self, **kw: Any) -> np.ndarray:
        import time

        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model(use_cache=True, **kw)
        self.model_seconds += time.perf_counter() - t0
        self.cache = getattr(out, self._cache_name)
        return out.logits[:, -1].to(torch.float32).numpy()

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.mask = torch.from_numpy(np.ascontiguousarray(attention_mask, np.int64))
        pos = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)
        return self._forward(input_ids=torch.from_numpy(np.ascontiguousarray(input_ids, np.int64)),
                             attention_mask=self.mask, position_ids=pos)

    def step(self, tokens: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
        if self.mask is None:
            raise RuntimeError("CausalLMStep.step() before start()")
        idx = torch.from_numpy(np.ascontiguousarray(beam_idx, np.int64))
        self.cache.reorder_cache(idx)
        self.mask = torch.cat([self.mask[idx], torch.ones((idx.numel(), 1), dtype=self.mask.dtype)], dim=1)
        pos = self.mask.sum(-1, keepdim=True) - 1
        return self._forward(input_ids=torch.from_numpy(np.ascontiguousarray(tokens, np.int64))[:, None],
                             attention_mask=self.mask, position_ids=pos, **{self._cache_name: self.cache})
