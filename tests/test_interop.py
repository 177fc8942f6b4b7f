"""Inputs that are not ndarrays: torch tensors, objects with __dlpack__ or __array__ only.

A contiguous CPU input is read in place (the array the kernels see starts at the object's own data
pointer); other layouts are read as strided views and copied only when the kernels need it. Results
are compared with the float64 reference."""
import numpy as np
import pytest

import fastlm
from fastlm import _arrays, reference


class DLPackOnly:
    """An object exposing its memory through the DLPack protocol alone."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class ArrayOnly:
    """An object exposing itself through __array__ alone."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


def data_ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("wrap", [DLPackOnly, ArrayOnly], ids=["dlpack", "array"])
def test_protocol_objects_are_read_without_a_copy(wrap, rng):
    x = rng.standard_normal((5, 37)).astype(np.float32)
    y = rng.integers(0, 37, 5)
    assert data_ptr(_arrays.float_array(wrap(x), "logits")) == data_ptr(x)
    assert data_ptr(_arrays.int_array(wrap(y), "targets")) == data_ptr(y)
    np.testing.assert_allclose(fastlm.softmax(wrap(x)), reference.softmax(x), rtol=2e-5, atol=2e-7)
    np.testing.assert_allclose(fastlm.cross_entropy(wrap(x), wrap(y)), reference.cross_entropy(x, y), rtol=1e-5)
    np.testing.assert_array_equal(fastlm.greedy(wrap(x)), reference.greedy(x))


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 50, generator=g)
    y = torch.randint(0, 50, (6,), generator=g)
    assert data_ptr(_arrays.float_array(t, "logits")) == t.data_ptr()
    assert data_ptr(_arrays.int_array(y, "targets")) == y.data_ptr()
    x = t.numpy()
    np.testing.assert_allclose(fastlm.softmax(t), reference.softmax(x), rtol=2e-5, atol=2e-7)
    np.testing.assert_allclose(fastlm.cross_entropy(t, y), reference.cross_entropy(x, y.numpy()), rtol=1e-5)
    np.testing.assert_allclose(fastlm.top_p_filter(t, 0.7), reference.top_p_filter(x, 0.7), rtol=0, atol=0)
    # strided views (a transpose, a step) are read through their strides
    np.testing.assert_allclose(fastlm.softmax(t.T), reference.softmax(x.T), rtol=2e-5, atol=2e-7)
    np.testing.assert_allclose(fastlm.log_softmax(t[::2, 1::3]), reference.log_softmax(x[::2, 1::3]),
                               rtol=2e-5, atol=2e-6)
    # float64 and float16 tensors keep their dtype
    assert fastlm.softmax(t.double()).dtype == np.float64
    assert fastlm.softmax(t.half()).dtype == np.float16


def test_torch_tensors_that_cannot_be_read():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="logits .*Tensor.*gradient"):
        fastlm.cross_entropy(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="cannot be read as a CPU array"):
        fastlm.softmax(torch.randn(2, 3).bfloat16())
    # the documented way round: detach (no copy) or convert
    t = torch.randn(2, 3, requires_grad=True)
    np.testing.assert_allclose(fastlm.softmax(t.detach()), reference.softmax(t.detach().numpy()), rtol=2e-5)
