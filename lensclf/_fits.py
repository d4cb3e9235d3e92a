"""The FITS reader (astropy): one cutout per file, or one file per band.

A cutout file holds a (bands, height, width) cube or a 2-D single-band image in
its primary HDU or, when the primary HDU is empty, in the first image extension
(tile-compressed ``.fz`` files keep their image there). ``.fits``, ``.fit``,
``.fts`` and their gzipped forms (``.fits.gz``) and ``.fz`` are read; astropy
applies ``BSCALE``/``BZERO``.

Pixels are converted to native float32 by value, whatever the byte order on
disk (FITS is big-endian), so the values equal astropy's. Blank pixels (the
``BLANK`` value of an integer image, or NaN) are reported like every other
unusable value by :func:`~lensclf._checks.value_problem`.

:class:`BandFiles` is one cutout stored as one 2-D file per band, in band
order; :func:`read_bands_into` reads it, checking that every band file exists
and that all have the same size.
"""

import contextlib
import os
import warnings

import numpy as np

from ._checks import FileProblem, WrongShape, dtype_problem, shape_problem

__all__ = ["FITS_SUFFIXES", "BandFiles", "bands_shape", "fits_shape", "is_fits_name", "read_bands_into", "read_fits_into"]

#: File name endings read as FITS (compared in lower case).
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz", ".fits.fz")


def is_fits_name(name):
    """Whether ``name`` ends like a FITS file (:data:`FITS_SUFFIXES`)."""
    return name.lower().endswith(FITS_SUFFIXES)


class BandFiles(tuple):
    """One cutout stored as one 2-D FITS file per band: the paths, in band order.

    ``object_id`` is the identifier shared by the band files; ``str()`` joins
    the paths with ``" + "``, so that reports and output files name every file.
    """

    def __new__(cls, paths, object_id=None):
        self = super().__new__(cls, (os.fspath(p) for p in paths))
        if not self:
            raise ValueError("BandFiles needs at least one band file")
        self.object_id = object_id
        return self

    def __getnewargs__(self):
        return tuple(self), self.object_id

    def __str__(self):
        return " + ".join(self)

    def __repr__(self):
        return f"BandFiles({list(self)!r}, object_id={self.object_id!r})"


def _fits():
    try:
        from astropy.io import fits
    except ImportError:  # pragma: no cover - astropy is a dependency
        raise FileProblem("is a FITS file, and reading FITS needs astropy: pip install astropy") from None
    return fits


@contextlib.contextmanager
def _quiet():
    """astropy's warnings silenced: what they report (truncation...) is raised as a FileProblem instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _open(path):
    fits = _fits()
    if not os.path.exists(path):
        raise FileProblem("does not exist (was it moved or deleted?)")
    if os.path.isdir(path):
        raise FileProblem("is a folder, not a FITS file")
    if os.path.getsize(path) == 0:
        raise FileProblem("is empty (0 bytes)")
    try:
        return fits.open(path, memmap=False, lazy_load_hdus=True)
    except PermissionError:
        raise FileProblem("cannot be read: permission denied") from None
    except (OSError, ValueError, EOFError) as exc:  # astropy's "no SIMPLE card", gzip errors...
        raise FileProblem(f"is not a readable FITS file ({exc})") from None


def _image_hdu(hdul):
    """The first HDU with image data: the primary HDU, else the first image extension."""
    try:
        for index, hdu in enumerate(hdul):
            if hdu.is_image and hdu.header.get("NAXIS", 0) > 0:
                return index, hdu
    except (OSError, ValueError, IndexError) as exc:
        raise FileProblem(f"has a corrupt FITS header ({exc})") from None
    raise FileProblem(f"holds no image: none of its {len(hdul)} HDU(s) has image data")


def _shape_of(hdu):
    shape = tuple(int(side) for side in hdu.shape)
    return (1, *shape) if len(shape) == 2 else shape


def fits_shape(path):
    """(bands, height, width) of the image of the FITS file ``path`` (2-D images have 1 band)."""
    with _quiet(), _open(path) as hdul:
        _, hdu = _image_hdu(hdul)
        shape = _shape_of(hdu)
    problem = shape_problem(shape)
    if problem:
        raise FileProblem(problem)
    return shape


def _read_data(path):
    """The image of ``path`` as an array (astropy's values) and its shape as a cutout."""
    with _quiet(), _open(path) as hdul:  # astropy's truncation warning becomes an error below
        index, hdu = _image_hdu(hdul)
        shape = _shape_of(hdu)
        problem = shape_problem(shape)
        if problem:
            raise FileProblem(problem)
        try:
            data = hdu.data
        except (OSError, ValueError, TypeError, EOFError) as exc:
            raise FileProblem(f"is truncated or corrupt: its image in HDU {index} cannot be read ({exc})") from None
        if data is None or data.size != int(np.prod(shape)):
            raise FileProblem(f"is truncated: HDU {index} announces shape {hdu.shape} but holds less data")
        problem = dtype_problem(data.dtype)
        if problem:
            raise FileProblem(problem)
        blank = hdu.header.get("BLANK")
        if blank is not None:  # astropy turns BLANK pixels into NaN when it scales integers
            n_blank = int(np.count_nonzero(data == blank if data.dtype.kind in "iu" else np.isnan(data)))
            if n_blank:
                raise FileProblem(
                    f"has {n_blank:,} blank pixel(s) (BLANK = {blank}) out of {data.size:,}; "
                    "mask or fill them before use"
                )
        return data.reshape(shape), shape


def read_fits_into(path, out):
    """Read the image of the FITS file ``path`` into ``out`` (float32, by value).

    Raises :class:`WrongShape` when the image's shape differs from ``out``'s.
    """
    data, shape = _read_data(path)
    if shape != out.shape:
        raise WrongShape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        out[...] = data


def _band_label(paths, i):
    return f"band {i + 1} ({paths[i]})"


def bands_shape(paths):
    """(bands, height, width) of a :class:`BandFiles` cutout: one 2-D image per file, all of one size."""
    sides = None
    for i, path in enumerate(paths):
        try:
            shape = fits_shape(path)
        except FileProblem as exc:
            raise FileProblem(f"{_band_label(paths, i)} {exc.reason}") from None
        if shape[0] != 1:
            raise FileProblem(f"{_band_label(paths, i)} holds {shape[0]} bands; a band file holds one 2-D image")
        if sides is None:
            sides = shape[1:]
        elif shape[1:] != sides:
            raise FileProblem(
                f"{_band_label(paths, i)} is {shape[1]} x {shape[2]} but band 1 is {sides[0]} x {sides[1]}; "
                "all band files of a cutout must have the same size"
            )
    return (len(paths), *sides)


def read_bands_into(paths, out):
    """Read a :class:`BandFiles` cutout into ``out`` (bands, height, width), one band per file."""
    shape = bands_shape(paths)
    if shape != out.shape:
        raise WrongShape(shape)
    for i, path in enumerate(paths):
        try:
            data, _ = _read_data(path)
        except FileProblem as exc:
            raise FileProblem(f"{_band_label(paths, i)} {exc.reason}") from None
        with np.errstate(over="ignore", invalid="ignore"):
            out[i] = data.reshape(out.shape[1:])
