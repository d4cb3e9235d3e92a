"""The ``.npy`` reader: one header parser, and the readers of one cutout and of a stack.

Every file is validated before its pixels are used (with the checks of
:mod:`lensclf._checks`), and every problem is reported as a
:class:`~lensclf.LensDataError` that names the file and the problem. Nothing is
silently replaced by a blank image.

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
The header of each file is parsed once per distinct header (the files of a data
set share one header), and the pixels are read with one ``readinto`` straight into
the caller's preallocated output.
"""

import math
import os
import struct
from io import BytesIO

import numpy as np
from numpy.lib import format as npy_format

from ._checks import (
    FileProblem,
    WrongShape,
    dtype_problem,
    format_bytes,
    problems_error,
    shape_problem,
    value_problem,
)

__all__ = [
    "NpyHeader",
    "npy_shape",
    "open_binary",
    "open_lens_stack",
    "read_cutout_header",
    "read_cutout_into",
    "read_cutout_shape",
    "read_header",
    "read_lens_file",
    "read_pixels_into",
]

_MAGIC = b"\x93NUMPY"
_MAX_HEADER_BYTES = 100_000


class NpyHeader:
    """A parsed ``.npy`` header: shape, order, dtype, and where the pixels start."""

    __slots__ = ("direct", "dtype", "file_size", "fortran_order", "offset", "shape")

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
    except Exception as exc:  # noqa: BLE001 - any parse failure of foreign bytes is a data problem
        parsed = f"has a corrupt .npy header ({type(exc).__name__}: {exc})"
    if len(_parsed_headers) >= _PARSED_HEADERS_MAX:
        _parsed_headers.clear()
    _parsed_headers[key] = parsed
    return parsed


def open_binary(path):
    """Open ``path`` for binary reading, turning OS errors into :class:`FileProblem`."""
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise FileProblem("is a folder, not a .npy file") from None
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:  # pragma: no cover - raced away
                target = "?"
            raise FileProblem(f"is a broken symbolic link (it points to '{target}', which does not exist)") from None
        raise FileProblem("does not exist (was it moved or deleted?)") from None
    except PermissionError:
        raise FileProblem("cannot be read: permission denied") from None
    except OSError as exc:
        raise FileProblem(f"cannot be read: {exc.strerror or exc}") from None


def read_header(f):
    """Read and parse the ``.npy`` header of the open file ``f`` (positioned at 0).

    Any shape and dtype is returned; raises :class:`FileProblem` when the file is
    empty, not ``.npy``, of an unknown format version, or its header is
    truncated or corrupt.
    """
    try:
        stat = os.fstat(f.fileno())
    except OSError as exc:  # pragma: no cover - very unusual
        raise FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    file_size = stat.st_size
    if file_size == 0:
        raise FileProblem("is empty (0 bytes)")
    try:
        magic = f.read(8)
        if len(magic) < 8 or not magic.startswith(_MAGIC):
            if magic.startswith(b"PK\x03\x04"):
                raise FileProblem("is a zip archive (an .npz?), not a .npy file")
            raise FileProblem("is not a .npy file (it does not start with the NumPy file signature)")
        version = magic[6]
        if version == 1:
            length_bytes = f.read(2)
            fmt = "<H"
        elif version in (2, 3):
            length_bytes = f.read(4)
            fmt = "<I"
        else:
            raise FileProblem(f"uses .npy format version {version}.{magic[7]}, which is not supported")
        if len(length_bytes) < struct.calcsize(fmt):
            raise FileProblem(f"is truncated: it ends inside the .npy header ({file_size} bytes)")
        (header_length,) = struct.unpack(fmt, length_bytes)
        if header_length > _MAX_HEADER_BYTES:
            raise FileProblem(
                f"has an implausibly large .npy header ({header_length:,} bytes); the file is corrupt"
            )
        header = f.read(header_length)
    except OSError as exc:
        raise FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    if len(header) < header_length:
        raise FileProblem(f"is truncated: it ends inside the .npy header ({file_size} bytes)")
    parsed = _parse_header_bytes(version, length_bytes, header)
    if isinstance(parsed, str):
        raise FileProblem(parsed)
    shape, fortran_order, dtype = parsed
    offset = 8 + len(length_bytes) + header_length
    return NpyHeader(shape, fortran_order, dtype, offset, file_size)


def npy_shape(path):
    """The shape in the ``.npy`` header of ``path``, or None when it has no readable header.

    Only the header is read and nothing else is checked (any dtype, any number
    of dimensions); the readers report the problems of the file later.
    """
    try:
        with open_binary(path) as f:
            return read_header(f).shape
    except FileProblem:
        return None


def _check_data_size(header):
    """Compare the size the header announces with the bytes that follow (no allocation)."""
    needed = math.prod(header.shape) * header.dtype.itemsize
    available = header.file_size - header.offset
    if available < needed:
        raise FileProblem(
            f"is truncated: its header announces shape {header.shape} of {header.dtype} "
            f"({format_bytes(needed)} of pixel data) but only {format_bytes(max(available, 0))} follow"
        )


def read_cutout_header(f):
    """Header of one cutout file: parsed, with dtype, shape and size checked."""
    header = read_header(f)
    problem = dtype_problem(header.dtype) or shape_problem(header.shape)
    if problem:
        raise FileProblem(problem)
    _check_data_size(header)
    return header


def read_cutout_shape(path):
    """Shape (bands, height, width) of the cutout file ``path``; :class:`FileProblem` if unusable."""
    with open_binary(path) as f:
        return read_cutout_header(f).shape


def read_pixels_into(f, header, out):
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
        raise FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    if got != wanted:
        raise FileProblem(f"is truncated: only {got:,} of {wanted:,} bytes of pixel data could be read")


def read_cutout_into(path, out):
    """Read one validated cutout into ``out``; raise :class:`WrongShape` when its shape differs.

    The pixel values are not checked (see :func:`~lensclf._checks.value_problems`).
    """
    with open_binary(path) as f:
        header = read_cutout_header(f)
        if header.shape != out.shape:
            raise WrongShape(header.shape)
        read_pixels_into(f, header, out)


# --------------------------------------------------------------------------- public


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
        with open_binary(path) as f:
            header = read_cutout_header(f)
            if expected_shape is not None and header.shape != expected_shape:
                raise FileProblem(f"has shape {header.shape}; expected {expected_shape}")
            image = np.empty(header.shape, dtype=np.float32)
            read_pixels_into(f, header, image)
        reason = value_problem(image)
        if reason:
            raise FileProblem(reason)
    except FileProblem as exc:
        raise problems_error([(path, exc.reason)]) from None
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
        with open_binary(path) as f:
            header = read_header(f)
        problem = dtype_problem(header.dtype)
        if problem:
            raise FileProblem(problem)
        ndim = len(header.shape)
        if ndim == 3:
            raise FileProblem(
                f"is 3-D with shape {header.shape}: a single cutout; expected a stack of shape "
                "(n_cutouts, bands, height, width). Read single cutouts with lensclf.read_lens_file"
            )
        if ndim != 4:
            raise FileProblem(
                f"is {ndim}-D with shape {header.shape}; expected a stack of shape (n_cutouts, bands, height, width)"
            )
        if 0 in header.shape:
            raise FileProblem(f"holds no cutouts (shape {header.shape})")
        _check_data_size(header)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # pragma: no cover - raced with a change on disk
            raise FileProblem(f"cannot be memory-mapped: {exc}") from None
    except FileProblem as exc:
        raise problems_error([(path, exc.reason)]) from None
