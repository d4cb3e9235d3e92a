"""Reading many cutout files: a pool of threads, the read-all of a folder, and :class:`LensFileArray`.

Files are read by a small pool of threads so that a cold disk has several
requests in flight; each file is read and checked by the reader of its format
(:mod:`lensclf._cutout`: ``.npy``, FITS, or one FITS file per band). :func:`read_cutouts` reads a whole list into one array (the
folder loader uses it); :class:`LensFileArray` is the lazy, picklable
alternative that reads only the rows indexed.
"""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._checks import (
    FileProblem,
    WrongShape,
    majority_shape,
    odd_shape_reason,
    problems_error,
    summarise,
    value_problems,
)
from ._errors import LensDataWarning
from ._cutout import as_source, cutout_shape, read_cutout_into

__all__ = ["FILES_PER_TASK", "LensFileArray", "first_cutout_shape", "read_cutouts", "row_indices", "run_tasks"]

#: Files read by one thread task.
FILES_PER_TASK = 128


def _default_threads():
    return min(8, (os.cpu_count() or 1) + 4)


def run_tasks(function, n_items, n_threads):
    """Call ``function(start, stop)`` over chunks of ``range(n_items)``, in threads.

    ``n_threads=None`` uses ``min(8, cpu_count + 4)`` threads.
    """
    chunks = [(s, min(s + FILES_PER_TASK, n_items)) for s in range(0, n_items, FILES_PER_TASK)]
    n_threads = _default_threads() if n_threads is None else int(n_threads)
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if n_threads == 1 or len(chunks) <= 1:
        for start, stop in chunks:
            function(start, stop)
        return
    with ThreadPoolExecutor(max_workers=min(n_threads, len(chunks))) as pool:
        for _ in pool.map(lambda chunk: function(*chunk), chunks):
            pass


def first_cutout_shape(paths, limit=None):
    """Shape of the first file (among the first ``limit``) with a usable header, or None."""
    for path in paths[:limit]:
        try:
            return cutout_shape(path)
        except FileProblem:
            continue
    return None


def _read_pass(paths, shape, n_threads):
    """Read every file into an array of cutouts of ``shape``.

    Returns ``(X, problems, unread, other_shapes)``: the array, the reasons of
    the bad files by index, the indices of files that could not be read, and the
    shapes of valid files of another shape by index (their rows are not filled).
    """
    X = np.empty((len(paths), *shape), dtype=np.float32)
    problems = {}
    unread = set()
    other_shapes = {}

    def read_chunk(start, stop):
        for i in range(start, stop):
            try:
                read_cutout_into(paths[i], X[i])
            except WrongShape as exc:
                other_shapes[i] = exc.shape
            except FileProblem as exc:
                problems[i] = exc.reason
                unread.add(i)
        for i, reason in value_problems(X[start:stop]):
            i += start
            if i not in unread and i not in other_shapes:
                problems[i] = reason

    run_tasks(read_chunk, len(paths), n_threads)
    return X, problems, unread, other_shapes


def read_cutouts(paths, n_threads=None, shape=None):
    """Read and validate many cutouts.

    Returns ``(X, problems)``: ``X`` has one slot per path (rows of bad files hold
    garbage) and ``problems`` maps the index of each bad file to its reason. Files
    whose shape differs from the majority are problems.
    """
    n = len(paths)
    if shape is None:
        shape = first_cutout_shape(paths)
    if shape is None:  # no file has a usable header: collect every reason
        problems = {}
        for i, path in enumerate(paths):
            try:
                cutout_shape(path)
            except FileProblem as exc:
                problems[i] = exc.reason
        return np.empty((n, 0, 0, 0), dtype=np.float32), problems

    while True:
        X, problems, unread, other_shapes = _read_pass(paths, shape, n_threads)
        # The most common shape wins; a tie goes to the shape being filled (the first file's).
        file_shapes = [None if i in unread else other_shapes.get(i, shape) for i in range(n)]
        majority, majority_count = majority_shape(file_shapes, prefer=shape)
        if majority is None or majority == shape:
            break
        shape = majority  # rare: the first file had the odd shape; read again
    for i, other in other_shapes.items():
        problems[i] = odd_shape_reason(other, majority, majority_count, n)
    return X, problems


def row_indices(key, n):
    """``(row indices, whether key was one int)`` of ``key`` (int, slice, 1-D int array, bool mask) on ``n`` rows."""
    if isinstance(key, slice):
        return np.arange(*key.indices(n)), False
    if isinstance(key, (int, np.integer)):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n:,} rows")
        return np.array([i % n]), True
    index = np.asarray(key)
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean index has shape {index.shape}; expected ({n},)")
        return np.flatnonzero(index), False
    if index.size == 0:
        return np.zeros(0, dtype=np.intp), False
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise IndexError(f"rows are taken by an int, a slice, a 1-D integer array or a boolean mask, got {key!r}")
    if index.max() >= n or index.min() < -n:
        raise IndexError(f"index out of range for {n:,} rows")
    return index.astype(np.intp) % n, False


class LensFileArray:
    """A lazy, picklable array of cutouts, one file per row (``.npy`` or FITS, or a :class:`BandFiles`).

    Use it for data sets larger than memory: nothing but the headers is read until
    rows are indexed, and then only those files. Values are identical to
    :func:`load_lens_dir` and every file read is validated with the same rules.

    Parameters
    ----------
    paths : sequence of str, path-like or BandFiles
        One cutout per row: a ``.npy`` or FITS file, or the band files of one cutout.
    errors : {"raise", "skip"}, default="raise"
        How files with unusable headers (missing, truncated, wrong dtype, wrong
        shape...) found by the construction scan are handled: ``"raise"`` raises one
        :class:`~lensclf.LensDataError` for all of them, ``"skip"`` leaves them out
        (see ``skipped``) with a :class:`~lensclf.LensDataWarning`. Pixel problems
        (NaN, blank images) are only seen when a row is read and always raise.
    scan : bool, default=True
        Check every file's header at construction (cheap: a few hundred bytes per
        file). With ``scan=False`` only the first file is opened (for ``shape``) and
        every check happens when rows are read; ``errors`` must then be ``"raise"``.
    n_threads : int, optional
        Threads used for the scan and for reads of many rows.

    Attributes
    ----------
    paths : list of str or BandFiles
        The files, one per row (without the skipped ones).
    skipped : list of (str, str)
        ``(path, reason)`` of files left out with ``errors="skip"``.
    shape : tuple of int
        ``(n_cutouts, bands, height, width)``.
    dtype : numpy.dtype
        Always float32.
    ndim : int
        Always 4.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, paths, errors="raise", *, scan=True, n_threads=None):
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("paths must be a sequence of file paths, not a single path")
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if not scan and errors != "raise":
            raise ValueError("errors='skip' needs scan=True (files can only be skipped after a scan)")
        paths = [as_source(p) for p in paths]
        if not paths:
            raise ValueError("LensFileArray needs at least one file path")
        self.errors = errors
        self.n_threads = n_threads
        self.skipped = []
        if scan:
            paths, shape = self._scan(paths)
        else:
            shape = first_cutout_shape(paths, limit=1)
            if shape is None:
                try:
                    cutout_shape(paths[0])
                except FileProblem as exc:
                    raise problems_error([(paths[0], exc.reason)]) from None
        self.paths = paths
        self.shape = (len(paths), *shape)

    def _scan(self, paths):
        headers = [None] * len(paths)
        problems = {}

        def scan_chunk(start, stop):
            for i in range(start, stop):
                try:
                    headers[i] = cutout_shape(paths[i])
                except FileProblem as exc:
                    problems[i] = exc.reason

        run_tasks(scan_chunk, len(paths), self.n_threads)
        shape, count = majority_shape(headers)
        for i, other in enumerate(headers):
            if other is not None and other != shape:
                problems[i] = odd_shape_reason(other, shape, count, len(paths))
        problem_list = [(paths[i], problems[i]) for i in sorted(problems)]
        if problem_list and (self.errors == "raise" or shape is None):
            raise problems_error(problem_list, "also have problems; see .problems")
        if problem_list:
            warnings.warn(
                LensDataWarning(f"skipped {len(problem_list):,} of {len(paths):,} files: " + summarise(problem_list)),
                stacklevel=3,
            )
            self.skipped = problem_list
            paths = [p for i, p in enumerate(paths) if i not in problems]
        return paths, shape

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"LensFileArray(<{len(self):,} files>, shape={self.shape})"

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        indices, single = row_indices(key, len(self))
        out = self._read(indices)
        if single:
            return out[0][rest] if rest else out[0]
        return out[(slice(None), *rest)] if rest else out

    def _read(self, indices):
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.float32)
        problems = {}

        def read_chunk(start, stop):
            for j in range(start, stop):
                try:
                    read_cutout_into(self.paths[indices[j]], out[j])
                except WrongShape as exc:
                    problems[j] = f"has shape {exc.shape}; expected {self.shape[1:]} like the other files"
                except FileProblem as exc:
                    problems[j] = exc.reason
            for j, reason in value_problems(out[start:stop]):
                problems.setdefault(j + start, reason)

        run_tasks(read_chunk, len(indices), self.n_threads if len(indices) > FILES_PER_TASK else 1)
        if problems:
            problem_list = [(self.paths[indices[j]], problems[j]) for j in sorted(problems)]
            raise problems_error(problem_list, "in this read also have problems")
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("LensFileArray reads files: an array cannot be made without a copy")
        out = self._read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)
