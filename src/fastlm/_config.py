"""Process-wide settings: SIMD level (FASTLM_SIMD) and the default number of threads."""

from __future__ import annotations

import os
import warnings
from typing import Any

from . import _kernels

__all__ = ["set_num_threads", "get_num_threads", "show_config"]


def _default_threads() -> int:
    for var in ("FASTLM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and 0 < int(value) <= 2**31 - 1:  # a positive C int; else ignored, as a typo
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


def set_num_threads(n: int) -> None:
    """Set the default number of threads of kernel-backed functions (their ``num_threads=None``).

    The default is FASTLM_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may use.
    Results do not depend on it: every reduction has a fixed order.
    """
    global _num_threads
    _num_threads = check_threads(n, "n")


def get_num_threads() -> int:
    """The default number of threads (see set_num_threads)."""
    return _num_threads


def check_threads(n: object, name: str = "num_threads") -> int:
    from ._arrays import C_INT_MAX, integer

    return integer(n, name, lambda v: v >= 1, ">= 1", hi=C_INT_MAX, kind="a C int")


def resolve_threads(num_threads: int | None) -> int:
    """The thread count for one call: num_threads, or the global default when None."""
    return _num_threads if num_threads is None else check_threads(num_threads)


def _apply_simd_env() -> None:
    """FASTLM_SIMD=scalar|avx2|avx512|neon forces that level (a lower one than the best available)."""
    want = os.environ.get("FASTLM_SIMD", "").strip().lower()
    if not want:
        return
    if want not in _kernels.SIMD_LEVELS:
        warnings.warn(
            f"FASTLM_SIMD={want!r} is not one of {list(_kernels.SIMD_LEVELS)}; using {_kernels.simd_active()}",
            RuntimeWarning,
            stacklevel=3,
        )
    elif want not in _kernels.simd_supported():
        warnings.warn(
            f"FASTLM_SIMD={want!r} is not available on this machine (available: {_kernels.simd_supported()}); "
            f"using {_kernels.simd_active()}",
            RuntimeWarning,
            stacklevel=3,
        )
    else:
        _kernels.simd_select(want)


_apply_simd_env()


def config() -> dict[str, Any]:
    """The build and runtime configuration as a dict (what show_config prints)."""
    import numpy

    from . import __version__

    return {
        "version": __version__,
        "simd_compiled": _kernels.simd_compiled(),
        "simd_available": _kernels.simd_supported(),
        "simd_active": _kernels.simd_active(),
        "openmp": _kernels.openmp_enabled(),
        "num_threads": get_num_threads() if _kernels.openmp_enabled() else 1,
        "cpu_count": _kernels.max_threads(),
        "numpy": numpy.__version__,
    }


def show_config() -> dict[str, Any]:
    """Print the version, compiled / available / active SIMD levels and threads; return them as a dict."""
    cfg = config()
    for key, value in cfg.items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:15s} {value}")
    return cfg
