"""fastlm: fused C kernels for language-model probability math, with a NumPy API.

softmax / log_softmax / logsumexp, cross_entropy and its gradient, token log-probabilities.
Every function has a pure-NumPy float64 twin in fastlm.reference, the executable specification.
"""

__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from .losses import cross_entropy, cross_entropy_with_grad, token_logprobs  # noqa: E402
from .softmax import log_softmax, logsumexp, softmax  # noqa: E402

__all__ = [
    "__version__",
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
    "token_logprobs",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
