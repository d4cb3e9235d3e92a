"""Class folders, with one file per cutout or one sub-folder per band: :func:`load_class_folders`.

Many lens samples come as one folder per class, such as the Bologna Lens
Finding Challenge's ``lens/`` and ``nolens/``. A class folder holds either one
cutout file per object (``.npy`` or FITS), or one sub-folder per band
(``Band1/ Band2/ ...``) holding one 2-D FITS file per object and band; the
files of one object are matched across the band folders by the object's ID,
read from the file name (by default its last number: ``imageSDSS_R-100003.fits``
is object ``100003``). Survey cutouts without labels often come as band folders
alone (``survey/Band1/ survey/Band2/ ...``): :func:`find_band_folders` lists
their objects the same way.
"""

import os
import re
import warnings
from collections.abc import Mapping

import numpy as np

from ._checks import problems_error, summarise
from ._cutout import CUTOUT_FORMATS, is_cutout_name
from ._errors import LensDataError, LensDataWarning
from ._filearray import read_cutouts
from ._fits import BandFiles, is_fits_name
from ._layout import CLASS_FOLDERS, natural_key

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_ID_PATTERN",
    "check_id_pattern",
    "find_band_folders",
    "find_class_folders",
    "is_band_layout",
    "is_class_layout",
    "load_class_folders",
]

#: Folder names recognised as classes when ``classes`` is not given (compared in lower case).
CLASS_NAMES = {"lens": 1, "lenses": 1, "nolens": 0, "nonlens": 0, "nonlenses": 0, "nolenses": 0, "non_lenses": 0}

#: The default object ID of a file name: its last run of digits.
DEFAULT_ID_PATTERN = r"(\d+)(?!.*\d)"


def check_id_pattern(id_pattern):
    """``id_pattern`` compiled: a regular expression whose first group captures the object ID of a file name.

    Raises :class:`ValueError` when it does not compile or has no group.
    """
    shown = f"'{id_pattern}'" if isinstance(id_pattern, str) else repr(id_pattern)
    try:
        pattern = re.compile(id_pattern)
    except (re.error, TypeError) as exc:
        raise ValueError(f"id_pattern {shown} is not a valid regular expression ({exc})") from None
    if pattern.groups < 1:
        raise ValueError(f"id_pattern must have a group that captures the object ID, got {shown} "
                         r"(e.g. '-(\d+)\.fits$')")
    return pattern


def _entries(folder):
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    files = sorted((e.name for e in entries if e.is_file() and is_cutout_name(e.name)), key=natural_key)
    subfolders = sorted((e.name for e in entries if e.is_dir()), key=natural_key)
    return files, subfolders


def _resolve_classes(root, classes):
    """``[(folder name, label)]`` of ``root``: the mapping given, or the known class names found."""
    if classes is not None:
        if not isinstance(classes, Mapping) or not classes:
            raise TypeError(f"classes must be a non-empty mapping of folder name to label (0 or 1), got {classes!r}")
        pairs = [(str(name), int(label)) for name, label in classes.items()]
        bad = [label for _, label in pairs if label not in (0, 1)]
        if bad:
            raise ValueError(f"class labels must be 0 (non-lens) or 1 (lens), got {bad[0]}")
        missing = [name for name, _ in pairs if not os.path.isdir(os.path.join(root, name))]
        if missing:
            raise FileNotFoundError(f"'{root}' has no class folder {missing[0]}/ (classes={dict(pairs)})")
        return pairs
    _, subfolders = _entries(root)
    pairs = [(name, CLASS_NAMES[name.lower()]) for name in subfolders if name.lower() in CLASS_NAMES]
    if {label for _, label in pairs} != {0, 1}:
        raise FileNotFoundError(
            f"'{root}' does not hold a lens and a non-lens class folder (looked for "
            f"{', '.join(sorted(CLASS_NAMES))}; found {', '.join(subfolders) or 'no folders'}). "
            "Pass classes={'folder': label, ...} to name them"
        )
    return pairs


def is_class_layout(root, classes=None):
    """Whether ``root`` holds class folders: those of ``classes`` (a mapping of folder name to label), or by
    default a lens and a non-lens folder of :data:`CLASS_NAMES`."""
    try:
        _resolve_classes(os.fspath(root), classes)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return False
    return True


def _band_objects(folder, band_names, id_pattern):
    """``(objects, problems)`` of a class folder with band sub-folders."""
    by_band, problems = [], []
    for band in band_names:
        band_folder = os.path.join(folder, band)
        if not os.path.isdir(band_folder):
            raise LensDataError(f"{band_folder}: no such band folder (bands {', '.join(band_names)})",
                                [(band_folder, "no such band folder")])
        files = _entries(band_folder)[0]
        if not files:
            raise LensDataError(f"{band_folder}: band folder holds no FITS files", [(band_folder, "no band files")])
        paths = {}
        for name in files:
            match = id_pattern.search(name)
            path = os.path.join(band_folder, name)
            if match is None:
                problems.append((path, f"has no object ID in its name (pattern {id_pattern.pattern!r})"))
            elif match.group(1) in paths:
                problems.append((path, f"has the same object ID {match.group(1)} as {paths[match.group(1)]}"))
            else:
                paths[match.group(1)] = path
        by_band.append(paths)
    objects = []
    for object_id in sorted(set().union(*by_band), key=natural_key):
        missing = [band for band, paths in zip(band_names, by_band) if object_id not in paths]
        if missing:
            where = os.path.join(folder, "[" + ",".join(band_names) + "]")
            problems.append((f"{where} ID {object_id}",
                             f"has no file for band(s) {', '.join(missing)} (found in the other band folders)"))
            continue
        objects.append(BandFiles([paths[object_id] for paths in by_band], object_id))
    return objects, problems


def find_class_folders(root, classes=None, *, bands=None, id_pattern=DEFAULT_ID_PATTERN):
    """List the cutouts of a class-folder layout without reading them.

    Returns ``(sources, labels, bands, problems)``: one source per object (a
    path, or a :class:`~lensclf._fits.BandFiles` in band order), its label, the
    band folder names in the order used (``None`` when the class folders hold
    the cutout files themselves), and ``(path, reason)`` of objects that cannot
    be assembled (a band file missing, a duplicate ID).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder '{root}' does not exist or is not a folder")
    pattern = check_id_pattern(id_pattern)
    sources, labels, problems, used_bands = [], [], [], None
    for name, label in _resolve_classes(root, classes):
        folder = os.path.join(root, name)
        files, subfolders = _entries(folder)
        if files and (bands is None or not subfolders):
            objects = [os.path.join(folder, f) for f in files]
        elif subfolders:
            band_names = list(bands) if bands is not None else subfolders
            if used_bands is not None and band_names != used_bands:
                raise LensDataError(f"{folder}: band folders {band_names} differ from {used_bands} of the other class",
                                    [(folder, "other band folders")])
            used_bands = band_names
            objects, bad = _band_objects(folder, band_names, pattern)
            problems += bad
        else:
            raise LensDataError(f"{folder}: class folder holds no cutout files ({CUTOUT_FORMATS}) and no band folders",
                                [(folder, "no cutout files")])
        sources += objects
        labels += [label] * len(objects)
    if bands is not None and used_bands is None:
        raise ValueError(f"{root}: bands {','.join(bands)} given, but its class folders hold cutout files, "
                         "not band folders")
    return sources, np.asarray(labels, dtype=np.int64), used_bands, problems


_DEEPLENSE_NAMES = {folder.name for folder in CLASS_FOLDERS}


def is_band_layout(root):
    """Whether ``root`` is an unlabelled folder of band folders (``Band1/ Band2/ ...`` holding FITS files).

    It holds no cutout file of its own and only sub-folders, at least one of them with FITS files, and none
    named like a class folder (:data:`CLASS_NAMES`) or a folder of the DeepLense layout (``train_lenses``...).
    """
    root = os.fspath(root)
    try:
        files, subfolders = _entries(root)
        if files or not subfolders or any(name.lower() in CLASS_NAMES or name in _DEEPLENSE_NAMES
                                          for name in subfolders):
            return False
        return any(any(is_fits_name(f) for f in _entries(os.path.join(root, name))[0]) for name in subfolders)
    except OSError:
        return False


def find_band_folders(root, bands=None, *, id_pattern=DEFAULT_ID_PATTERN):
    """List the objects of an unlabelled folder of band folders without reading them.

    The band folders are matched by object ID exactly as those of a class
    folder (:func:`find_class_folders`): one 2-D FITS file per object and band.

    Parameters
    ----------
    root : str or path-like
        The folder holding the band folders (``root/Band1/imageSDSS_R-123.fits`` ...).
    bands : sequence of str, optional
        The band folders, in the order of the cutouts' bands. Default: all
        sub-folders, in natural name order.
    id_pattern : str, default=r"(\\d+)(?!.*\\d)"
        As for :func:`load_class_folders`.

    Returns
    -------
    sources : list of BandFiles
        One per object, in natural order of the IDs.
    bands : list of str
        The band folders in the order used.
    problems : list of (str, str)
        ``(where, reason)`` of objects that cannot be assembled (a band file
        missing, a duplicate ID, a name without an ID).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"band-folder directory '{root}' does not exist or is not a folder")
    pattern = check_id_pattern(id_pattern)
    band_names = list(bands) if bands is not None else _entries(root)[1]
    if not band_names:
        raise LensDataError(f"{root}: holds no band folders", [(root, "no band folders")])
    objects, problems = _band_objects(root, band_names, pattern)
    return objects, band_names, problems


def load_class_folders(root, classes=None, *, bands=None, id_pattern=DEFAULT_ID_PATTERN, errors="raise",
                       return_paths=False, return_skipped=False, return_bands=False, n_threads=None):
    """Load a folder of class folders (``lens/`` and ``nolens/``...), with or without band sub-folders.

    Parameters
    ----------
    root : str or path-like
        The folder holding the class folders.
    classes : mapping of str to int, optional
        Class folder names and their labels (1 lens, 0 non-lens), e.g.
        ``{"SL": 1, "field": 0}``. Default: the folders named ``lens``/``lenses``
        (label 1) and ``nolens``/``nonlens``/``nonlenses`` (label 0), in any case.
    bands : sequence of str, optional
        The band sub-folders, in the order of the cutouts' bands (e.g.
        ``["Band3", "Band1", "Band2"]`` for g, r, i). Default: all sub-folders, in
        natural name order (``Band1``, ``Band2``, ...). A :class:`ValueError`
        when the class folders hold the cutout files themselves.
    id_pattern : str, default=r"(\\d+)(?!.*\\d)"
        Regular expression whose first group is the object ID in a band file's
        name (default: its last number).
    errors : {"raise", "skip"}, default="raise"
        As in :func:`~lensclf.load_lens_dir`; an object missing a band file is a
        problem of that object.
    return_paths : bool, default=False
        Also return each row's source (str: a path, or the band files joined
        with ``" + "``, in band order).
    return_skipped : bool, default=False
        Also return the ``(path, reason)`` list of everything left out.
    return_bands : bool, default=False
        Also return the band folders in the order used (``None`` when the class
        folders hold the cutout files themselves).
    n_threads : int, optional
        Threads reading files.

    Returns
    -------
    X : ndarray of shape (n_cutouts, bands, height, width), float32
    y : ndarray of shape (n_cutouts,), int64
    paths : list of str, only with ``return_paths``
    skipped : list of (str, str), only with ``return_skipped``
    bands : list of str or None, only with ``return_bands``
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    sources, labels, used_bands, problems = find_class_folders(root, classes, bands=bands, id_pattern=id_pattern)
    X, bad = read_cutouts(sources, n_threads) if sources else (np.empty((0, 0, 0, 0), np.float32), {})
    problems = problems + [(str(sources[i]), reason) for i, reason in sorted(bad.items())]
    kept = np.array([i for i in range(len(sources)) if i not in bad], dtype=np.intp)
    if problems and errors == "raise":
        raise problems_error(problems, "also have problems; all are listed in this error's .problems",
                             hint=". Pass errors='skip' to leave bad files out")
    if len(kept) == 0:
        raise LensDataError(f"no usable cutouts in '{root}': " + (summarise(problems) or "no files"), problems)
    if problems:
        warnings.warn(LensDataWarning(f"skipped {len(problems):,} object(s) in '{root}': " + summarise(problems)),
                      stacklevel=2)
    result = [X[kept] if len(kept) < len(X) else X, labels[kept]]
    if return_paths:
        result.append([str(sources[i]) for i in kept])
    if return_skipped:
        result.append(problems)
    if return_bands:
        result.append(used_bands)
    return tuple(result)
