"""Type stub of the compiled module fastlm._kernels (src/fastlm/_kernels.pyx).

The wrappers take 2-D row views prepared by fastlm._arrays and re-check the layout, dtypes and lengths
that the C kernels rely on at run time; the stub only states that the arguments are ndarrays.
"""

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

SIMD_LEVELS: Final[tuple[str, str, str, str]]
REDUCTIONS: Final[dict[str, int]]
FILTERS: Final[tuple[str, str, str, str]]

_Floats = NDArray[np.floating[Any]]
_F64 = NDArray[np.float64]
_I64 = NDArray[np.int64]
_U64 = NDArray[np.uint64]

class RowError(ValueError):
    """A decoding kernel met an invalid row: .row is its flat index, .kind 'nan' or 'empty'."""

    row: int
    kind: str
    def __init__(self, row: int, kind: str) -> None: ...

def simd_compiled() -> list[str]: ...
def simd_supported() -> list[str]: ...
def simd_active() -> str: ...
def simd_select(name: str) -> None: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def logsumexp_rows(x: _Floats, inv_t: float, out: _F64, num_threads: int) -> None: ...
def softmax_rows(x: _Floats, y: _Floats, inv_t: float, log: bool, num_threads: int) -> None: ...
def xent_rows(
    x: _Floats,
    targets: _I64,
    weight: _F64 | None,
    weight_t: _Floats | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inv_t: float,
    row_loss: _F64,
    grad: _Floats | None,
    num_threads: int,
) -> tuple[float, float, int]: ...
def filter_rows(
    kind: str,
    x: _Floats,
    y: _Floats,
    param: NDArray[np.int64] | NDArray[np.float64],
    fill: float,
    min_keep: int,
    num_threads: int,
) -> None: ...
def top_k_top_p_rows(
    x: _Floats, y: _Floats, k: _I64, p: _F64, t: _F64, fill: float, min_keep: int, num_threads: int
) -> None: ...
def greedy_rows(x: _Floats, ids: _I64, num_threads: int) -> None: ...
def sample_rows(
    x: _Floats,
    temperature: _F64,
    top_k: _I64,
    top_p: _F64,
    min_p: _F64,
    seed: _U64,
    ids: _I64,
    num_threads: int,
) -> None: ...
def beam_step(x: _Floats, score: _F64, k: int, group: _I64) -> tuple[_I64, _I64, _F64]: ...
def ngram_count_windows(tokens: NDArray[np.uint32], starts: _I64, k: int, bits: int, lo: int = ...,
                        hi: int = ...) -> tuple[_U64, _I64]: ...
def ngram_prefixes(keys: _U64, counts: _I64, bits: int) -> tuple[_U64, _I64, _U64]: ...
def ngram_index(keys: _U64) -> tuple[int, _U64]: ...
def ngram_merge(keys: list[_U64], counts: list[_I64], remaps: list[_I64 | None],
                want_rank: bool = ...) -> tuple[_U64, _I64, list[_I64 | None]]: ...
def ngram_entries(keys: _U64, v0: ArrayLike | None, v1: ArrayLike | None) -> tuple[int, _U64]: ...
def ngram_count_ranks(tokens: NDArray[np.uint32], starts: _I64, k: int, live: NDArray[np.uint32],
                      rank: NDArray[np.uint32], scratch: _U64, nlive: int) -> tuple[_U64, _I64, int]: ...
def ngram_find(log2cap: int, slots: _U64, queries: _U64) -> _I64: ...
def kn_order(
    keys: _U64,
    unigrams: bool,
    a: _I64,
    pruned: NDArray[np.bool_] | None,
    d: tuple[float, float, float, float],
    suffix: _I64 | None,
    lower: _F64 | None,
    lower_uniform: float,
    contexts: int,
) -> tuple[_F64, _F64]: ...
def words_new() -> object: ...
def words_size(table: object) -> int: ...
def words_add(table: object, words: list[bytes]) -> None: ...
def words_encode(
    table: object,
    text: bytes,
    item_off: _I64,
    grow: bool,
    unknown: int,
    num_threads: int = 1,
    pre: Sequence[int] = (),
    post: int = -1,
) -> tuple[_I64, _I64]: ...
def words_export(table: object) -> tuple[bytes, _I64, _I64]: ...
def words_set_ids(table: object, ids: _I64) -> None: ...
def arpa_lines(
    ids: NDArray[np.uint32],
    prob: _F64,
    backoff: _F64 | None,
    real: NDArray[np.bool_] | None,
    words: bytes,
    word_off: _I64,
) -> memoryview: ...
def ngram_score(
    orders: Sequence[tuple[Any, ...]],
    add_alpha: bool,
    alpha: float,
    vocab: float,
    unigram_total: float,
    unseen: float,
    unk_word: int,
    tokens: NDArray[np.uint32],
    starts: _I64,
    skip: int,
    per_token: bool,
    num_threads: int,
) -> tuple[_F64, _I64, _F64 | None, NDArray[np.int32] | None, NDArray[np.bool_] | None]: ...
def entropy_rows(x: _Floats, out: _F64, num_threads: int) -> None: ...
def kl_rows(p: _Floats, q: _Floats, out: _F64, num_threads: int) -> None: ...
def rowmax(x: _Floats, out: _F64) -> None: ...
def temperature_stats(
    x: _Floats,
    y: _I64,
    xmax: _F64,
    beta: float,
    nll: _F64,
    g: _F64,
    v: _F64,
    num_threads: int,
) -> None: ...
ROW_STATS: np.dtype[Any]
def row_stats(x: _Floats) -> NDArray[Any]: ...
