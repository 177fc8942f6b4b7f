"""Strategies and comparison helpers shared by the fuzz tests.

The fuzz tests call every public function with random shapes (empty and size-1 dims, V = 1), layouts
(transposed, negative strides, strided, read-only, byte-swapped), dtypes (float16/32/64 and wrong ones),
special values (NaN, +-inf, 1e30, 3e38, denormals) and valid or invalid options. The contract: the call
returns what the float64 reference returns (within float32 / float16 tolerances) or raises ValueError /
TypeError, and it raises exactly when the input is invalid (the reference raises, or the documented
validation rejects it). Each test checks one property of one function family; the function, dtype and
invalid option are pytest parameters, the data comes from hypothesis.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)

FLOATS = [np.float16, np.float32, np.float64]
WRONG_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.object_, np.complex64, np.complex128]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
COMPUTE = {np.float16: np.float32, np.float32: np.float32, np.float64: np.float64}
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -3e38, 1e-40, -1e-40, 5e-324, 0.0, -0.0]
OK_ERRORS = (ValueError, TypeError)

THREADS = [None, None, 1, 2]
BAD_THREADS = [0, -1, 1.5, "2", True]
TEMPS = [1.0, 1.0, 0.5, 2.0, 0.7, np.float32(1.5), 3]
BAD_TEMPS = [0.0, -1.0, np.nan, np.inf, 1e-31, "1", None, True, 1j]

# out= arguments: the valid kinds (None twice: the default is the common call) and the rejected ones
VALID_OUTS = ["none", "none", "fresh", "inplace", "strided", "byteswap"]
BAD_OUTS = ["shape", "dtype", "readonly", "list"]


def fuzz(max_examples):
    """The hypothesis settings of every fuzz test: reproducible (derandomized, no example database)."""
    return settings(max_examples=max_examples, **SETTINGS)


def fn_id(value):
    """A readable pytest id for a parameter value (repr keeps "2" and 2, None and nan apart)."""
    return getattr(value, "__name__", None) or repr(value)


# ----------------------------------------------------------------------------------------- outcomes

def outcome(fn, *args, **kwargs):
    """(True, result) or (False, exception) for ValueError / TypeError; anything else propagates."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return True, fn(*args, **kwargs)
    except OK_ERRORS as e:
        return False, e


def ref_outcome(fn, *args, **kwargs):
    """The reference's result, or the exception it raised (of any type: it does not validate)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return True, fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the reference signals bad data any way it happens to
        return False, e


def expect_error(fn, *args, **kwargs):
    ok, res = outcome(fn, *args, **kwargs)
    assert not ok, f"expected ValueError/TypeError, got {res!r}"


def expect_errors(call, cases):
    """call(case) raises ValueError / TypeError for every case (each bad value is tried on the same data)."""
    for case in cases:
        ok, res = outcome(call, case)
        assert not ok, f"{case!r} accepted: got {res!r}"


def expect_ok(fn, *args, **kwargs):
    """The result of a call that must succeed."""
    ok, res = outcome(fn, *args, **kwargs)
    assert ok, f"valid call raised {res!r}"
    return res


# ---------------------------------------------------------------------------------------- tolerance

def rounded(a, dtype):
    """a rounded to dtype (as the result of a computation in dtype would be), back in float64."""
    with np.errstate(all="ignore"):
        return np.asarray(a, np.float64).astype(dtype).astype(np.float64)


def assert_match(got, want, rtol, atol=0.0):
    """Same shape, same NaN and +-inf positions, finite entries within atol + rtol |want| (atol may be an
    array broadcast against want)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions differ")
    np.testing.assert_array_equal(got == np.inf, want == np.inf, err_msg="+inf positions differ")
    np.testing.assert_array_equal(got == -np.inf, want == -np.inf, err_msg="-inf positions differ")
    atol = np.broadcast_to(np.asarray(atol, np.float64), want.shape)
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    tol = atol[fin] + rtol * np.abs(want[fin])
    bad = ~(err <= tol)
    assert not bad.any(), (f"{int(bad.sum())} entries off: got {got[fin][bad][:5]}, want {want[fin][bad][:5]}, "
                           f"tol {tol[bad][:5]}")


def tols(dtype):
    """(rtol, atol) of a result computed in dtype's compute precision, then rounded to dtype."""
    return {np.float16: (3e-3, 1e-6), np.float32: (1e-4, 1e-5), np.float64: (1e-9, 1e-12)}[dtype]


def native(dt):
    """dt in native byte order (an out= array of either byte order is accepted)."""
    return np.dtype(dt).newbyteorder("=")


def eps_of(dtype):
    return float(np.finfo(COMPUTE[dtype]).eps)


def finite_max(x, axis=-1):
    """Per slice, max |x| over finite entries (0 for none), float64."""
    x = np.asarray(x, np.float64)
    return np.max(np.where(np.isfinite(x), np.abs(x), 0.0), axis=axis, initial=0.0)


def overflows(x, temperature, dtype):
    """Whether x / T leaves the compute dtype's range for some finite x (documented: float32 in float32)."""
    return finite_max(x, axis=None) / temperature > np.finfo(COMPUTE[dtype]).max / 4


def row_invalid(x64):
    """Whether some row holds NaN or no logit above -inf (decoding raises on such rows)."""
    x2 = x64.reshape(math.prod(x64.shape[:-1]), x64.shape[-1])
    return bool(np.isnan(x2).any() or (~(x2 > -np.inf).any(axis=1)).any()) if x2.shape[0] else False


def spoil_row(x64, kind, rng):
    """x64 with one row made invalid for decoding: a NaN in it ("nan") or every logit -inf ("-inf")."""
    x2 = x64.reshape(-1, x64.shape[-1]).copy()
    r = rng.integers(0, x2.shape[0])
    if kind == "nan":
        x2[r, rng.integers(0, x2.shape[1])] = np.nan
    else:
        x2[r] = -np.inf
    return x2.reshape(x64.shape)


# ----------------------------------------------------------------------------------------- strategies

@st.composite
def float_data(draw, shape, dtype, grid=None, specials=True):
    """A float array of shape and dtype: a grid of multiples of 0.5 (exact ties, no near-ties) or normal
    values, with special values sprinkled in."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = draw(st.booleans()) if grid is None else grid
    if grid:
        x = rng.integers(-8, 9, size=shape) * 0.5
    else:
        x = rng.standard_normal(shape) * draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    if specials and x.size and draw(st.booleans()):
        n = draw(st.integers(1, max(1, x.size // 2)))
        pos = rng.integers(0, x.size, n)
        vals = draw(st.lists(st.sampled_from(SPECIALS), min_size=1, max_size=4))
        x.reshape(-1)[pos] = rng.choice(np.array(vals), n)
    with np.errstate(all="ignore"):
        return x.astype(dtype)


def unaligned_copy(a):
    """The same values at an odd byte offset."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    b = np.frombuffer(buf[1:].data, dtype=a.dtype, count=a.size).reshape(a.shape)
    if b.size:
        b[...] = a
    return b


def strided_copy(a, i):
    """The same values, every other element along axis i of a twice as large buffer."""
    shape = list(a.shape)
    shape[i] *= 2
    big = np.zeros(shape, a.dtype)
    idx = [slice(None)] * a.ndim
    idx[i] = slice(None, None, 2)
    big[tuple(idx)] = a
    return big[tuple(idx)]


def readonly_copy(a):
    b = a.copy()
    b.setflags(write=False)
    return b


@st.composite
def relayout(draw, a):
    """An array equal to a with another memory layout (or flags)."""
    kind = draw(st.sampled_from(["c", "c", "f", "swap", "flip", "step", "readonly", "byteswap", "unaligned"]))
    if a.ndim == 0 or kind == "c":
        return a.copy()
    i = draw(st.integers(0, a.ndim - 1))
    j = draw(st.integers(0, a.ndim - 1)) if kind == "swap" else i
    return {
        "f": lambda: np.asfortranarray(a),
        "swap": lambda: np.swapaxes(np.ascontiguousarray(np.swapaxes(a, i, j)), i, j),
        "flip": lambda: np.flip(np.ascontiguousarray(np.flip(a, i)), i),
        "step": lambda: strided_copy(a, i),
        "readonly": lambda: readonly_copy(a),
        "byteswap": lambda: a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<")),
        "unaligned": lambda: unaligned_copy(a),
    }[kind]()


def shapes(min_dims=1, max_dims=3, max_side=5, max_v=40, vs=None):
    """(leading dims..., V): leading sides in [0, max_side], V from vs (default: bracketing SIMD widths)."""
    lead = st.lists(st.integers(0, max_side), min_size=min_dims - 1, max_size=max_dims - 1)
    V = st.sampled_from(vs if vs is not None else [0, 1, 1, 2, 3, 7, 8, 9, 17, max_v])
    return st.tuples(lead, V).map(lambda t: tuple(t[0]) + (t[1],))


@st.composite
def logits_input(draw, shape=None, dtypes=FLOATS, **kw):
    """(array passed to fastlm, float64 copy of its values, dtype)."""
    shape = draw(shapes(**kw)) if shape is None else shape
    dtype = draw(st.sampled_from(dtypes))
    x = draw(float_data(shape, dtype))
    return draw(relayout(x)), x.astype(np.float64), dtype


def decodable(x64):
    """Whether decoding accepts these logits: no NaN or all -inf row, and no row of V = 0."""
    return not row_invalid(x64) and not (x64.shape[-1] == 0 and math.prod(x64.shape[:-1]) > 0)


@st.composite
def decoding_input(draw, dtypes=FLOATS, **kw):
    """logits_input whose rows decoding accepts."""
    return draw(logits_input(dtypes=dtypes, **kw).filter(lambda t: decodable(t[1])))


@st.composite
def spoiled_input(draw, kind, dtypes=FLOATS, **kw):
    """(x, x64, dtype) with a row decoding rejects: one holding NaN ("nan"), only -inf ("-inf"), or rows
    of V = 0 ("empty")."""
    if kind == "empty":
        lead = draw(st.lists(st.integers(1, 5), min_size=0, max_size=kw.get("max_dims", 3) - 1))
        x = np.zeros(tuple(lead) + (0,), draw(st.sampled_from(dtypes)))
        return x, x.astype(np.float64), x.dtype.type
    shape = draw(shapes(max_side=5, vs=[1, 2, 3, 7, 8, 9, 17, kw.get("max_v", 40)]).filter(
        lambda s: math.prod(s) > 0))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x64 = spoil_row(draw(float_data(shape, dtype)).astype(np.float64), kind, rng)
    return draw(relayout(x64.astype(dtype))), x64, dtype


def make_out(kind, x, shape, dtype):
    """(out argument, in_place?) of one kind (VALID_OUTS, BAD_OUTS) for a result of shape and dtype
    computed from x. "inplace" is x itself where x can hold the result (else None)."""
    if kind == "none":
        return None, False
    if kind == "inplace":
        fits = isinstance(x, np.ndarray) and x.dtype == dtype and x.shape == shape and x.flags.writeable
        return (x, True) if fits else (None, False)
    other = np.float64 if dtype != np.float64 else np.float32
    return {
        "fresh": lambda: np.full(shape, 7, dtype),
        "strided": lambda: np.full(tuple(2 * n for n in shape), 7, dtype)[tuple(slice(None, None, 2) for _ in shape)],
        "byteswap": lambda: np.empty(shape, np.dtype(dtype).newbyteorder(">")),
        "shape": lambda: np.empty(shape + (1,), dtype),
        "dtype": lambda: np.empty(shape, other),
        "readonly": lambda: readonly_copy(np.empty(shape, dtype)),
        "list": lambda: np.empty(shape, dtype).tolist(),
    }[kind](), False


@st.composite
def valid_out(draw, x, shape, dtype):
    """(out argument, in_place?) of a valid kind."""
    return make_out(draw(st.sampled_from(VALID_OUTS)), x, shape, dtype)


def check_result(res, x, dtype, in_place):
    """An array result of x's shape in dtype (either byte order), x itself when computed in place."""
    assert isinstance(res, np.ndarray) and res.shape == x.shape and native(res.dtype) == dtype
    if in_place:
        assert res is x


@st.composite
def per_row(draw, lead, valid_values, integer=False):
    """(value, values per row as float64 array): a scalar or an array of the leading shape."""
    kind = draw(st.sampled_from(["scalar", "scalar", "array"]))
    if kind == "scalar":
        v = draw(st.sampled_from(valid_values))
        return v, np.full(lead, v, np.float64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = np.asarray(rng.choice(np.array(valid_values, dtype=np.float64), size=lead))
    if integer:
        arr = arr.astype(np.int64)
    return arr, arr.astype(np.float64)


def bad_per_row(lead, integer=False):
    """Per-row arguments of a wrong shape or dtype (str, bool, complex, object; float for an integer one)."""
    return [np.zeros(tuple(lead) + (2,), np.int64 if integer else np.float64), np.array("a"), np.array(True),
            np.array(1 + 1j), np.array([None] * 1).reshape(())] + ([np.array(1.5)] if integer else [])
