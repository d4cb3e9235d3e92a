"""Chunked zarr stores of cutouts: :func:`pack_cutouts` writes one, :class:`LensZarrArray` reads it lazily.

A store is a zarr (format 3) group folder holding

- ``images``: float32 ``(N, bands, H, W)``, chunks of ``(chunk_rows, bands, H, W)``
  (about 8 MiB each by default), Blosc-zstd compressed with byte shuffle;
- ``source``, ``id``: ``(N,)`` strings, the file each row was read from and its object id;
- ``label``: ``(N,)`` int8, 1 lens, 0 non-lens, -1 unknown;

and the group attributes ``lensclf_store`` (format version), ``complete``,
``rows_done``, ``inputs_done``, ``input_batches`` (``{"n_inputs", "sha256"}``
per packing run) and ``shape`` (bands, H, W).

Packing writes one block of rows at a time and only then moves ``rows_done`` and
``inputs_done`` on (zarr writes each file atomically), so rows past ``rows_done``
are a half-written block: a rerun with the same inputs cuts them off and goes on.
``complete`` becomes true with the last block; readers refuse incomplete stores.
zarr is an optional dependency (``pip install 'lensclf[zarr]'``).
"""

import hashlib
import json
import os
import sys
import time

import numpy as np

from ._checks import FileProblem, majority_shape, problems_error, value_problems
from ._cutout import as_source, cutout_shape
from ._errors import LensDataError
from ._filearray import LensFileArray, row_indices, run_tasks
from ._fits import FITS_SUFFIXES, BandFiles

__all__ = ["STORE_VERSION", "LensZarrArray", "default_chunk_rows", "is_zarr_store", "pack_cutouts"]

#: Format version written in the ``lensclf_store`` attribute.
STORE_VERSION = 1
#: Bytes of float32 pixels per ``images`` chunk aimed at by default.
CHUNK_BYTES = 8 * 2**20
#: The 1-D arrays (``source``, ``id``, ``label``) have chunks of this many image chunks.
META_CHUNKS = 64
_SUFFIXES = sorted(FITS_SUFFIXES + (".npy",), key=len, reverse=True)


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("reading/writing zarr stores needs zarr: pip install 'lensclf[zarr]'") from None
    return zarr


def default_chunk_rows(shape):
    """Rows of (bands, H, W) float32 cutouts in about 8 MiB (170 for 3x64x64)."""
    return max(1, CHUNK_BYTES // (4 * int(np.prod(shape))))


def is_zarr_store(path):
    """Whether ``path`` names a cutout store: its name ends in ``.zarr``, or it is a lensclf zarr group."""
    if isinstance(path, BandFiles):
        return False
    path = os.fspath(path)
    if path.rstrip("/\\").lower().endswith(".zarr"):
        return True
    return "lensclf_store" in _group_attributes(path)


def _group_attributes(path):
    try:
        with open(os.path.join(path, "zarr.json"), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return {}
    return meta.get("attributes", {}) if isinstance(meta, dict) and meta.get("node_type") == "group" else {}


def _store_error(path, reason):
    return LensDataError(f"{path}: {reason}", [(path, reason)])


def _open_store(path, mode="r"):
    """The group of the store at ``path`` and its attributes; a clear error if it is not one."""
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise _store_error(path, "is a file, not a cutout store (a zarr folder written by lensclf pack)")
        raise FileNotFoundError(f"{path}: no such cutout store (cutout stores are written by lensclf pack)")
    attrs = _group_attributes(path)
    if not os.path.exists(os.path.join(path, "zarr.json")):
        raise _store_error(path, "is not a cutout store (a folder without zarr.json); "
                                 "cutout stores are written by lensclf pack")
    if "lensclf_store" not in attrs:
        raise _store_error(path, "is not a lensclf cutout store (a zarr group without the 'lensclf_store' "
                                 "attribute); cutout stores are written by lensclf pack")
    if attrs["lensclf_store"] > STORE_VERSION:
        raise _store_error(path, f"was written in store format {attrs['lensclf_store']} by a newer lensclf; "
                                 f"this one reads format {STORE_VERSION}: upgrade lensclf")
    missing = [key for key in ("complete", "rows_done", "inputs_done", "input_batches", "shape") if key not in attrs]
    if missing:
        raise _store_error(path, f"is damaged: its attributes lack {', '.join(missing)}; pack it again")
    return _zarr().open_group(path, mode=mode), attrs


def _incomplete_reason(attrs):
    total = sum(batch["n_inputs"] for batch in attrs["input_batches"])
    return (f"incomplete store: packed {attrs['rows_done']:,} rows from {attrs['inputs_done']:,} of {total:,} "
            "input files; rerun lensclf pack with the same inputs to finish it")


def _default_id(source):
    if isinstance(source, BandFiles):
        if source.object_id is not None:
            return str(source.object_id)
        source = source[0]
    name = os.path.basename(source)
    suffix = next((s for s in _SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix else os.path.splitext(name)[0]


def _sources_hash(sources):
    return hashlib.sha256(json.dumps([str(s) for s in sources]).encode("utf-8")).hexdigest()


def _per_input(values, n, what, dtype):
    if values is None:
        return None
    values = np.asarray(values, dtype=dtype)
    if values.shape != (n,):
        raise ValueError(f"{what} must have one entry per input ({n:,}), got shape {values.shape}")
    return values


def _scan_shapes(sources, n_threads):
    shapes, problems = [None] * len(sources), {}

    def scan(start, stop):
        for i in range(start, stop):
            try:
                shapes[i] = cutout_shape(sources[i])
            except FileProblem as exc:
                problems[i] = exc.reason

    run_tasks(scan, len(sources), n_threads)
    return shapes, problems


def _read_block(sources, indices, shape, errors, n_threads):
    """Read ``sources[indices]``: ``(X, kept indices, skipped (source, reason))``."""
    skipped = []
    while indices:
        try:
            array = LensFileArray([sources[i] for i in indices], scan=False, n_threads=n_threads)
            if array.shape[1:] != shape:
                raise problems_error([(array.paths[0], f"has shape {array.shape[1:]}; expected {shape}")])
            return array[:], indices, skipped
        except LensDataError as exc:
            if errors == "raise":
                raise
            bad = {source for source, _ in exc.problems}
            skipped += exc.problems
            indices = [i for i in indices if sources[i] not in bad]
    return np.empty((0, *shape), dtype=np.float32), [], skipped


def _create_arrays(group, shape, chunk_rows):
    zarr = _zarr()
    try:
        compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    except (ImportError, AttributeError, ValueError):  # Blosc unavailable: zarr's default
        compressors = "auto"
    meta = chunk_rows * META_CHUNKS
    group.create_array("images", shape=(0, *shape), chunks=(chunk_rows, *shape), dtype="float32",
                       compressors=compressors, fill_value=0.0)
    group.create_array("source", shape=(0,), chunks=(meta,), dtype=str, fill_value="")
    group.create_array("id", shape=(0,), chunks=(meta,), dtype=str, fill_value="")
    group.create_array("label", shape=(0,), chunks=(meta,), dtype="int8", fill_value=-1)


def pack_cutouts(sources, out, *, labels=None, ids=None, chunk_rows=None, append=False, errors="raise",
                 n_threads=None, progress=False):
    """Write cutout files into the zarr store ``out``, block by block, resumably.

    Parameters
    ----------
    sources : sequence of str, path-like or BandFiles
        The cutouts (``.npy``, FITS, or one FITS file per band), one row each, in order.
    out : str or os.PathLike
        The store folder (conventionally ``*.zarr``); created if missing or empty.
    labels : sequence of int, optional
        Per input: 1 lens, 0 non-lens, -1 unknown (the default).
    ids : sequence of str, optional
        Per input object id; default: the file name without its format suffix
        (``.npy``, ``.fits``, ``.fits.gz``, ``.fz``...), or ``BandFiles.object_id``.
    chunk_rows : int, optional
        Rows per ``images`` chunk (and per block written) of a new store; default
        about 8 MiB of pixels. An existing store keeps its chunks.
    append : bool, default=False
        Add ``sources`` to a complete store as a new input batch. Their cutouts
        must have the store's (bands, H, W).
    errors : {"raise", "skip"}, default="raise"
        ``"raise"``: the first unusable file raises a :class:`~lensclf.LensDataError`
        naming it (nothing of its block is written; the rows before stay, and a
        rerun resumes). ``"skip"``: unusable files are left out and listed.
    n_threads : int, optional
        Threads reading files.
    progress : bool, default=False
        Print progress to stderr.

    Returns
    -------
    dict
        ``path``, ``rows_written`` (this call), ``rows_skipped``, ``skipped``
        (list of (source, reason) of this call), ``resumed`` (an interrupted pack was
        continued), ``up_to_date`` (the store already held these inputs), ``rows_total``.

    Raises
    ------
    LensDataError
        A bad input file (``errors="raise"``), cutouts of another shape than the
        store's, or ``out`` being a store of other inputs (incomplete, or complete
        without ``append``), or not a store.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if isinstance(sources, (str, bytes, os.PathLike)):
        raise TypeError("sources must be a sequence of cutout files, not a single path")
    sources = [as_source(s) for s in sources]
    if not sources:
        raise ValueError("pack_cutouts needs at least one input file")
    n, out = len(sources), os.fspath(out)
    labels = _per_input(labels, n, "labels", np.int8)
    if labels is not None and not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must be 1 (lens), 0 (non-lens) or -1 (unknown)")
    ids = _per_input(ids, n, "ids", object)
    if chunk_rows is not None and (not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    batch = {"n_inputs": n, "sha256": _sources_hash(sources)}
    summary = {"path": out, "rows_written": 0, "rows_skipped": 0, "skipped": [], "resumed": False,
               "up_to_date": False}

    fresh = not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out))
    start = 0
    if fresh:
        group, attrs = None, {"rows_done": 0, "inputs_done": 0, "input_batches": [batch], "shape": None}
    else:
        group, attrs = _open_store(out, mode="r+")
        hashes = [b["sha256"] for b in attrs["input_batches"]]
        if not attrs["complete"]:
            if hashes[-1] != batch["sha256"]:
                raise _store_error(out, f"{_incomplete_reason(attrs)}; it was being packed from other inputs "
                                        f"({attrs['input_batches'][-1]['n_inputs']:,} files) than these "
                                        f"({n:,}): pass those, or write to another output")
            start = attrs["inputs_done"] - sum(b["n_inputs"] for b in attrs["input_batches"][:-1])
            summary["resumed"] = True
        elif batch["sha256"] in hashes:
            summary.update(up_to_date=True, rows_total=attrs["rows_done"])
            return summary
        elif not append:
            raise _store_error(out, f"is a complete store of other inputs ({attrs['rows_done']:,} rows); "
                                    "pass append=True (lensclf pack --append) to add these, or choose another output")
        else:
            attrs["input_batches"].append(batch)

    # Headers first: shapes are checked before anything is written.
    shapes, problems = _scan_shapes(sources[start:], n_threads)
    store_shape = tuple(attrs["shape"]) if attrs["shape"] else None
    majority, _ = majority_shape(shapes, prefer=store_shape)
    if majority is None:
        raise problems_error([(sources[start + i], r) for i, r in sorted(problems.items())],
                             "also have problems", "; no input file is usable")
    shape = store_shape or majority
    odd = [i for i, s in enumerate(shapes) if s is not None and s != shape]
    if odd and (errors == "raise" or majority != shape):
        where = f"the store {out} holds" if store_shape else "the other files have"
        reason = "has shape {} but " + f"{where} cutouts of shape {shape}; all cutouts of a store have one size"
        raise problems_error([(sources[start + i], reason.format(shapes[i])) for i in odd], "also have another shape")
    for i in odd:
        problems[i] = f"has shape {shapes[i]}; the store holds cutouts of shape {shape}"
    if problems and errors == "raise":
        raise problems_error([(sources[start + i], r) for i, r in sorted(problems.items())])

    zarr = _zarr()
    if group is None:
        attrs.update(lensclf_store=STORE_VERSION, complete=False, shape=list(shape))
        group = zarr.create_group(out, zarr_format=3, attributes=attrs)
    elif append:
        group.attrs.update(complete=False, input_batches=attrs["input_batches"])
    if "images" not in group:  # a new store, or one interrupted before its arrays were made
        _create_arrays(group, shape, chunk_rows or default_chunk_rows(shape))
    arrays = {name: group[name] for name in ("images", "source", "id", "label")}
    chunk_rows = arrays["images"].chunks[0]
    rows_done, offset = attrs["rows_done"], attrs["inputs_done"] - start
    for array in arrays.values():  # cut off a half-written block
        if array.shape[0] != rows_done:
            array.resize((rows_done, *array.shape[1:]))

    pos, last_print = start, 0.0
    while pos < n:
        stop = min(n, pos + chunk_rows - rows_done % chunk_rows)  # fill up to the next chunk boundary
        indices = [i for i in range(pos, stop) if i - start not in problems]
        X, kept, skipped = _read_block(sources, indices, shape, errors, n_threads)
        summary["skipped"] += [(sources[i], problems[i - start]) for i in range(pos, stop) if i - start in problems]
        summary["skipped"] += skipped
        if kept:
            new = rows_done + len(kept)
            for array in arrays.values():
                array.resize((new, *array.shape[1:]))
            arrays["images"][rows_done:new] = X
            arrays["source"][rows_done:new] = np.array([str(sources[i]) for i in kept], dtype=object)
            arrays["id"][rows_done:new] = np.array(
                [str(ids[i]) if ids is not None else _default_id(sources[i]) for i in kept], dtype=object)
            arrays["label"][rows_done:new] = labels[kept] if labels is not None else -1
            summary["rows_written"] += len(kept)
            rows_done = new
        group.attrs.update(rows_done=rows_done, inputs_done=offset + stop, complete=stop == n)
        pos = stop
        if progress and (time.monotonic() - last_print > 1 or pos == n):
            last_print = time.monotonic()
            print(f"{out}: {pos:,} of {n:,} inputs packed ({rows_done:,} rows)", file=sys.stderr, flush=True)
    summary.update(rows_skipped=len(summary["skipped"]), rows_total=rows_done)
    return summary


class LensZarrArray:
    """A lazy, picklable, read-only array of the cutouts of a store written by :func:`pack_cutouts`.

    Indexing reads only the chunks holding the rows asked for; pixel values read
    are checked (NaN, blank) like cutout files. Pickling keeps only the path and
    the row selection (the store is reopened), so it travels to worker processes.

    Parameters
    ----------
    path : str or os.PathLike
        The store folder.
    rows : slice, 1-D int array or bool mask, optional
        A subset of the store's rows (e.g. ``store.labels == 1``); default all.

    Attributes
    ----------
    path : str
    shape : tuple of int
        ``(n_rows, bands, height, width)``.
    dtype : numpy.dtype
        Always float32.
    ndim : int
        Always 4.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, path, rows=None):
        self.path = os.fspath(path)
        group, attrs = _open_store(self.path)
        if not attrs["complete"]:
            raise _store_error(self.path, _incomplete_reason(attrs))
        self._group, self._images = group, group["images"]
        n = self._images.shape[0]
        if n != attrs["rows_done"] or any(group[name].shape != (n,) for name in ("source", "id", "label")):
            raise _store_error(self.path, f"is damaged: its arrays do not all hold the {attrs['rows_done']:,} rows "
                                          "it says it holds; pack it again")
        self.rows = None if rows is None else row_indices(rows, n)[0]
        self.shape = (n if self.rows is None else len(self.rows), *self._images.shape[1:])

    def __getstate__(self):
        return {"path": self.path, "rows": self.rows}

    def __setstate__(self, state):
        self.__init__(state["path"], state["rows"])

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"LensZarrArray({self.path!r}, shape={self.shape})"

    def meta(self, name, rows=None):
        """The ``"source"``, ``"id"`` or ``"label"`` values of ``rows`` (positions in this array; default all).

        Only the chunks holding those rows are read.
        """
        if name not in ("source", "id", "label"):
            raise ValueError(f"name must be 'source', 'id' or 'label', got {name!r}")
        array = self._group[name]
        if rows is None and self.rows is None:
            values = array[:]
        else:
            rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.intp)
            rows = rows if self.rows is None else self.rows[rows]
            values = array.get_orthogonal_selection((rows,)) if len(rows) else array[:0]
        return np.asarray(values).astype(object) if name != "label" else np.asarray(values)

    @property
    def ids(self):
        """Object ids of the rows (object array of str)."""
        return self.meta("id")

    @property
    def sources(self):
        """Source files of the rows (object array of str)."""
        return self.meta("source")

    @property
    def labels(self):
        """Labels of the rows (int8: 1 lens, 0 non-lens, -1 unknown)."""
        return self.meta("label")

    @property
    def chunk_rows(self):
        """Rows per chunk of the store's ``images``."""
        return int(self._images.chunks[0])

    @property
    def input_batches(self):
        """The store's ``input_batches`` attribute: ``{"n_inputs", "sha256"}`` per packing run."""
        return list(self._group.attrs["input_batches"])

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        indices, single = row_indices(key, len(self))
        out = self.read(indices)
        if single:
            return out[0][rest]
        return out[(slice(None), *rest)]

    def read(self, rows, check=True):
        """The cutouts of ``rows`` (1-D integer positions in this array), float32.

        With ``check=False`` the pixel values are not checked (the caller checks them).
        """
        rows = np.asarray(rows, dtype=np.intp)
        if self.rows is not None:
            rows = self.rows[rows]
        if len(rows) == 0:
            return np.empty((0, *self.shape[1:]), dtype=np.float32)
        try:
            if rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
                out = self._images[int(rows[0]):int(rows[-1]) + 1]
            else:
                out = self._images.get_orthogonal_selection((rows, slice(None), slice(None), slice(None)))
        except (OSError, RuntimeError, ValueError) as exc:  # a damaged chunk file
            what = f"{self.path}[{rows[0]}:{rows[-1] + 1}]"
            raise LensDataError(f"{what}: cannot be read ({type(exc).__name__}: {exc}); the store is damaged: "
                                "pack it again", [(what, str(exc))]) from exc
        out = np.asarray(out, dtype=np.float32)
        if not check:
            return out
        problems = [(f"{self.path}[{rows[j]}]", reason) for j, reason in value_problems(out)]
        if problems:
            raise problems_error(problems, "in this read also have problems")
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("LensZarrArray reads a store: an array cannot be made without a copy")
        out = self.read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)
