"""Read lens cutouts from ``.npy`` files: one file, a DeepLense folder, or a lazy list of files.

Every file is validated before its pixels are used, and every problem is reported
as a :class:`~lensclf.LensDataError` that names the file and the problem. Nothing
is silently replaced by a blank image.

Accepted pixel types
--------------------
Every real floating point type (``float16``, ``float32``, ``float64``,
``longdouble``, either byte order) and every integer type (some survey cutouts are
stored as counts) is accepted and converted to native ``float32``; integers larger
than 2**24 lose precision in that conversion, and float64 values outside the
float32 range become infinite and are then reported. Boolean, complex, text,
date/time, structured and object (pickled) arrays are rejected; pickles are never
loaded (``allow_pickle`` stays off) because unpickling can run arbitrary code.

Reading speed
-------------
The ``.npy`` header of each file is parsed once per distinct header (the files of a
data set share one header), and the pixels are read with one ``readinto`` straight
into the preallocated output array. Files are read by a small pool of threads so a
cold disk has several requests in flight.
"""

import hashlib
import json
import math
import os
import re
import struct
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
from numpy.lib import format as npy_format

from ._errors import LensDataError, LensDataWarning
from ._io import atomic_write

__all__ = [
    "LensFileArray",
    "load_lens_dir",
    "open_lens_stack",
    "read_lens_file",
]

SPLITS = ("train", "test")
# Lenses first (label 1), then non-lenses (label 0).
_CLASS_FOLDERS = {split: ((f"{split}_lenses", 1), (f"{split}_nonlenses", 0)) for split in SPLITS}
_ALL_CLASS_FOLDER_NAMES = {name for pairs in _CLASS_FOLDERS.values() for name, _ in pairs}

# Files that operating systems and tools drop into folders; ignored without a warning
# (they are still listed in the skipped report).
_SYSTEM_FILE_NAMES = {".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "__macosx"}

_MAGIC = b"\x93NUMPY"
_MAX_HEADER_BYTES = 100_000
_CACHE_FORMAT = 1
_FILES_PER_TASK = 128
_NOT_FOUND_HINT_DEPTH = 2


# --------------------------------------------------------------------------- low level


class _FileProblem(Exception):
    """Internal: one file cannot be used; ``reason`` says why (without the path)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class _WrongShape(Exception):
    """Internal: a valid file whose shape differs from the one being filled."""

    def __init__(self, shape):
        super().__init__(shape)
        self.shape = shape


class _Header:
    __slots__ = ("shape", "fortran_order", "dtype", "offset", "file_size", "direct")

    def __init__(self, shape, fortran_order, dtype, offset, file_size):
        self.shape = shape
        self.fortran_order = fortran_order
        self.dtype = dtype
        self.offset = offset
        self.file_size = file_size
        # Native float32 in C order can be read straight into the output.
        self.direct = dtype == np.float32 and dtype.isnative and not fortran_order


# Parsed headers keyed by their raw bytes: the files of a data set share one header,
# so the (slow, literal_eval based) parse runs once. Values: (shape, fortran, dtype)
# or a problem string.
_parsed_headers = {}
_PARSED_HEADERS_MAX = 256


def _format_bytes(n):
    """Exact byte counts for small sizes, decimal units for large ones."""
    if n < 10_000_000:
        return f"{n:,} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:,.1f} {unit}"


def _dtype_problem(dtype):
    """Return why ``dtype`` cannot hold lens pixels, or None when it is accepted."""
    if dtype.hasobject:
        return (
            "holds Python objects (object dtype), which can only be read by unpickling; "
            "lensclf never unpickles data files (allow_pickle stays off) because that can run "
            "arbitrary code. Save the cutout as a float32 array instead"
        )
    if dtype.fields is not None:
        return f"has a structured (record) dtype {dtype}; expected plain float pixel values"
    if dtype.subdtype is not None:
        return f"has a sub-array dtype {dtype}; expected plain float pixel values"
    kind = dtype.kind
    if kind in "fiu":
        return None
    what = {
        "b": "boolean (a mask?)",
        "c": "complex",
        "U": "text",
        "S": "bytes",
        "V": "raw void",
        "M": "date/time",
        "m": "time-delta",
    }.get(kind, "non-numeric")
    return f"holds {what} values (dtype {dtype}); expected real float pixel values such as float32"


def _shape_problem(shape):
    """Return why ``shape`` is not one cutout (bands, height, width), or None."""
    ndim = len(shape)
    shown = tuple(shape)
    if ndim == 2:
        return (
            f"is 2-D with shape {shown}: a single band image; expected 3-D (bands, height, width), "
            "such as (3, 64, 64). Stack the bands into one array, e.g. np.stack([g, r, i])"
        )
    if ndim == 4:
        return (
            f"is 4-D with shape {shown}: looks like a stack of cutouts; expected one cutout per "
            "file with shape (bands, height, width). Open stacked files with lensclf.open_lens_stack"
        )
    if ndim != 3:
        return f"is {ndim}-D with shape {shown}; expected 3-D (bands, height, width), such as (3, 64, 64)"
    if 0 in shape:
        return f"holds no pixels (shape {shown})"
    bands, _, width = shape
    if width <= 4 < bands:
        return (
            f"has shape {shown}, which looks like (height, width, bands) (channels last); "
            "expected (bands, height, width). Convert with np.moveaxis(a, -1, 0)"
        )
    return None


def _parse_header_bytes(version, length_bytes, header):
    key = (version, header)
    parsed = _parsed_headers.get(key)
    if parsed is not None:
        return parsed
    reader = npy_format.read_array_header_1_0 if version == 1 else npy_format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = reader(
            BytesIO(length_bytes + header), max_header_size=_MAX_HEADER_BYTES
        )
        shape = tuple(int(side) for side in shape)
        if any(side < 0 for side in shape):
            raise ValueError(f"negative size in shape {shape}")
        parsed = (shape, bool(fortran_order), dtype)
    except Exception as exc:  # any parse failure of foreign bytes is a data problem
        parsed = f"has a corrupt .npy header ({type(exc).__name__}: {exc})"
    if len(_parsed_headers) >= _PARSED_HEADERS_MAX:
        _parsed_headers.clear()
    _parsed_headers[key] = parsed
    return parsed


def _open(path):
    """Open ``path`` for binary reading, turning OS errors into clear problems."""
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise _FileProblem("is a folder, not a .npy file") from None
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:  # pragma: no cover - raced away
                target = "?"
            raise _FileProblem(f"is a broken symbolic link (it points to '{target}', which does not exist)") from None
        raise _FileProblem("does not exist (was it moved or deleted?)") from None
    except PermissionError:
        raise _FileProblem("cannot be read: permission denied") from None
    except OSError as exc:
        raise _FileProblem(f"cannot be read: {exc.strerror or exc}") from None


def _read_header(f):
    """Read and check the .npy header of the open file ``f`` (positioned at 0)."""
    try:
        stat = os.fstat(f.fileno())
    except OSError as exc:  # pragma: no cover - very unusual
        raise _FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    file_size = stat.st_size
    if file_size == 0:
        raise _FileProblem("is empty (0 bytes)")
    try:
        magic = f.read(8)
        if len(magic) < 8 or not magic.startswith(_MAGIC):
            if magic.startswith(b"PK\x03\x04"):
                raise _FileProblem("is a zip archive (an .npz?), not a .npy file")
            raise _FileProblem("is not a .npy file (it does not start with the NumPy file signature)")
        version = magic[6]
        if version == 1:
            length_bytes = f.read(2)
            fmt = "<H"
        elif version in (2, 3):
            length_bytes = f.read(4)
            fmt = "<I"
        else:
            raise _FileProblem(f"uses .npy format version {version}.{magic[7]}, which is not supported")
        if len(length_bytes) < struct.calcsize(fmt):
            raise _FileProblem(f"is truncated: it ends inside the .npy header ({file_size} bytes)")
        (header_length,) = struct.unpack(fmt, length_bytes)
        if header_length > _MAX_HEADER_BYTES:
            raise _FileProblem(
                f"has an implausibly large .npy header ({header_length:,} bytes); the file is corrupt"
            )
        header = f.read(header_length)
    except OSError as exc:
        raise _FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    if len(header) < header_length:
        raise _FileProblem(f"is truncated: it ends inside the .npy header ({file_size} bytes)")
    parsed = _parse_header_bytes(version, length_bytes, header)
    if isinstance(parsed, str):
        raise _FileProblem(parsed)
    shape, fortran_order, dtype = parsed
    offset = 8 + len(length_bytes) + header_length
    return _Header(shape, fortran_order, dtype, offset, file_size)


def _check_data_size(header):
    """Compare the size the header announces with the bytes that follow (no allocation)."""
    needed = math.prod(header.shape) * header.dtype.itemsize
    available = header.file_size - header.offset
    if available < needed:
        raise _FileProblem(
            f"is truncated: its header announces shape {header.shape} of {header.dtype} "
            f"({_format_bytes(needed)} of pixel data) but only {_format_bytes(max(available, 0))} follow"
        )


def _read_cutout_header(f):
    """Header of one cutout file: parsed, with dtype, shape and size checked."""
    header = _read_header(f)
    problem = _dtype_problem(header.dtype) or _shape_problem(header.shape)
    if problem:
        raise _FileProblem(problem)
    _check_data_size(header)
    return header


def _read_pixels_into(f, header, out):
    """Read the pixels of an open file (after its header) into ``out`` (float32, C order)."""
    try:
        if header.direct:
            got = f.readinto(out)
            wanted = out.nbytes
        else:
            file_shape = header.shape[::-1] if header.fortran_order else header.shape
            raw = np.empty(file_shape, dtype=header.dtype)
            got = f.readinto(raw)
            wanted = raw.nbytes
            if got == wanted:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[...] = raw.T if header.fortran_order else raw
    except OSError as exc:
        raise _FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    if got != wanted:
        raise _FileProblem(f"is truncated: only {got:,} of {wanted:,} bytes of pixel data could be read")


def _read_into(path, out):
    """Read one validated cutout into ``out``; raise _WrongShape when its shape differs."""
    with _open(path) as f:
        header = _read_cutout_header(f)
        if header.shape != out.shape:
            raise _WrongShape(header.shape)
        _read_pixels_into(f, header, out)


def _value_problem(image):
    """Why the pixel values of one (C, H, W) float32 cutout are unusable, or None."""
    finite = np.isfinite(image)
    if not finite.all():
        n_nan = int(np.count_nonzero(np.isnan(image)))
        n_inf = image.size - int(np.count_nonzero(finite)) - n_nan
        parts = []
        if n_nan:
            parts.append(f"{n_nan:,} NaN")
        if n_inf:
            parts.append(f"{n_inf:,} infinite")
        return (
            f"has {' and '.join(parts)} pixel value(s) out of {image.size:,} "
            "(after conversion to float32); mask or fill them before use"
        )
    flat = image.reshape(image.shape[0], -1)
    low = flat.min(axis=1)
    if np.array_equal(low, flat.max(axis=1)):
        values = ", ".join(f"{v:g}" for v in low[:8])
        return f"is blank: every band is constant (band values {values}); an empty cutout"
    return None


def _value_problems(block):
    """Row indices of ``block`` (N, C, H, W) with unusable values, with the reasons."""
    flat = block.reshape(block.shape[0], block.shape[1], -1)
    low, high = flat.min(axis=2), flat.max(axis=2)
    # min and max propagate NaN and reach +-inf, so they tell finiteness too
    finite = np.isfinite(low).all(axis=1) & np.isfinite(high).all(axis=1)
    blank = (low == high).all(axis=1)
    bad = np.flatnonzero(~finite | blank)
    return [(int(i), _value_problem(block[i])) for i in bad]


# --------------------------------------------------------------------------- reading many


def _default_threads():
    return min(8, (os.cpu_count() or 1) + 4)


def _run_tasks(function, n_items, n_threads):
    """Call ``function(start, stop)`` over chunks of ``range(n_items)``, in threads."""
    chunks = [(s, min(s + _FILES_PER_TASK, n_items)) for s in range(0, n_items, _FILES_PER_TASK)]
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


def _first_cutout_shape(paths, limit=None):
    """Shape of the first file (among the first ``limit``) with a usable header, or None."""
    for path in paths[:limit]:
        try:
            with _open(path) as f:
                return _read_cutout_header(f).shape
        except _FileProblem:
            continue
    return None


def _read_files(paths, n_threads=None, shape=None):
    """Read and validate many cutouts.

    Returns ``(X, problems)``: ``X`` has one slot per path (rows of bad files hold
    garbage) and ``problems`` maps the index of each bad file to its reason. Files
    whose shape differs from the majority are problems.
    """
    n = len(paths)
    if shape is None:
        shape = _first_cutout_shape(paths)
    if shape is None:  # no file has a usable header: collect every reason
        problems = {}
        for i, path in enumerate(paths):
            try:
                with _open(path) as f:
                    _read_cutout_header(f)
            except _FileProblem as exc:
                problems[i] = exc.reason
        return np.empty((n, 0, 0, 0), dtype=np.float32), problems

    while True:
        X = np.empty((n, *shape), dtype=np.float32)
        problems = {}  # index -> reason
        unread = set()  # indices whose file could not be read (no shape known)
        other_shapes = {}  # index -> shape of a valid file of another shape

        def read_chunk(start, stop):
            for i in range(start, stop):
                try:
                    _read_into(paths[i], X[i])
                except _WrongShape as exc:
                    other_shapes[i] = exc.shape
                except _FileProblem as exc:
                    problems[i] = exc.reason
                    unread.add(i)
            for i, reason in _value_problems(X[start:stop]):
                i += start
                if i not in unread and i not in other_shapes:
                    problems[i] = reason

        _run_tasks(read_chunk, n, n_threads)
        counts = Counter(other_shapes.values())
        counts[shape] = n - len(other_shapes) - len(unread)
        # The most common shape wins; a tie goes to the shape of the first file.
        majority, majority_count = max(counts.items(), key=lambda item: (item[1], item[0] == shape))
        if majority == shape:
            break
        shape = majority  # rare: the first file had the odd shape; read again
    for i, other in other_shapes.items():
        problems[i] = (
            f"has shape {other} but {majority_count:,} of the {n:,} files have shape {majority}; "
            "all cutouts must have the same number of bands and size"
        )
    return X, problems


# --------------------------------------------------------------------------- public: one file


def read_lens_file(path, expected_shape=None):
    """Read one lens cutout from a ``.npy`` file, with full validation.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file holding one cutout of shape (bands, height, width).
    expected_shape : tuple of 3 int, optional
        When given, a file with another shape is an error.

    Returns
    -------
    image : ndarray of shape (bands, height, width), float32, C order
        The pixels converted to native float32 (see the module notes for the accepted
        types).

    Raises
    ------
    LensDataError
        The file cannot be used: missing, a folder, a broken link, unreadable, empty,
        truncated, not ``.npy``, a pickled-object array, a non-real dtype, not 3-D,
        the wrong shape, NaN or infinite pixels, or a blank (every band constant)
        image. The message names the file and the problem.
    """
    if expected_shape is not None:
        try:
            expected_shape = tuple(int(side) for side in expected_shape)
        except TypeError:
            raise TypeError(f"expected_shape must be a tuple of 3 ints, got {expected_shape!r}") from None
        if len(expected_shape) != 3:
            raise ValueError(f"expected_shape must have 3 entries (bands, height, width), got {expected_shape}")
    path = os.fspath(path)
    try:
        with _open(path) as f:
            header = _read_cutout_header(f)
            if expected_shape is not None and header.shape != expected_shape:
                raise _FileProblem(f"has shape {header.shape}; expected {expected_shape}")
            image = np.empty(header.shape, dtype=np.float32)
            _read_pixels_into(f, header, image)
        reason = _value_problem(image)
        if reason:
            raise _FileProblem(reason)
    except _FileProblem as exc:
        raise LensDataError(f"{path}: {exc.reason}", [(path, exc.reason)]) from None
    return image


def open_lens_stack(path):
    """Open a stacked ``.npy`` file of cutouts as a read-only memory map.

    Only the header is read and checked; the pixels are not (use
    :func:`read_lens_file` semantics per batch if needed). The pickle loader is
    never used.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file of shape (n_cutouts, bands, height, width) holding real
        float or integer values.

    Returns
    -------
    stack : numpy.memmap of shape (n_cutouts, bands, height, width)
        Read-only, in the file's own dtype (convert batches with
        ``np.asarray(stack[i:j], dtype=np.float32)``).

    Raises
    ------
    LensDataError
        The file is missing, unreadable, not ``.npy``, truncated, holds objects or
        a non-real dtype, is not 4-D, or holds no cutouts.
    """
    path = os.fspath(path)
    try:
        with _open(path) as f:
            header = _read_header(f)
        problem = _dtype_problem(header.dtype)
        if problem:
            raise _FileProblem(problem)
        ndim = len(header.shape)
        if ndim == 3:
            raise _FileProblem(
                f"is 3-D with shape {header.shape}: a single cutout; expected a stack of shape "
                "(n_cutouts, bands, height, width). Read single cutouts with lensclf.read_lens_file"
            )
        if ndim != 4:
            raise _FileProblem(
                f"is {ndim}-D with shape {header.shape}; expected a stack of shape (n_cutouts, bands, height, width)"
            )
        if 0 in header.shape:
            raise _FileProblem(f"holds no cutouts (shape {header.shape})")
        _check_data_size(header)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # pragma: no cover - raced with a change on disk
            raise _FileProblem(f"cannot be memory-mapped: {exc}") from None
    except _FileProblem as exc:
        raise LensDataError(f"{path}: {exc.reason}", [(path, exc.reason)]) from None


# --------------------------------------------------------------------------- folders


def _natural_key(name):
    """Sort key putting ``2.npy`` before ``10.npy``; ties broken by the raw name."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def _is_system_file(name):
    return name.casefold() in _SYSTEM_FILE_NAMES or name.startswith("._")


def _list_class_folder(folder):
    """Return (npy_names, stray_names) of one class folder, each sorted naturally."""
    npy, stray = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.lower().endswith(".npy") and not name.startswith("."):
                npy.append(name)
            else:
                stray.append(name)
    return sorted(npy, key=_natural_key), sorted(stray, key=_natural_key)


def _has_split_folders(folder, split):
    return all(os.path.isdir(os.path.join(folder, name)) for name, _ in _CLASS_FOLDERS[split])


def _subfolders(folder, limit=200):
    try:
        with os.scandir(folder) as entries:
            names = sorted(
                entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir()
            )
    except OSError:
        return []
    return [os.path.join(folder, name) for name in names[:limit]]


def _where_are_the_folders(root, split):
    """Folders one or two levels below ``root`` that hold the class folders of ``split``."""
    found = []
    level = [root]
    for _ in range(_NOT_FOUND_HINT_DEPTH):
        level = [sub for folder in level for sub in _subfolders(folder)]
        found.extend(folder for folder in level if _has_split_folders(folder, split))
        if found:
            break
    return found


def _check_root(root, split):
    """Raise a helpful FileNotFoundError unless ``root`` holds the class folders of ``split``."""
    needed = [name for name, _ in _CLASS_FOLDERS[split]]
    if not os.path.exists(root):
        message = f"data folder '{root}' does not exist"
        parent = os.path.dirname(os.path.abspath(root))
        if os.path.isdir(parent):
            siblings = [os.path.basename(p) for p in _subfolders(parent, limit=20)]
            if siblings:
                message += f" (its parent '{parent}' holds the folders: {', '.join(siblings)})"
        raise FileNotFoundError(message)
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"'{root}' is a file, not a folder; pass the folder that holds {needed[0]}/ and {needed[1]}/"
        )
    missing = [name for name in needed if not os.path.isdir(os.path.join(root, name))]
    if not missing:
        return
    message = (
        f"'{root}' does not hold the DeepLense folder layout for split='{split}': missing "
        f"{', '.join(name + '/' for name in missing)} (expected {needed[0]}/ with lenses and "
        f"{needed[1]}/ with non-lenses, one .npy file per cutout)"
    )
    for name in missing:
        if os.path.exists(os.path.join(root, name)):
            message += f". '{os.path.join(root, name)}' exists but is not a folder"
    parent = os.path.dirname(os.path.abspath(root))
    found = _where_are_the_folders(root, split)
    if found:
        message += f". The folders are one level down: pass root='{found[0]}' instead"
        if len(found) > 1:
            message += f" (also found in: {', '.join(found[1:4])})"
    elif os.path.basename(os.path.normpath(root)) in _ALL_CLASS_FOLDER_NAMES and _has_split_folders(parent, split):
        message += f". '{root}' is itself a class folder: pass its parent root='{parent}' instead"
    else:
        other = [s for s in SPLITS if s != split and _has_split_folders(root, s)]
        if other:
            message += f". It does hold the folders for split='{other[0]}'"
    raise FileNotFoundError(message)


# --------------------------------------------------------------------------- cache


def _cache_folder(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        folder = os.environ.get("LENSCLF_CACHE_DIR")
        if not folder:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            folder = os.path.join(base, "lensclf")
        return folder
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache)
    raise TypeError(f"cache must be None, False, True or a folder path, got {cache!r}")


def _file_stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        try:
            st = os.lstat(path)
        except OSError:
            return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_key(root, split, listing):
    files = []
    for folder, names, stray in listing:
        for name in names + stray:
            files.append([folder + "/" + name, _file_stamp(os.path.join(root, folder, name))])
    return {"format": _CACHE_FORMAT, "root": os.path.abspath(root), "split": split, "files": files}


def _cache_stem(folder, key):
    tag = hashlib.sha256(f"{key['root']}\0{key['split']}".encode()).hexdigest()[:16]
    return os.path.join(folder, f"{key['split']}-{tag}")


def _read_cache(folder, key):
    """Return (X, record) from the cache when its key matches, else None."""
    stem = _cache_stem(folder, key)
    try:
        with open(stem + ".json", encoding="utf-8") as f:
            record = json.load(f)
        if record.get("key") != key:
            return None
        X = np.load(os.path.join(folder, record["data"]), mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if X.dtype != np.float32 or X.ndim != 4 or X.shape[0] != len(record.get("kept", ())):
        return None
    return X, record


def _write_cache(folder, key, X, record):
    """Store ``X`` and ``record`` atomically; the JSON file, written last, commits it."""
    stem = _cache_stem(folder, key)
    try:
        os.makedirs(folder, exist_ok=True)
        try:
            with open(stem + ".json", encoding="utf-8") as f:
                old_data = json.load(f).get("data")
        except (OSError, ValueError, AttributeError):
            old_data = None
        data_name = f"{os.path.basename(stem)}-{os.urandom(6).hex()}.npy"
        with atomic_write(os.path.join(folder, data_name)) as f:
            np.save(f, X, allow_pickle=False)
        record = dict(record, key=key, data=data_name)
        payload = json.dumps(record).encode("utf-8")
        with atomic_write(stem + ".json") as f:
            f.write(payload)
        if old_data and old_data != data_name and "/" not in old_data and os.sep not in old_data:
            try:
                os.unlink(os.path.join(folder, old_data))
            except OSError:
                pass
    except OSError as exc:
        warnings.warn(f"could not write the lensclf data cache in '{folder}': {exc}", stacklevel=3)


# --------------------------------------------------------------------------- public: a folder


def _summarise(problems, limit=3):
    shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:limit])
    if len(problems) > limit:
        shown += f"; ... and {len(problems) - limit:,} more"
    return shown


def _warn_stray(stray_paths, root, split):
    noted = [p for p in stray_paths if not _is_system_file(os.path.basename(p))]
    if noted:
        shown = ", ".join(noted[:5]) + (f", ... and {len(noted) - 5:,} more" if len(noted) > 5 else "")
        warnings.warn(
            LensDataWarning(
                f"ignored {len(noted):,} entr{'y' if len(noted) == 1 else 'ies'} without the .npy extension "
                f"in the class folders of '{root}' (split='{split}'): {shown}"
            ),
            stacklevel=3,
        )


def load_lens_dir(
    root,
    split="train",
    *,
    errors="raise",
    return_paths=False,
    return_skipped=False,
    cache=None,
    n_threads=None,
):
    """Load one split of a DeepLense-layout folder of ``.npy`` cutouts.

    The layout is ``root/train_lenses/``, ``root/train_nonlenses/``,
    ``root/test_lenses/`` and ``root/test_nonlenses/``, each holding one ``.npy``
    file of shape (bands, height, width) per cutout. Lenses come first, then
    non-lenses; within a folder files are in natural name order (``2.npy`` before
    ``10.npy``). Any band count and size are accepted as long as all files agree; a
    file whose shape differs from the majority is a problem for that file.

    Entries of a class folder that do not end in ``.npy`` (``README``, ``.DS_Store``,
    sub-folders...) are ignored; they are listed in the skipped report, and all but
    known system files (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, ``._*``) are
    named in a :class:`~lensclf.LensDataWarning`.

    Parameters
    ----------
    root : str or path-like
        The folder holding the four class folders.
    split : {"train", "test"}, default="train"
        Which pair of class folders to read.
    errors : {"raise", "skip"}, default="raise"
        ``"raise"``: check every file, then raise one :class:`~lensclf.LensDataError`
        naming the first bad file and counting the others (all are in its
        ``problems``). ``"skip"``: leave bad files out with one
        :class:`~lensclf.LensDataWarning`; raise if no file is usable.
    return_paths : bool, default=False
        Also return the path (str) of each row of ``X``.
    return_skipped : bool, default=False
        Also return the ``(path, reason)`` list of every file left out.
    cache : None, bool or path-like, default=None
        ``None``/``False``: no cache. ``True``: cache in ``$LENSCLF_CACHE_DIR`` or
        ``~/.cache/lensclf``. A path: cache in that folder. The loaded split is kept
        as one ``.npy`` file with a JSON key (file names, sizes, modification
        times); a later call with unchanged files returns it as a copy-on-write
        memory map without reading the cutouts. Any change to the files invalidates
        it.
    n_threads : int, optional
        Threads reading files concurrently (helps cold disks); default
        ``min(8, cpu_count + 4)``.

    Returns
    -------
    X : ndarray of shape (n_cutouts, bands, height, width), float32, C order
        The cutouts (a copy-on-write ``numpy.memmap`` when read from the cache).
    y : ndarray of shape (n_cutouts,), int64
        1 for a lens, 0 for a non-lens.
    paths : list of str
        Only with ``return_paths=True``: the file of each row.
    skipped : list of (str, str)
        Only with ``return_skipped=True``: ``(path, reason)`` of every file or
        entry left out.

    Raises
    ------
    FileNotFoundError
        ``root`` or a class folder is missing; the message says where the folders
        are when they sit one or two levels below ``root``.
    LensDataError
        A class folder holds no ``.npy`` file, a file is unusable (with
        ``errors="raise"``), or no file is usable (with ``errors="skip"``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    root = os.fspath(root)
    _check_root(root, split)
    cache_folder = _cache_folder(cache)

    listing = []  # (folder name, npy names, stray names)
    for folder_name, _ in _CLASS_FOLDERS[split]:
        folder = os.path.join(root, folder_name)
        npy, stray = _list_class_folder(folder)
        if not npy:
            others = f" (it holds only: {', '.join(stray[:5])})" if stray else " (it is empty)"
            raise LensDataError(
                f"{folder}: class folder holds no .npy files{others}", [(folder, "no .npy files")]
            )
        listing.append((folder_name, npy, stray))
    paths = [os.path.join(root, folder, name) for folder, names, _ in listing for name in names]
    labels = np.concatenate(
        [np.full(len(names), label, dtype=np.int64) for (_, names, _), (_, label) in zip(listing, _CLASS_FOLDERS[split])]
    )
    stray_paths = [os.path.join(root, folder, name) for folder, _, stray in listing for name in stray]
    stray_skipped = [
        (path, "folder, not a .npy file; ignored" if os.path.isdir(path) else "not a .npy file; ignored")
        for path in stray_paths
    ]
    _warn_stray(stray_paths, root, split)

    cached = None
    if cache_folder is not None:
        key = _cache_key(root, split, listing)
        cached = _read_cache(cache_folder, key)
    if cached is not None:
        X, record = cached
        kept = np.asarray(record["kept"], dtype=np.intp)
        problems = [(paths[i], reason) for i, reason in record["problems"]]
    else:
        X, problem_by_index = _read_files(paths, n_threads)
        problems = [(paths[i], problem_by_index[i]) for i in sorted(problem_by_index)]
        kept = np.array([i for i in range(len(paths)) if i not in problem_by_index], dtype=np.intp)

    if problems:
        if errors == "raise":
            first_path, first_reason = problems[0]
            message = f"{first_path}: {first_reason}"
            if len(problems) > 1:
                message += (
                    f" ({len(problems) - 1:,} other file(s) also have problems; all are listed in this "
                    "error's .problems)"
                )
            message += ". Pass errors='skip' to leave bad files out"
            raise LensDataError(message, problems)
        if len(kept) == 0:
            raise LensDataError(
                f"no usable cutouts in '{root}' (split='{split}'): all {len(paths):,} files have problems: "
                + _summarise(problems),
                problems,
            )
        warnings.warn(
            LensDataWarning(
                f"skipped {len(problems):,} of {len(paths):,} files in '{root}' (split='{split}'): "
                + _summarise(problems)
                + " (pass return_skipped=True to get the full list)"
            ),
            stacklevel=2,
        )
        if cached is None:
            X = _keep_rows(X, kept)

    if cached is None and cache_folder is not None:
        record = {
            "kept": kept.tolist(),
            "problems": [[i, problem_by_index[i]] for i in sorted(problem_by_index)],
        }
        _write_cache(cache_folder, key, X, record)

    y = labels[kept]
    result = [X, y]
    if return_paths:
        result.append([paths[i] for i in kept])
    if return_skipped:
        result.append(sorted(problems + stray_skipped, key=lambda item: _natural_key(item[0])))
    return tuple(result)


def _keep_rows(X, kept):
    """Move the kept rows to the front in place and shrink ``X`` (no second full copy)."""
    for j, i in enumerate(kept):
        if i != j:
            X[j] = X[i]
    try:
        X.resize((len(kept), *X.shape[1:]), refcheck=False)
        return X
    except (ValueError, SystemError):  # pragma: no cover - not resizable
        return X[: len(kept)].copy()


# --------------------------------------------------------------------------- public: lazy array


class LensFileArray:
    """A lazy, picklable array of cutouts, one ``.npy`` file per row.

    Use it for data sets larger than memory: nothing but the headers is read until
    rows are indexed, and then only those files. Values are identical to
    :func:`load_lens_dir` and every file read is validated with the same rules.

    Parameters
    ----------
    paths : sequence of str or path-like
        One ``.npy`` cutout file per row.
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
    paths : list of str
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
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("LensFileArray needs at least one file path")
        self.errors = errors
        self.n_threads = n_threads
        self.skipped = []
        if scan:
            paths, shape = self._scan(paths)
        else:
            shape = _first_cutout_shape(paths, limit=1)
            if shape is None:
                read_lens_file(paths[0])  # raises a LensDataError naming the problem
        self.paths = paths
        self.shape = (len(paths), *shape)

    def _scan(self, paths):
        headers = [None] * len(paths)
        problems = {}

        def scan_chunk(start, stop):
            for i in range(start, stop):
                try:
                    with _open(paths[i]) as f:
                        headers[i] = _read_cutout_header(f).shape
                except _FileProblem as exc:
                    problems[i] = exc.reason

        _run_tasks(scan_chunk, len(paths), self.n_threads)
        counts = Counter(shape for shape in headers if shape is not None)
        if counts:
            first = next(shape for shape in headers if shape is not None)
            shape, count = max(counts.items(), key=lambda item: (item[1], item[0] == first))
            for i, other in enumerate(headers):
                if other is not None and other != shape:
                    problems[i] = (
                        f"has shape {other} but {count:,} of the {len(paths):,} files have shape {shape}; "
                        "all cutouts must have the same number of bands and size"
                    )
        problem_list = [(paths[i], problems[i]) for i in sorted(problems)]
        if problem_list and (self.errors == "raise" or not counts):
            message = f"{problem_list[0][0]}: {problem_list[0][1]}"
            if len(problem_list) > 1:
                message += f" ({len(problem_list) - 1:,} other file(s) also have problems; see .problems)"
            raise LensDataError(message, problem_list)
        if problem_list:
            warnings.warn(
                LensDataWarning(f"skipped {len(problem_list):,} of {len(paths):,} files: " + _summarise(problem_list)),
                stacklevel=3,
            )
            self.skipped = problem_list
            paths = [p for i, p in enumerate(paths) if i not in problems]
        return paths, shape

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"LensFileArray(<{len(self):,} files>, shape={self.shape})"

    def _indices(self, key):
        n = len(self)
        if isinstance(key, slice):
            return np.arange(*key.indices(n)), False
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n:,} files")
            return np.array([i % n]), True
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index has shape {index.shape}; expected ({n},)")
            return np.flatnonzero(index), False
        if index.size == 0:
            return np.zeros(0, dtype=np.intp), False
        if index.dtype.kind not in "iu" or index.ndim != 1:
            raise IndexError(
                f"LensFileArray accepts an int, a slice, a 1-D integer array or a boolean mask, got {key!r}"
            )
        if index.max() >= n or index.min() < -n:
            raise IndexError(f"index out of range for {n:,} files")
        return index % n, False

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        indices, single = self._indices(key)
        out = self._read(indices)
        if single:
            out = out[0]
        return out[rest] if rest else out

    def _read(self, indices):
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.float32)
        problems = {}

        def read_chunk(start, stop):
            for j in range(start, stop):
                try:
                    _read_into(self.paths[indices[j]], out[j])
                except _WrongShape as exc:
                    problems[j] = f"has shape {exc.shape}; expected {self.shape[1:]} like the other files"
                except _FileProblem as exc:
                    problems[j] = exc.reason
            for j, reason in _value_problems(out[start:stop]):
                problems.setdefault(j + start, reason)

        _run_tasks(read_chunk, len(indices), self.n_threads if len(indices) > _FILES_PER_TASK else 1)
        if problems:
            problem_list = [(self.paths[indices[j]], problems[j]) for j in sorted(problems)]
            message = f"{problem_list[0][0]}: {problem_list[0][1]}"
            if len(problem_list) > 1:
                message += f" ({len(problem_list) - 1:,} other file(s) in this read also have problems)"
            raise LensDataError(message, problem_list)
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("LensFileArray reads files: an array cannot be made without a copy")
        out = self._read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)
