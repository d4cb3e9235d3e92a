"""Keep freed memory in the process's heap while a network trains (Linux with glibc).

Each training step allocates and frees the same large activation and gradient
buffers (the stem's 64x32x32 maps take 16 MiB per buffer at batch 64). glibc's
``malloc`` serves blocks that large with ``mmap`` or trims them off the top of
the heap when they are freed, so the next step gets them back from the kernel
page by page, zero-filled. On the reference machine (2 cores, ResNet18 at 64 px,
batch 64) that is 13,000-18,000 minor page faults and 23-28 ms of kernel time
per ~240 ms step; with the heap kept, about none
(``python benchmarks/bench_fast_paths.py --quick``, the ``heap=0`` variant).

:func:`retained_heap` raises glibc's thresholds with ``mallopt`` for the time
it is entered, then sets them to the values that glibc's own adjustment moves
them to in a long-running PyTorch process (an ``mmap`` threshold of 32 MiB, a
trim threshold of twice that) and hands the free memory back with
``malloc_trim``. Elsewhere (macOS, Windows, musl) it does nothing.
"""

import contextlib
import ctypes
import functools
import platform
import sys
import threading

__all__ = ["RETAIN_HEAP", "retained_heap"]

#: Whether :func:`retained_heap` changes glibc's thresholds (on by default).
RETAIN_HEAP = True

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MIB = 1 << 20
#: While training: blocks below 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap,
#: and up to 1 GiB of free memory at its top stays there.
_TRAINING = {_M_MMAP_THRESHOLD: 32 * _MIB, _M_TRIM_THRESHOLD: 1024 * _MIB}
#: Afterwards: the ceiling of glibc's own adjustment of the two thresholds.
_AFTER = {_M_MMAP_THRESHOLD: 32 * _MIB, _M_TRIM_THRESHOLD: 64 * _MIB}

_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc():
    """The C library, if it is glibc with ``mallopt`` and ``malloc_trim``; else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def _set(libc, values):
    for parameter, value in values.items():
        libc.mallopt(parameter, value)


@contextlib.contextmanager
def retained_heap():
    """Keep freed blocks in the heap inside the ``with`` block (see the module docstring).

    Nested and concurrent uses (fits in several threads) share one setting: the
    first to enter sets it, the last to leave restores it.
    """
    global _depth
    libc = _glibc() if RETAIN_HEAP else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _set(libc, _TRAINING)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(libc, _AFTER)
                libc.malloc_trim(0)
