"""Prediction inputs: the files, stacks and folders given to ``lensclf predict``, planned and read.

:func:`input_kind` says what an input is (a zarr store, class folders, band
folders, a DeepLense layout, a folder of cutout files, a file);
:func:`check_layout` refuses the class-folder options (``classes``, ``bands``,
``id_pattern``: ``--classes``, ``--bands``, ``--id-pattern``) for inputs they do
not apply to, and :func:`layout_sources` lists the objects of class folders and
band folders with them.
:func:`expand_inputs` turns the inputs into a list of files (a folder becomes its
cutout files in natural order); :func:`plan_inputs` reads their headers and
groups them into stacks (scored in chunks from a memory map) and runs of single
cutout files; :func:`read_input_files` reads one such run. Problems are raised
or, with ``errors="skip"``, returned as ``(path, reason)`` lists.
"""

import os
import warnings

from ._checks import FileProblem, problems_error
from ._errors import LensDataError, LensDataWarning
from ._filearray import LensFileArray
from ._cutout import CUTOUT_FORMATS, cutout_shape, is_cutout_name
from ._classdirs import find_band_folders, find_class_folders, is_band_layout, is_class_layout
from ._fits import BandFiles, is_fits_name
from ._fitsize import size_problem
from ._layout import CLASS_FOLDERS, natural_key
from ._npy import npy_shape
from ._zarr import LensZarrArray, is_zarr_store

__all__ = ["LAYOUT_OPTIONS", "check_layout", "expand_inputs", "folder_options", "input_kind", "layout_sources",
           "plan_inputs", "read_input_files"]

#: The class-folder options, in the ``layout`` dicts of the workflows, and their command-line names.
LAYOUT_OPTIONS = {"classes": "--classes", "bands": "--bands", "id_pattern": "--id-pattern"}
_KIND_NAMES = {"zarr": "a zarr store", "deeplense": "a DeepLense layout (train_lenses/ ...)",
               "band_folders": "a folder of band folders (no class folders)", "folder": "a folder of cutout files",
               "file": "a file"}


def input_kind(path, classes=None):
    """What the input ``path`` is.

    ``"zarr"`` (a store of ``lensclf pack``), ``"class_folders"`` (those of
    ``classes``, or ``lens/`` ``nolens/``...; with ``classes`` given, any folder
    that is neither a store nor a DeepLense layout, so that reading it names the
    class folder missing), ``"deeplense"`` (holds a folder ``train_lenses/``...),
    ``"band_folders"`` (only band folders of FITS files:
    :func:`~lensclf._classdirs.is_band_layout`), ``"folder"``, ``"file"`` or
    ``"missing"`` (nothing there; the readers say so).
    """
    path = os.fspath(path)
    if is_zarr_store(path):
        return "zarr"
    if not os.path.isdir(path):
        return "file" if os.path.exists(path) or os.path.islink(path) else "missing"
    if is_class_layout(path, classes):
        return "class_folders"
    if any(os.path.isdir(os.path.join(path, folder.name)) for folder in CLASS_FOLDERS):
        return "deeplense"
    if classes is not None:
        return "class_folders"
    return "band_folders" if is_band_layout(path) else "folder"


def check_layout(path, kind, layout):
    """Refuse the class-folder options ``layout`` (``classes``, ``bands``, ``id_pattern``) for an input of
    ``kind`` (:func:`input_kind`) they do not apply to, with a :class:`ValueError` naming the input."""
    if not layout or kind in ("class_folders", "missing") or (kind == "band_folders" and "classes" not in layout):
        return
    given = [LAYOUT_OPTIONS[key] for key in LAYOUT_OPTIONS if key in layout]
    raise ValueError(f"{path}: is {_KIND_NAMES[kind]}; {' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} "
                     "only to class folders (lens/ nolens/, or those of --classes) and to folders of band folders "
                     "(Band1/ Band2/ ...)")


def folder_options(layout):
    """The keyword arguments of ``layout`` that the folder listers take (``bands``, ``id_pattern``)."""
    return {key: layout[key] for key in ("bands", "id_pattern") if key in (layout or {})}


def layout_sources(path, kind, layout=None):
    """``(sources, labels, bands, problems)`` of class folders or band folders (``kind`` of :func:`input_kind`).

    The objects are listed, not read, with the options ``layout`` (``classes``,
    ``bands``, ``id_pattern``); band folders give label -1 (unknown).
    ``bands`` is the band folders in the order used (None for class folders of
    cutout files: then ``bands`` given is a :class:`ValueError`, not ignored).
    """
    layout = layout or {}
    options = folder_options(layout)
    if kind == "class_folders":
        sources, labels, bands, problems = find_class_folders(path, layout.get("classes"), **options)
        labels = [int(label) for label in labels]
    else:
        sources, bands, problems = find_band_folders(path, **options)
        labels = [-1] * len(sources)
    return sources, labels, bands, problems


def expand_inputs(inputs, errors="raise", skipped=None, layout=None):
    """Files to score, in order: folders become their cutout files (``.npy`` and FITS) (natural order, not recursive).

    Class folders (``lens/`` ``nolens/``, or those of ``layout["classes"]``) and
    folders of band folders become their objects (a
    :class:`~lensclf._fits.BandFiles` each), listed with the options ``layout``
    (:func:`layout_sources`); an object that cannot be assembled (a band file
    missing...) raises, or with ``errors="skip"`` is left out and appended to
    the list ``skipped`` as (where, reason).

    Raises :class:`FileNotFoundError` for an input that does not exist,
    :class:`~lensclf.LensDataError` for a folder without cutout files, and
    :class:`ValueError` for ``layout`` options given for an input they do not
    apply to (:func:`check_layout`).
    """
    layout = layout or {}
    skipped = [] if skipped is None else skipped
    files = []
    for item in inputs:
        item = os.fspath(item)
        kind = input_kind(item, layout.get("classes"))
        check_layout(item, kind, layout)
        if kind == "zarr":
            files.append(item)
        elif kind in ("class_folders", "band_folders"):
            sources, _, _, problems = layout_sources(item, kind, layout)
            if problems and errors == "raise":
                raise problems_error(problems, "also have problems", hint=". Pass --errors skip to leave them out")
            skipped += problems
            files += sources
        elif os.path.isdir(item):
            with os.scandir(item) as entries:
                names = [e.name for e in entries if is_cutout_name(e.name) and e.is_file()]
            if not names:
                raise LensDataError(f"{item}: folder holds no cutout files ({CUTOUT_FORMATS})",
                                    [(item, "no cutout files")])
            files += [os.path.join(item, name) for name in sorted(names, key=natural_key)]
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def read_problem(path):
    """Why the header of ``path`` cannot be read (for messages)."""
    try:
        cutout_shape(path)
    except FileProblem as exc:
        return exc.reason
    return "unreadable header"


def _file_shape(path):
    """The shape in a file's header (any number of dimensions), or None when it cannot be read."""
    if isinstance(path, BandFiles) or is_fits_name(path):
        try:
            return cutout_shape(path)
        except FileProblem:
            return None
    return npy_shape(path)


def _rows_of(path, row, extra, shape, n_rows, kind, plan):
    """Add rows of a stack or store to ``plan``: all of them, or ``row``; return a problem or None."""
    if row is not None and row >= n_rows:
        return f"has no row {row}: it holds {n_rows:,} cutouts"
    last = plan[-1] if plan else None
    if row is not None and last is not None and last[0] == kind and last[1] == path and last[4] is not None:
        last[2].append(row)
        last[4].append(extra)
        return None
    rows = list(range(n_rows)) if row is None else [row]
    plan.append((kind, path, rows, shape, None if extra is None else [extra] * len(rows)))
    return None


def plan_inputs(items, input_shape, errors, fit_size="error"):
    """Group the inputs into work for a model of input ``input_shape`` (bands, height, width).

    ``items`` are paths, or ``(path, row, extra)`` for catalogue entries (``row``:
    a row of a stack or store, or None; ``extra``: what to copy to the output).
    Returns ``(plan, skipped)``. ``plan`` lists, in input order,
    ``("stack" or "zarr", path, rows, shape, extras)`` for rows of a stacked
    ``.npy`` file or a zarr store and ``("files", paths, shape, extras)`` for a
    run of single-cutout files of one shape (``shape`` None: files whose header
    cannot be read, which :func:`read_input_files` reports); ``extras`` is None,
    or one ``extra`` per row. Inputs the model cannot score (shape, with
    ``fit_size``: see :mod:`lensclf._fitsize`) are problems: with
    ``errors="raise"`` the first raises a :class:`~lensclf.LensDataError`, with
    ``errors="skip"`` they are returned in ``skipped`` as (path, reason).
    """
    input_shape = tuple(input_shape)
    plan, skipped, stores = [], [], {}
    for item in items:
        if isinstance(item, BandFiles):
            path, row, extra = item, None, None
        elif isinstance(item, (str, os.PathLike)):
            path, row, extra = os.fspath(item), None, None
        else:
            path, row, extra = item
        problem = None
        if not isinstance(path, BandFiles) and is_zarr_store(path):
            try:
                store = stores.get(path) or stores.setdefault(path, LensZarrArray(path))
            except LensDataError as exc:
                problem = exc.problems[0][1] if exc.problems else str(exc)
            except (OSError, ValueError) as exc:  # missing, or not a store
                problem = str(exc).removeprefix(f"{path}: ")
            else:
                shape = tuple(store.shape[1:])
                problem = size_problem(shape, input_shape, fit_size)
                if problem is None:
                    problem = _rows_of(path, row, extra, shape, len(store), "zarr", plan)
        else:
            shape = _file_shape(path)
            if shape is not None and len(shape) == 4:
                problem = size_problem(shape[1:], input_shape, fit_size)
                if problem:
                    problem = "is a stack; each cutout " + problem
                elif shape[0] == 0:
                    problem = "is a stack that holds no cutouts"
                else:
                    problem = _rows_of(path, row, extra, tuple(shape[1:]), shape[0], "stack", plan)
            elif row is not None:
                problem = (f"cannot be read as a stack ({read_problem(path)})" if shape is None else
                           f"is not a stack or a zarr store, but the catalogue gives row {row}")
            else:
                shape = tuple(shape) if shape is not None and len(shape) == 3 else None
                problem = size_problem(shape, input_shape, fit_size) if shape else None
                if problem is None:
                    run = plan[-1] if plan and plan[-1][0] == "files" else None
                    if run is not None and (shape is None or run[2] in (None, shape)):
                        run[1].append(path)
                        if run[3] is not None:
                            run[3].append(extra)
                        if run[2] is None:
                            plan[-1] = ("files", run[1], shape, run[3])
                    else:
                        plan.append(("files", [path], shape, None if extra is None else [extra]))
        if problem is not None:
            if errors == "raise":
                raise problems_error([(path if row is None else f"{path}[{row}]", problem)])
            skipped.append((path if row is None else f"{path}[{row}]", problem))
    return plan, skipped


def read_input_files(paths, errors):
    """Read single-cutout files: ``(X, kept, skipped)``.

    ``X`` holds the cutouts of the files at the positions ``kept`` of
    ``paths`` (``X`` is ``None`` when no file is usable). With
    ``errors="raise"`` the first problem raises a
    :class:`~lensclf.LensDataError`; with ``errors="skip"`` bad files are left
    out and returned in ``skipped`` as (path, reason), without a warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LensDataWarning)
        try:
            array = LensFileArray(paths, errors=errors)
        except LensDataError as exc:  # errors="skip" and no file usable
            if errors == "raise":
                raise
            return None, [], list(exc.problems)
        skipped = list(array.skipped)
        bad = {str(path) for path, _ in skipped}
        try:
            X = array[:]
        except LensDataError as exc:  # pixel problems (NaN, blank) are found on reading
            if errors == "raise":
                raise
            skipped += exc.problems
            bad |= {str(path) for path, _ in exc.problems}
            X = None
        kept = [i for i, path in enumerate(paths) if str(path) not in bad]
        if X is None and kept:
            X = LensFileArray([paths[i] for i in kept])[:]
        return X, kept, skipped
