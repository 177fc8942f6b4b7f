import numpy as np
import pytest

import fastlm
from fastlm import _kernels

LEVELS = _kernels.simd_supported()

# Vocabulary sizes bracketing every SIMD width (1/4/8/16 lanes, 4-vector unrolls) and the 2048-element
# blocks of the online log-sum-exp, plus real vocabularies.
SIZES = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 2047, 2048, 2049, 4097, 50257]

# Tolerances of the kernels against the float64 reference evaluated on the same (rounded) inputs.
RTOL = {np.float32: 2e-5, np.float64: 1e-12, np.float16: 2e-3}
ATOL = {np.float32: 2e-6, np.float64: 1e-13, np.float16: 2e-3}


@pytest.fixture(params=LEVELS)
def simd(request):
    """Run the test on one SIMD level (every level this machine supports), then restore the default."""
    previous = _kernels.simd_active()
    _kernels.simd_select(request.param)
    yield request.param
    _kernels.simd_select(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def logits_like(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def close(actual, expected, dtype, scale=1.0):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=RTOL[dtype],
                               atol=ATOL[dtype] * scale)


__all__ = ["fastlm", "LEVELS", "SIZES", "logits_like", "close"]
