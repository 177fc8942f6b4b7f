"""fastlm: fused C kernels for language-model probability math, with a NumPy API.

softmax / log_softmax / logsumexp, cross_entropy and its gradient, token log-probabilities, and
decoding: top-k / top-p / min-p / typical filters, penalties, the fused sampler, beam search.
Every function has a pure-NumPy float64 twin in fastlm.reference, the executable specification.
"""

__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from .decoding import (  # noqa: E402
    apply_logit_bias,
    apply_penalties,
    beam_search,
    cfg_mix,
    greedy,
    mask_tokens,
    min_p_filter,
    sample,
    top_k_filter,
    top_k_top_p_filter,
    top_p_filter,
    typical_filter,
)
from . import calibration, ngram  # noqa: E402
from .linear import linear_cross_entropy, linear_cross_entropy_with_grad  # noqa: E402
from .losses import cross_entropy, cross_entropy_with_grad, token_logprobs  # noqa: E402
from .metrics import (  # noqa: E402
    bits_per_byte,
    bits_per_token,
    byte_perplexity,
    causal_targets,
    choose,
    entropy,
    kl_divergence,
    loglikelihood,
    perplexity,
    rolling_windows,
    score_continuations,
    sequence_logprob,
    word_perplexity,
)
from .softmax import log_softmax, logsumexp, softmax  # noqa: E402

__all__ = [
    "__version__",
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
    "token_logprobs",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "top_k_filter",
    "top_p_filter",
    "min_p_filter",
    "typical_filter",
    "top_k_top_p_filter",
    "apply_penalties",
    "apply_logit_bias",
    "mask_tokens",
    "cfg_mix",
    "greedy",
    "sample",
    "beam_search",
    "entropy",
    "kl_divergence",
    "perplexity",
    "bits_per_token",
    "bits_per_byte",
    "byte_perplexity",
    "word_perplexity",
    "sequence_logprob",
    "choose",
    "rolling_windows",
    "causal_targets",
    "score_continuations",
    "loglikelihood",
    "calibration",
    "ngram",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
