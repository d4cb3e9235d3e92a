"""What makes a lens cutout unusable, and how the problems found are reported.

The checks here do not depend on the file format: a reader (the ``.npy`` one in
:mod:`lensclf._npy` today, FITS or zarr ones later) parses its header into a
NumPy dtype and shape, asks :func:`dtype_problem` and :func:`shape_problem`,
reads the pixels as float32 and asks :func:`value_problem`. It signals an
unusable file with :class:`FileProblem` and a file of another shape with
:class:`WrongShape`.

A list of ``(path, reason)`` becomes one :class:`~lensclf.LensDataError` that
names the first problem and counts the others (:func:`problems_error`), or a
short summary for a warning (:func:`summarise`). :func:`majority_shape` is the
vote that decides which files of a set have the odd shape.
"""

from collections import Counter

import numpy as np

from ._errors import LensDataError

__all__ = [
    "FileProblem",
    "WrongShape",
    "dtype_problem",
    "format_bytes",
    "majority_shape",
    "odd_shape_reason",
    "problems_error",
    "shape_problem",
    "summarise",
    "value_problem",
    "value_problems",
]


class FileProblem(Exception):
    """One file cannot be used; ``reason`` says why (without the path)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class WrongShape(Exception):
    """A valid file whose shape differs from the one being filled."""

    def __init__(self, shape):
        super().__init__(shape)
        self.shape = shape


# --------------------------------------------------------------------------- checks of one cutout


def format_bytes(n):
    """Exact byte counts for small sizes, decimal units for large ones."""
    if n < 10_000_000:
        return f"{n:,} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:,.1f} {unit}"


def dtype_problem(dtype):
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


def shape_problem(shape):
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
            "file with shape (bands, height, width). Open stacked .npy files with lensclf.open_lens_stack"
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


def value_problem(image):
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


def value_problems(block):
    """Row indices of ``block`` (N, C, H, W) with unusable values, with the reasons."""
    flat = block.reshape(block.shape[0], block.shape[1], -1)
    low, high = flat.min(axis=2), flat.max(axis=2)
    # min and max propagate NaN and reach +-inf, so they tell finiteness too
    finite = np.isfinite(low).all(axis=1) & np.isfinite(high).all(axis=1)
    blank = (low == high).all(axis=1)
    bad = np.flatnonzero(~finite | blank)
    return [(int(i), value_problem(block[i])) for i in bad]


# --------------------------------------------------------------------------- many files


def majority_shape(shapes, prefer=None):
    """The most common shape among ``shapes`` and how many files have it: ``(shape, count)``.

    ``None`` entries (files whose shape is unknown) are ignored. A tie goes to
    ``prefer`` (default: the first known shape in ``shapes``), then to the shape
    seen first. Returns ``(None, 0)`` when no shape is known.
    """
    counts = Counter(shape for shape in shapes if shape is not None)
    if not counts:
        return None, 0
    if prefer is None:
        prefer = next(iter(counts))
    return max(counts.items(), key=lambda item: (item[1], item[0] == prefer))


def odd_shape_reason(shape, majority, count, n_files):
    """The problem of a file of ``shape`` when ``count`` of the ``n_files`` have ``majority``."""
    return (
        f"has shape {shape} but {count:,} of the {n_files:,} files have shape {majority}; "
        "all cutouts must have the same number of bands and size"
    )


def problems_error(problems, others="also have problems", hint=""):
    """One :class:`~lensclf.LensDataError` for ``problems``, a non-empty list of (path, reason).

    The message is ``"PATH: REASON"`` of the first problem, then
    ``" (N other file(s) OTHERS)"`` when there are more, then ``hint``; the
    error's ``problems`` holds them all.
    """
    path, reason = problems[0]
    message = f"{path}: {reason}"
    if len(problems) > 1:
        message += f" ({len(problems) - 1:,} other file(s) {others})"
    return LensDataError(message + hint, problems)


def summarise(problems, limit=3):
    """The first ``limit`` of ``problems`` as ``"path: reason; ..."``, counting the rest."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:limit])
    if len(problems) > limit:
        shown += f"; ... and {len(problems) - limit:,} more"
    return shown
