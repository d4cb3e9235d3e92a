"""Prediction inputs: the files, stacks and folders given to ``lensclf predict``, planned and read.

:func:`expand_inputs` turns the inputs into a list of files (a folder becomes its
``.npy`` files in natural order); :func:`plan_inputs` reads their headers and
groups them into stacks (scored in chunks from a memory map) and runs of single
cutout files; :func:`read_input_files` reads one such run. Problems are raised
or, with ``errors="skip"``, returned as ``(path, reason)`` lists.
"""

import os
import warnings

from ._checks import problems_error
from ._errors import LensDataError, LensDataWarning
from ._filearray import LensFileArray
from ._layout import is_npy_name, natural_key
from ._npy import npy_shape

__all__ = ["expand_inputs", "plan_inputs", "read_input_files"]


def expand_inputs(inputs):
    """Files to score, in order: folders become their ``.npy`` files (natural order, not recursive).

    Raises :class:`FileNotFoundError` for an input that does not exist and
    :class:`~lensclf.LensDataError` for a folder without ``.npy`` files.
    """
    files = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            with os.scandir(item) as entries:
                names = [e.name for e in entries if is_npy_name(e.name) and e.is_file()]
            if not names:
                raise LensDataError(f"{item}: folder holds no .npy files", [(item, "no .npy files")])
            files += [os.path.join(item, name) for name in sorted(names, key=natural_key)]
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def plan_inputs(files, input_shape, errors):
    """Group ``files`` into work for a model of input ``input_shape`` (bands, height, width).

    Returns ``(plan, skipped)``. ``plan`` lists, in input order,
    ``("stack", path, n_rows)`` for a stacked ``.npy`` file and
    ``("files", [paths])`` for a run of single-cutout files (and files whose
    header cannot be read, which :func:`read_input_files` reports). Files whose
    header shows a shape the model cannot score are problems: with
    ``errors="raise"`` the first raises a :class:`~lensclf.LensDataError`,
    with ``errors="skip"`` they are returned in ``skipped`` as (path, reason).
    """
    input_shape = tuple(input_shape)
    plan, skipped = [], []
    for path in files:
        shape = npy_shape(path)
        problem = None
        if shape is not None and len(shape) == 4:
            if shape[1:] != input_shape:
                problem = f"is a stack of cutouts of shape {shape[1:]}; the model expects {input_shape}"
            elif shape[0] == 0:
                problem = "is a stack that holds no cutouts"
            else:
                plan.append(("stack", path, shape[0]))
                continue
        elif shape is not None and len(shape) == 3 and shape != input_shape:
            problem = f"has shape {shape}; the model expects {input_shape}"
        if problem is not None:
            if errors == "raise":
                raise problems_error([(path, problem)])
            skipped.append((path, problem))
            continue
        if plan and plan[-1][0] == "files":
            plan[-1][1].append(path)
        else:
            plan.append(("files", [path]))
    return plan, skipped


def read_input_files(paths, errors):
    """Read single-cutout files: ``(X, kept, skipped)``.

    ``X`` holds the cutouts of the files ``kept`` (``None`` when no file is
    usable). With ``errors="raise"`` the first problem raises a
    :class:`~lensclf.LensDataError`; with ``errors="skip"`` bad files are left
    out and returned in ``skipped`` as (path, reason), without a warning.
    """
    skipped = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LensDataWarning)
        try:
            array = LensFileArray(paths, errors=errors)
        except LensDataError as exc:  # errors="skip" and no file usable
            if errors == "raise":
                raise
            return None, [], list(exc.problems)
        skipped += array.skipped
        try:
            return array[:], array.paths, skipped
        except LensDataError as exc:  # pixel problems (NaN, blank) are found on reading
            if errors == "raise":
                raise
            bad = {path for path, _ in exc.problems}
            skipped += exc.problems
            kept = [path for path in array.paths if path not in bad]
            if not kept:
                return None, [], skipped
            return LensFileArray(kept)[:], kept, skipped
