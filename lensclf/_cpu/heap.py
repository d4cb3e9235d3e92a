"""Keep freed memory in the process's heap while a network trains (Linux with glibc; opt-in).

Each training step allocates and frees the same large activation buffers (the
stem's maps take 16 MiB each at batch 64). glibc serves blocks that large with
``mmap``, or trims them off the top of the heap when they are freed, so every
step faults them in again from the kernel, zero-filled. :func:`retained_heap`
raises glibc's ``mmap`` and trim thresholds with ``mallopt`` while it is
entered and puts back the values it found when it leaves.

glibc has no call that reads these thresholds. Their values are known when the
process set them at start-up (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
or ``GLIBC_TUNABLES``) or when lensclf set them before; those are restored
exactly. Otherwise glibc adjusts them itself, which any ``mallopt`` call turns
off for good: then they are left at the ceiling of that adjustment (an ``mmap``
threshold of 32 MiB, a trim threshold of 64 MiB) and the free memory is handed
back with ``malloc_trim``. Because that changes the whole process, it is
opt-in: ``LensClassifier(cpu_fast_paths="retain_heap")``. Elsewhere (macOS,
Windows, musl) it does nothing.
"""

import contextlib
import ctypes
import functools
import os
import platform
import sys
import threading

__all__ = ["current_thresholds", "retained_heap"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MIB = 1 << 20
#: While training: blocks below 32 MiB come from the heap, and up to 1 GiB of free memory stays at its top.
_TRAINING = {M_MMAP_THRESHOLD: 32 * _MIB, M_TRIM_THRESHOLD: 1024 * _MIB}
#: Where glibc's own adjustment of the two thresholds ends (64-bit): used when the values found are unknown.
_CEILING = {M_MMAP_THRESHOLD: 32 * _MIB, M_TRIM_THRESHOLD: 64 * _MIB}
_ENVIRONMENT = {M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
                M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold")}

_lock = threading.Lock()
_depth = 0
_saved = None
_set_by_us = {}  # the values this module last left in force


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


def _from_environment(parameter):
    variable, tunable = _ENVIRONMENT[parameter]
    values = {}
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        values[name.strip()] = value.strip()
    for text in (values.get(tunable), os.environ.get(variable)):
        try:
            return int(text, 0)
        except (TypeError, ValueError):
            continue
    return None


def current_thresholds():
    """The thresholds in force, by ``mallopt`` parameter, where known; ``None`` where glibc adjusts them."""
    return {p: _set_by_us.get(p, _from_environment(p)) for p in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)}


def _set(libc, values):
    for parameter, value in values.items():
        libc.mallopt(parameter, value)
        _set_by_us[parameter] = value


@contextlib.contextmanager
def retained_heap(enabled=True):
    """Keep freed blocks in the heap inside the ``with`` block (see the module docstring).

    Nested and concurrent uses (fits in several threads) share one setting: the
    first to enter sets it, the last to leave restores what the first found.
    """
    global _depth, _saved
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = current_thresholds()
            _set(libc, _TRAINING)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(libc, {p: _CEILING[p] if v is None else v for p, v in _saved.items()})
                libc.malloc_trim(0)
