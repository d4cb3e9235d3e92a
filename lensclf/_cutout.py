"""One cutout, whatever holds it: a ``.npy`` file, a FITS file, or one FITS file per band.

The readers of many files (:mod:`lensclf._filearray`) call :func:`cutout_shape`
and :func:`read_cutout_into` here, which pick the format's reader by the file
name: :mod:`lensclf._npy` for ``.npy``, :mod:`lensclf._fits` for FITS names
and for :class:`~lensclf._fits.BandFiles`. :func:`as_source` keeps a
``BandFiles`` as it is and turns every other path into ``str``.
"""

import os

from ._fits import BandFiles, bands_shape, fits_shape, is_fits_name, read_bands_into, read_fits_into
from ._npy import read_cutout_into as read_npy_into
from ._npy import read_cutout_shape as npy_cutout_shape

__all__ = ["CUTOUT_FORMATS", "as_source", "cutout_shape", "is_cutout_name", "read_cutout_into"]

#: The file formats of single cutouts, for messages.
CUTOUT_FORMATS = ".npy or FITS (.fits, .fit, .fts, .fits.gz, .fz)"


def is_cutout_name(name):
    """Whether a folder entry named ``name`` is a cutout file: ``.npy`` or FITS, not hidden."""
    return not name.startswith(".") and (name.lower().endswith(".npy") or is_fits_name(name))


def as_source(item):
    """A cutout source: a :class:`BandFiles` as it is, any other path as ``str``."""
    return item if isinstance(item, BandFiles) else os.fspath(item)


def cutout_shape(source):
    """(bands, height, width) of one cutout; :class:`~lensclf._checks.FileProblem` if unusable."""
    if isinstance(source, BandFiles):
        return bands_shape(source)
    if is_fits_name(source):
        return fits_shape(source)
    return npy_cutout_shape(source)


def read_cutout_into(source, out):
    """Read one cutout into ``out``; :class:`~lensclf._checks.WrongShape` when its shape differs."""
    if isinstance(source, BandFiles):
        read_bands_into(source, out)
    elif is_fits_name(source):
        read_fits_into(source, out)
    else:
        read_npy_into(source, out)
