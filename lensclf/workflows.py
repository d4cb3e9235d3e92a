"""The work behind each ``lensclf`` command, as plain Python functions.

:func:`run_train`, :func:`run_evaluate`, :func:`run_predict`,
:func:`run_simulate` and :func:`run_demo` do what ``lensclf train``,
``evaluate``, ``predict``, ``simulate`` and ``demo`` do (same files, same
messages); :mod:`lensclf.cli` only parses the arguments and calls them. Also
here: :func:`train_classifier`, the SIGINT / SIGTERM handling of training
(:class:`TrainingInterrupted`), the chunked scoring of ``predict`` and
``evaluate``, and the file names and sizes the commands use.
"""

import csv
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Mapping

import numpy as np
from tqdm.auto import tqdm

from ._classdirs import check_id_pattern, load_class_folders
from ._classifier import LensClassifier, save_model
from ._cluster import score_store
from ._device import resolve_device
from ._errors import LensDataError, LensDataWarning
from ._files import atomic_save_json, atomic_write, check_output_folder, save_figure
from ._fitsize import check_fit_size, describe, fit_to_size, size_problem
from ._history import history_records
from ._catalog import read_catalog
from ._checks import problems_error, value_problems
from ._inputs import (
    LAYOUT_OPTIONS, check_layout, expand_inputs, folder_options, input_kind, layout_sources, plan_inputs,
    read_input_files,
)
from ._layout import class_folders, count_cutouts, load_lens_dir
from ._npy import open_lens_stack
from ._tables import ScoreTable
from ._zarr import LensZarrArray, is_zarr_store, pack_cutouts
from .plots import plot_history
from .report import format_summary, write_report
from .simulate import write_lens_dir

__all__ = [
    "CHECKPOINT_DIR_NAME",
    "DEMO_DIFFICULTY",
    "DEMO_EPOCHS",
    "DEMO_FAST_EPOCHS",
    "DEMO_FAST_SIZES",
    "DEMO_SEED",
    "DEMO_SIZES",
    "MODEL_FILE_NAME",
    "PREDICT_CHUNK_SIZE",
    "TrainingInterrupted",
    "run_demo",
    "run_evaluate",
    "run_pack",
    "run_predict",
    "run_simulate",
    "run_train",
    "train_classifier",
]

#: Name of the model file written by ``train`` and ``demo``.
MODEL_FILE_NAME = "model.safetensors"
#: Folder of ``train``'s epoch checkpoint and saved parameters, removed when the run completes.
CHECKPOINT_DIR_NAME = "checkpoint"
_PARAMS_FILE_NAME = "params.json"
#: Simulated set of ``lensclf demo`` (mild imbalance, 1:3, so the test AUC means something).
DEMO_SIZES = {"n_train_lenses": 625, "n_train_nonlenses": 1875, "n_test_lenses": 300, "n_test_nonlenses": 900}
#: Training epochs of ``lensclf demo``. With the lens-pretrained backbone, 3 epochs of these 2,500 cutouts reach
#: test AUC 0.999 with the phase-8 backbone (49 s for the whole demo on a fast day; 0.998 and 84 s with phase 7,
#: 0.997 with phase 6, 0.993 with phase 5), 0.975
#: with the phase-3 one and ``scaling="robust"`` (0.956 with the phase-2 one, 0.967 with ``"image"``; 101-111 s here)
#: (``"image"``: 3 epochs of 3,000: 0.964, 125 s; 2 of 4,000: 0.950; 5 of 4,000, the former setting: 0.968, 246 s).
DEMO_EPOCHS = 3
#: Tiny sizes of ``lensclf demo --fast`` (a smoke test, not a meaningful AUC).
DEMO_FAST_SIZES = {"n_train_lenses": 12, "n_train_nonlenses": 24, "n_test_lenses": 6, "n_test_nonlenses": 12}
#: Epochs of ``lensclf demo --fast``.
DEMO_FAST_EPOCHS = 1
#: Simulator preset of the demo: on "medium", 2,000 images and 3 epochs are too few to learn much (AUC ~0.53).
DEMO_DIFFICULTY = "easy"
DEMO_SEED = 0
#: Images scored at once by ``predict`` and ``evaluate``: memory does not grow with the input.
#: 1,024 rows (50 MB of 3x64x64 float32) keep a scoring process near 1.1 GiB; larger blocks
#: add memory and no speed (the network scores 256 at a time). Stores are read in whole chunks
#: close to this many rows.
PREDICT_CHUNK_SIZE = 1024

# --------------------------------------------------------------------------- small pieces


def _say(message="", quiet=False, file=None):
    if not quiet:
        print(message, file=file or sys.stdout, flush=True)


def _report_skipped(skipped):
    """List skipped inputs on stderr (always, even with --quiet: they concern the user's data)."""
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _write_history(run_dir, history):
    """history.csv, history.json and history.png of a training run."""
    rows = history_records(history)
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_write(os.path.join(run_dir, "history.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_save_json(os.path.join(run_dir, "history.json"), rows)
    save_figure(plot_history(history), os.path.join(run_dir, "history.png"))


def _prior_label(clf):
    """How the probabilities of ``clf`` are calibrated, for the report."""
    if clf.prior is not None:
        return clf.prior
    if math.isclose(clf.train_prior_, 0.5):
        return None  # write_report's "balanced (0.5)"
    return f"as trained ({clf.train_prior_:.4g})"


def _check_size(clf, shape, fit_size, where):
    """Raise a LensDataError naming ``where`` when cutouts of ``shape`` cannot be scored by ``clf``."""
    problem = size_problem(shape, clf.input_shape_, fit_size)
    if problem:
        raise LensDataError(f"{where}: the cutouts {problem}", [(where, problem)])


def _score(clf, X, quiet=False, desc="scoring", fit_size="error"):
    """Lens probabilities of ``X`` in chunks, with a progress bar (cutouts fitted to the model's size)."""
    n = len(X)
    scores = np.empty(n, dtype=np.float64)
    with tqdm(total=n, desc=desc, unit="img", disable=quiet) as bar:
        for start in range(0, n, PREDICT_CHUNK_SIZE):
            stop = min(start + PREDICT_CHUNK_SIZE, n)
            block = fit_to_size(np.asarray(X[start:stop], dtype=np.float32), clf.input_shape_, fit_size)
            scores[start:stop] = clf.predict_proba(block)[:, 1]
            bar.update(stop - start)
    return scores


def _relative(source, data_dir):
    """``source`` (a file, or band files joined with " + ") relative to ``data_dir`` when it lies inside it."""
    inside = os.path.abspath(data_dir) + os.sep
    return " + ".join(os.path.relpath(p, data_dir) if os.path.abspath(p).startswith(inside) else p
                      for p in source.split(" + "))


def _layout_options(classes=None, bands=None, id_pattern=None):
    """The class-folder options given, as a JSON-ready dict (the ``layout`` of the helpers below).

    ``classes`` maps class folder names to labels, ``bands`` lists band folders
    in order, ``id_pattern`` is checked here (it must compile and capture the ID).
    """
    layout = {}
    if classes is not None:
        if not isinstance(classes, Mapping) or not classes:
            raise TypeError(f"classes must be a non-empty mapping of folder name to label (0 or 1), got {classes!r}")
        layout["classes"] = {str(name): int(label) for name, label in classes.items()}
    if bands is not None:
        if isinstance(bands, (str, bytes)) or not bands:
            raise TypeError(f"bands must be a non-empty sequence of band folder names, got {bands!r}")
        layout["bands"] = [str(band) for band in bands]
    if id_pattern is not None:
        check_id_pattern(id_pattern)
        layout["id_pattern"] = str(id_pattern)
    return layout


def _layout_args(layout):
    """The command-line options of ``layout`` (for the commands printed to rerun a run)."""
    values = {"classes": lambda v: ",".join(f"{name}={label}" for name, label in v.items()),
              "bands": ",".join, "id_pattern": str}
    return "".join(f" {LAYOUT_OPTIONS[key]} {shlex.quote(values[key](layout[key]))}"
                   for key in LAYOUT_OPTIONS if key in layout)


def _data_kind(data_dir, layout):
    """How ``train`` and ``evaluate`` read ``data_dir``: ``"zarr"``, ``"class_folders"`` or ``"deeplense"``.

    Class-folder options (``layout``) for a store or a DeepLense layout, and a folder of band folders
    without classes (its objects have no labels), are errors.
    """
    kind = input_kind(data_dir, layout.get("classes"))
    check_layout(data_dir, kind, layout)
    if kind == "band_folders":
        raise LensDataError(f"{data_dir}: holds band folders but no class folders, so its objects have no labels; "
                            "train and evaluate need class folders (lens/ nolens/, or --classes NAME=LABEL,...), "
                            "a DeepLense layout or a labelled store (score it with lensclf predict)",
                            [(data_dir, "no class folders")])
    return kind if kind in ("zarr", "class_folders") else "deeplense"


def _describe_data(data_dir, split, layout=None, bands=None):
    """What ``training_data`` records of ``data_dir``: its layout, the band folders in the order used
    (``bands``, as :func:`_load_split` returned them), and the class-folder options given (``classes``,
    ``id_pattern``)."""
    layout = layout or {}
    kind = _data_kind(data_dir, layout)
    if kind == "zarr":
        return {"layout": "zarr"}
    if kind == "deeplense":
        return {"layout": "deeplense", "split": split}
    given = {key: layout[key] for key in ("classes", "id_pattern") if key in layout}
    return {"layout": "class_folders", **({"bands": bands} if bands else {}), **given}


def _load_split(data_dir, split, errors, cache=None, layout=None):
    """``(X, y, paths, skipped, bands)``: the labelled cutouts of ``data_dir``, their paths, the files left
    out (listed on stderr instead of warned) and the band folders in the order used (``None`` but for
    class folders with band sub-folders).

    A DeepLense layout gives its ``split``; class folders (``lens/``, ``nolens/``, or those of
    ``layout["classes"]``, with or without band sub-folders) give all their objects, and a zarr store
    (``lensclf pack``) its labelled rows, read lazily. ``layout``: the class-folder options
    (:func:`_layout_options`), refused for other layouts.
    """
    layout = layout or {}
    kind = _data_kind(data_dir, layout)
    if kind == "zarr":
        store = LensZarrArray(data_dir)
        labelled = np.flatnonzero(store.labels >= 0)
        if len(labelled) == 0:
            raise LensDataError(f"{data_dir}: the store's rows have no labels (it was packed from unlabelled "
                                "files); pack a labelled layout to train or evaluate on it", [(data_dir, "no labels")])
        X = LensZarrArray(data_dir, rows=labelled)
        return X, X.labels.astype(np.int64), [str(s) for s in X.sources], [], None
    bands = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LensDataWarning)
        if kind == "class_folders":
            X, y, paths, skipped, bands = load_class_folders(
                data_dir, layout.get("classes"), **folder_options(layout), errors=errors, return_paths=True,
                return_skipped=True, return_bands=True,
            )
        else:
            X, y, paths, skipped = load_lens_dir(
                data_dir, split, errors=errors, return_paths=True, return_skipped=True, cache=cache
            )
    _report_skipped(skipped)
    return X, y, paths, skipped, bands


# --------------------------------------------------------------------------- train


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM; ``signum`` says which."""

    def __init__(self, message="", signum=signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


class _StopOnSignals:
    """Within the block, SIGINT and SIGTERM raise :class:`TrainingInterrupted` (noting which came).

    skorch ends training at the end of the current batch on a ``KeyboardInterrupt``
    and keeps the best weights so far. The previous handlers are restored on exit.
    """

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        raise TrainingInterrupted(f"received signal {signum}", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False


def train_classifier(X, y, params, quiet=False, checkpoint_dir=None, resume=False):
    """Fit a :class:`LensClassifier` with ``params`` (verbose unless ``quiet``)."""
    clf = LensClassifier(**{**params, "verbose": 0 if quiet else 1, "checkpoint_dir": checkpoint_dir})
    return clf.fit(X, y, resume=resume)


def _resume_command(data_dir, run_dir):
    return f"lensclf train {shlex.quote(data_dir)} --out {shlex.quote(run_dir)} --resume"


def _resumed_layout(saved, given, params_path):
    """The class-folder options of a resumed run: those it started with; other ones given are an error."""
    if given and given != saved:
        started = _layout_args(saved).strip() or "no class-folder options"
        raise ValueError(f"{params_path}: the run started with {started}, and --resume continues with those: "
                         f"leave out {_layout_args(given).strip()} or give the same")
    return saved


def run_train(data_dir, run_dir, params=None, *, classes=None, bands=None, id_pattern=None, errors="raise",
              cache=False, overwrite=False, quiet=False, resume=False):
    """Train a lens classifier on the ``train`` split of a DeepLense-layout folder.

    Writes ``model.safetensors`` (the best weights), ``history.csv``,
    ``history.json`` and ``history.png`` into ``run_dir``. While training, the
    folder ``run_dir/checkpoint`` holds the parameters and the last epoch's
    checkpoint; it is removed when the run completes.

    SIGINT (Ctrl-C) or SIGTERM ends training after the current batch: the
    best model so far and the history are still saved, a line says how to
    resume, and :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) is
    raised; ``lensclf train`` then exits with 130 or 143.

    Parameters
    ----------
    data_dir : str or path-like
        Folder with ``train_lenses/`` and ``train_nonlenses/`` (and possibly the test folders).
    run_dir : str or path-like
        Output folder; must be missing or empty unless ``overwrite`` or ``resume``.
    params : dict, optional
        :class:`LensClassifier` parameters (``verbose`` is set from ``quiet``);
        ignored with ``resume``, which uses those the run started with.
    classes, bands, id_pattern : optional
        How class folders are read (``--classes``, ``--bands``, ``--id-pattern``;
        see :func:`lensclf.load_class_folders`); an error for a DeepLense
        layout or a store. Saved with the run: ``resume`` uses those the run
        started with.
    errors : {"raise", "skip"}, default="raise"
        Bad data files stop the run, or are listed on stderr and left out.
    cache : bool, default=False
        Cache the loaded split (see :func:`lensclf.load_lens_dir`).
    overwrite : bool, default=False
        Write into a non-empty ``run_dir``, replacing earlier outputs.
    quiet : bool, default=False
        Print nothing but errors and skipped files.
    resume : bool, default=False
        Continue the interrupted run in ``run_dir`` from its last epoch
        checkpoint; on CPU the result is the same as without interruption.

    Returns
    -------
    LensClassifier
        The fitted classifier.
    """
    params = dict(params or {})
    layout = _layout_options(classes, bands, id_pattern)
    data_dir, run_dir = os.fspath(data_dir), os.fspath(run_dir)
    checkpoint_dir = os.path.join(run_dir, CHECKPOINT_DIR_NAME)
    params_path = os.path.join(checkpoint_dir, _PARAMS_FILE_NAME)
    if resume:
        if overwrite:
            raise ValueError("--resume continues a run and --overwrite starts a new one: choose one.")
        if not os.path.isfile(params_path):
            raise FileNotFoundError(
                f"Nothing to resume in {run_dir!r}: {params_path!r} is missing (the run completed, was "
                "stopped before its first epoch ended, or was not made by 'lensclf train').")
        try:
            with open(params_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            params, saved_layout = saved["params"], saved.get("layout", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{params_path}: unreadable run parameters ({exc}).") from exc
        layout = _resumed_layout(saved_layout, layout, params_path)
    else:
        check_output_folder(run_dir, overwrite, "Run folder", "pass --overwrite")
    X, y, _, _, bands = _load_split(data_dir, "train", errors, cache=cache or None, layout=layout)
    n_lenses = int(np.count_nonzero(y == 1))
    _say(f"data: {data_dir}", quiet)
    _say(f"  train: {n_lenses:,} lenses, {len(y) - n_lenses:,} non-lenses "
         f"(loaded; {' x '.join(str(s) for s in X.shape[1:])} per cutout)", quiet)
    test_counts = [count_cutouts(os.path.join(data_dir, folder.name)) for folder in class_folders("test")]
    if None not in test_counts:
        _say(f"  test:  {test_counts[0]:,} lenses, {test_counts[1]:,} non-lenses (files counted, not loaded)", quiet)
    _say(f"device: {resolve_device(params.get('device', 'auto'))}", quiet)

    if resume:
        _say(f"resuming the run in {run_dir}", quiet)
    else:
        if overwrite and os.path.isdir(checkpoint_dir):
            shutil.rmtree(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        atomic_save_json(params_path, {"data_dir": os.path.abspath(data_dir), "params": params, "layout": layout})
    with _StopOnSignals() as stopper:
        try:
            clf = train_classifier(X, y, params, quiet=quiet, checkpoint_dir=checkpoint_dir, resume=resume)
        except KeyboardInterrupt as exc:
            signum = stopper.signum or getattr(exc, "signum", signal.SIGINT)
            print(f"interrupted before the first epoch ended; nothing saved. Start again with: lensclf train "
                  f"{shlex.quote(data_dir)} --out {shlex.quote(run_dir)}{_layout_args(layout)} --overwrite",
                  file=sys.stderr, flush=True)
            raise TrainingInterrupted("training interrupted before its first epoch ended", signum) from None
    interrupted = stopper.signum

    model_path = os.path.join(run_dir, MODEL_FILE_NAME)
    training_data = {
        "data_dir": os.path.abspath(data_dir),
        **_describe_data(data_dir, "train", layout, bands),
        "n_lenses": n_lenses,
        "n_nonlenses": int(len(y) - n_lenses),
    }
    save_model(clf, model_path, overwrite=overwrite or resume, training_data=training_data)
    _write_history(run_dir, clf.history_)
    if "valid_auc" in clf.history_[-1]:
        best_auc = clf.history_[clf.best_epoch_ - 1, "valid_auc"]
        _say(f"kept epoch: {clf.best_epoch_} of {len(clf.history_)} (keep={clf.keep!r}, validation ROC AUC "
             f"{best_auc:.4f})", quiet)
    _say(f"model: {model_path}", quiet)
    _say(f"history: {os.path.join(run_dir, 'history.csv')} (.json, .png)", quiet)
    if interrupted is not None:
        print(f"interrupted after epoch {len(clf.history_)} of {clf.max_epochs}; best model saved to "
              f"{model_path}; resume with: {_resume_command(data_dir, run_dir)}", file=sys.stderr, flush=True)
        raise TrainingInterrupted(f"training interrupted after epoch {len(clf.history_)}", interrupted)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return clf


# --------------------------------------------------------------------------- evaluate


def _load_model(model_path, device="auto", tta=None, prior=None, threshold=None, batch_size=None):
    clf = LensClassifier.load(model_path, device=device)
    changes = {"tta": tta, "prior": prior, "threshold": threshold, "predict_batch_size": batch_size}
    clf.set_params(**{key: value for key, value in changes.items() if value is not None})
    return clf


def run_evaluate(model_path, data_dir, report_dir, *, split="test", classes=None, bands=None, id_pattern=None,
                 tta=False, prior=None, threshold=None, errors="raise", device="auto", fit_size="error",
                 overwrite=False, quiet=False):
    """Score one split of a DeepLense-layout folder (or all of a class-folder layout) and write a report.

    Parameters
    ----------
    model_path : str or path-like
        A model saved by ``lensclf train`` or :meth:`LensClassifier.save`.
    data_dir : str or path-like
        DeepLense-layout folder, or class folders (see :func:`lensclf.load_class_folders`).
    report_dir : str or path-like
        Report folder (see :func:`lensclf.write_report`).
    split : {"test", "train"}, default="test"
        Which split to score.
    classes, bands, id_pattern : optional
        How class folders are read (``--classes``, ``--bands``, ``--id-pattern``;
        see :func:`lensclf.load_class_folders`); an error for a DeepLense
        layout or a store.
    tta : bool, default=False
        Average over the 8 flips and rotations of each image.
    prior : float, optional
        Lens fraction the probabilities should refer to (default: the model's).
    threshold : float, optional
        Decision threshold (default: the model's).
    errors : {"raise", "skip"}, default="raise"
        How bad data files are handled.
    device : str, default="auto"
        Device to score on.
    fit_size : {"error", "crop", "resize"}, default="error"
        Cutouts of another size than the model's: refused, centre-cropped or
        resampled (recorded as ``fit_size`` in ``metrics.json``).
    overwrite : bool, default=False
        Replace a report in a non-empty ``report_dir``.
    quiet : bool, default=False
        Print nothing but errors.

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``).
    """
    data_dir, report_dir = os.fspath(data_dir), os.fspath(report_dir)
    layout = _layout_options(classes, bands, id_pattern)
    check_output_folder(report_dir, overwrite, "Report folder", "pass --overwrite")
    check_fit_size(fit_size)
    clf = _load_model(model_path, device=device, tta=tta or None, prior=prior, threshold=threshold)
    X, y, paths, _, _ = _load_split(data_dir, split, errors, layout=layout)
    _check_size(clf, X.shape[1:], fit_size, data_dir)
    scores = _score(clf, X, quiet=quiet, fit_size=fit_size)
    names = [_relative(path, data_dir) for path in paths]
    fitted = describe(X.shape[1:], clf.input_shape_, fit_size)
    metrics = write_report(
        report_dir, y, scores, X=X, names=names, threshold=clf.threshold, prior=_prior_label(clf),
        history=getattr(clf, "history_", None) or None, overwrite=overwrite,
        extra={"fit_size": fitted} if fitted else None,
    )
    _say(format_summary(metrics), quiet)
    _say(f"report: {report_dir}", quiet)
    return metrics


# --------------------------------------------------------------------------- predict


def _usable_rows(block, rows, where, errors, skipped):
    """Positions of the rows of ``block`` (row numbers ``rows`` of ``where``) to score: rows with NaN,
    infinite or blank pixels (the checks of cutout files) are refused, or left out with ``errors="skip"``."""
    problems = value_problems(block)
    if not problems:
        return np.arange(len(block))
    bad = [(rows[i], reason) for i, reason in problems]
    if errors == "raise":
        shown = ", ".join(str(row) for row, _ in bad[:5])
        raise LensDataError(f"{where}: row(s) {shown}{' ...' if len(bad) > 5 else ''}: {bad[0][1]}. "
                            "Pass --errors skip to leave such rows out", [(f"{where}[{row}]", r) for row, r in bad])
    skipped += [(f"{where}[{row}]", reason) for row, reason in bad]
    dropped = {i for i, _ in problems}
    return np.array([i for i in range(len(block)) if i not in dropped], dtype=np.intp)


def _predict_blocks(item, errors, skipped):
    """Yield ``(n_read, block, sources, indices, ids, extras)`` per chunk of one item of the prediction plan.

    ``n_read`` counts the inputs of the chunk; ``block`` is None when none of them was usable.
    """
    if item[0] == "files":
        kind, rows_or_paths, _, extras = item
        where = None
    else:
        kind, where, rows_or_paths, _, extras = item
    n = len(rows_or_paths)
    store = LensZarrArray(where) if kind == "zarr" else None
    if kind == "stack":
        try:
            open_lens_stack(where)
        except LensDataError as exc:  # e.g. truncated: the header alone looked fine
            if errors == "raise":
                raise
            skipped += exc.problems
            yield n, None, None, None, None, None
            return
    step = PREDICT_CHUNK_SIZE
    if store is not None:  # whole chunks: no chunk is decompressed twice
        step = max(1, round(PREDICT_CHUNK_SIZE / store.chunk_rows)) * store.chunk_rows
    for start in range(0, n, step):
        chunk = rows_or_paths[start:start + step]
        extra = extras[start:start + step] if extras is not None else None
        if kind == "files":
            X, kept, bad = read_input_files(chunk, errors)
            skipped += bad
            if not kept:
                yield len(chunk), None, None, None, None, None
            else:
                yield (len(chunk), X, [chunk[i] for i in kept], [None] * len(kept), [None] * len(kept),
                       None if extra is None else [extra[i] for i in kept])
            continue
        if kind == "stack":
            # A fresh memory map per chunk: pages read earlier are unmapped with the old map, so the
            # resident memory stays at one chunk instead of growing with the stack.
            block = np.asarray(open_lens_stack(where)[np.asarray(chunk)], dtype=np.float32)
        else:
            block = store.read(chunk, check=False)  # checked by _usable_rows, which can skip rows
        positions = _usable_rows(block, chunk, where, errors, skipped)
        if len(positions) < len(block):  # (no copy of the block when every row is usable)
            block = block[positions]
        rows = [chunk[i] for i in positions]
        if kind == "zarr":
            sources, ids = list(store.meta("source", rows)), list(store.meta("id", rows))
        else:
            sources, ids = [where] * len(rows), [None] * len(rows)
        yield len(chunk), block, sources, rows, ids, None if extra is None else [extra[i] for i in positions]


def run_predict(model_path, inputs, out, *, catalog=None, classes=None, bands=None, id_pattern=None, tta=False,
                prior=None, batch_size=None, errors="raise", device="auto", fit_size="error", scheduler=None,
                block_rows=None, overwrite=False, quiet=False):
    """Score cutouts with a saved model and write ``source,index,id,score`` rows to a CSV or Parquet file.

    Parameters
    ----------
    model_path : str or path-like
        A model saved by ``lensclf train`` or :meth:`LensClassifier.save`.
    inputs : sequence of str or path-like
        ``.npy`` or FITS files holding one cutout (bands, height, width),
        stacked ``.npy`` arrays (n, bands, height, width) (memory-mapped),
        zarr stores written by ``lensclf pack`` (read chunk by chunk),
        folders of cutout files (not recursive, natural name order), class
        folders (``lens/``, ``nolens/``: all their objects) or folders of band
        folders (``Band1/ Band2/ ...``: one row per object, its band files
        matched by ID, as in :func:`lensclf.load_class_folders`).
    out : str or path-like
        Output file, written atomically: CSV, or Parquet for a ``.parquet``
        name (needs pyarrow). ``index`` is the row in a stack or store (empty
        for single files); ``id`` the row's ID in a store; ``source`` the file
        (for a store row: the file it was packed from).
    catalog : str or path-like, optional
        A CSV catalogue naming one cutout per object instead of ``inputs`` (see
        :func:`lensclf._catalog.read_catalog`); its other columns come first in
        the output, copied.
    classes, bands, id_pattern : optional
        How class folders and band folders among ``inputs`` are read
        (``--classes``, ``--bands``, ``--id-pattern``; see
        :func:`lensclf.load_class_folders`); then every input must be one of
        them (an error for files, stores, DeepLense layouts and ``catalog``).
    tta, prior : optional
        As :class:`LensClassifier`'s parameters (default: the model's).
    batch_size : int, optional
        Inference batch size (default: the model's ``predict_batch_size``).
    errors : {"raise", "skip"}, default="raise"
        Bad files (or stack rows) stop the run, or are listed on stderr and left out.
    device : str, default="auto"
        Device to score on.
    fit_size : {"error", "crop", "resize"}, default="error"
        Cutouts of another size than the model's: refused, centre-cropped or
        resampled; with ``crop``/``resize`` a ``fit_size`` column records what
        was done to each row.
    scheduler : str, optional
        Score one zarr store on a dask cluster: the address of a running
        scheduler, or ``"local:N"`` for a LocalCluster of N worker processes
        started and stopped here (see :mod:`lensclf._cluster`). ``out`` may then
        also be a ``.zarr`` scores store; a rerun resumes an interrupted run.
    block_rows : int, optional
        Rows per task on the cluster (default about 4,096, whole chunks).
    overwrite : bool, default=False
        Replace an existing ``out``.
    quiet : bool, default=False
        No progress bar or summary line.

    Returns
    -------
    n_scored : int
        Rows written.
    skipped : list of (str, str)
        ``(source, reason)`` of every file or stack row left out.
    """
    out = os.fspath(out)
    if os.path.isdir(out) and not out.lower().endswith(".zarr"):
        raise FileExistsError(f"Output {out!r} is a folder; give a .csv or .parquet file name.")
    if os.path.exists(out) and not overwrite and not (scheduler is not None and out.lower().endswith(".zarr")):
        raise FileExistsError(f"Output {out!r} exists; pass --overwrite to replace it.")
    if catalog is not None and inputs:
        raise ValueError("give INPUTs or --catalog, not both")
    if catalog is None and not inputs:
        raise ValueError("give at least one INPUT (.npy or FITS file, folder, or zarr store), or --catalog")
    check_fit_size(fit_size)
    layout = _layout_options(classes, bands, id_pattern)
    if layout and catalog is not None:
        raise ValueError(f"{' and '.join(LAYOUT_OPTIONS[k] for k in LAYOUT_OPTIONS if k in layout)}: class-folder "
                         "options apply to INPUT folders, not to the files of --catalog")
    if scheduler is not None:
        if layout:
            check_layout(inputs[0], input_kind(inputs[0]), layout)
        if catalog is not None or len(inputs) != 1 or not is_zarr_store(inputs[0]) or fit_size != "error" \
                or errors != "raise":
            raise ValueError("--scheduler scores one zarr store (made by lensclf pack), without --catalog, "
                             "--fit-size or --errors skip (a store's rows were checked when it was packed)")
        clf = _load_model(model_path, device="cpu", tta=tta or None, prior=prior, batch_size=batch_size)
        n_rows, n_done = score_store(clf, inputs[0], out, scheduler, block_rows=block_rows, overwrite=overwrite,
                                     quiet=quiet)
        _say(f"scored {n_rows:,} cutout(s) on the cluster ({n_done:,} block(s) done by an earlier run); "
             f"wrote {out}", quiet)
        return n_rows, []
    extra_columns, skipped = [], []
    if catalog is not None:
        items, extra_columns = read_catalog(catalog)
        taken = {"source", "index", "id", "score", "fit_size"}
        extra_columns = [f"catalog_{name}" if name in taken else name for name in extra_columns]
    else:
        items = expand_inputs(inputs, errors, skipped, layout)  # objects missing a band file: into skipped
    clf = _load_model(model_path, device=device, tta=tta or None, prior=prior, batch_size=batch_size)
    plan, planned_skipped = plan_inputs(items, clf.input_shape_, errors, fit_size)
    skipped += planned_skipped
    columns = extra_columns + ["source", "index", "id", "score"] + (["fit_size"] if fit_size != "error" else [])
    total = sum(len(item[1] if item[0] == "files" else item[2]) for item in plan)
    with ScoreTable(out, columns) as table, tqdm(total=total, desc="scoring", unit="img", disable=quiet) as bar:
        for item in plan:
            for n_read, block, sources, indices, ids, extras in _predict_blocks(item, errors, skipped):
                bar.update(n_read)
                if block is None or len(block) == 0:
                    continue
                fitted = describe(block.shape[1:], clf.input_shape_, fit_size)
                scores = clf.predict_proba(fit_to_size(block, clf.input_shape_, fit_size))[:, 1]
                table.write(
                    (extras[k] if extras is not None else []) + [str(sources[k]), indices[k], ids[k], float(score)]
                    + ([fitted] if fit_size != "error" else [])
                    for k, score in enumerate(scores)
                )
    _report_skipped(skipped)
    _say(f"scored {table.n_rows:,} cutout(s); skipped {len(skipped):,}; wrote {out}", quiet)
    return table.n_rows, skipped


# --------------------------------------------------------------------------- pack


def _pack_sources(inputs, split, errors, layout=None):
    """``(sources, labels, skipped)`` of ``lensclf pack``'s inputs: labelled layouts give their labels, files and
    band folders -1; ``layout``: the class-folder options, refused for inputs other than class and band folders."""
    layout = layout or {}
    sources, labels, skipped = [], [], []
    for item in inputs:
        item = os.fspath(item)
        kind = input_kind(item, layout.get("classes"))
        check_layout(item, kind, layout)
        if kind in ("class_folders", "band_folders"):
            found, found_labels, _, problems = layout_sources(item, kind, layout)
            if problems and errors == "raise":
                raise problems_error(problems, "also have problems", hint=". Pass --errors skip to leave them out")
            skipped += problems
        elif kind == "deeplense" and all(os.path.isdir(os.path.join(item, f.name)) for f in class_folders(split)):
            found, found_labels = [], []
            for folder in class_folders(split):
                files = expand_inputs([os.path.join(item, folder.name)])
                found += files
                found_labels += [folder.label] * len(files)
        else:
            found = expand_inputs([item])
            found_labels = [-1] * len(found)
        sources += found
        labels += list(found_labels)
    return sources, labels, skipped


def run_pack(inputs, out, *, split="train", classes=None, bands=None, id_pattern=None, chunk_rows=None, append=False,
             errors="raise", quiet=False):
    """Pack cutouts into one chunked zarr store (what ``lensclf pack`` does).

    Parameters
    ----------
    inputs : sequence of str or path-like
        Cutout files (``.npy``, FITS), folders of them (label -1: unknown),
        DeepLense-layout folders (the ``split``'s cutouts, with their labels),
        class folders (``lens/``, ``nolens/``, with or without band folders; with
        their labels) or folders of band folders (``Band1/ Band2/ ...``: one
        row per object, label -1).
    out : str or path-like
        The store folder (``*.zarr``). An interrupted run is resumed by the same
        command.
    split : {"train", "test"}, default="train"
        The split packed from DeepLense-layout inputs.
    classes, bands, id_pattern : optional
        How class folders and band folders are read (``--classes``,
        ``--bands``, ``--id-pattern``; see :func:`lensclf.load_class_folders`);
        then every input must be one of them.
    chunk_rows, append, errors
        As :func:`lensclf.pack_cutouts`.
    quiet : bool, default=False
        No progress bar or summary.

    Returns
    -------
    dict
        :func:`lensclf.pack_cutouts`'s summary.
    """
    if not inputs:
        raise ValueError("give at least one INPUT (cutout file, folder, DeepLense or class-folder layout)")
    sources, labels, skipped = _pack_sources(inputs, split, errors, _layout_options(classes, bands, id_pattern))
    summary = pack_cutouts(sources, out, labels=labels, chunk_rows=chunk_rows, append=append, errors=errors,
                           progress=not quiet)
    _report_skipped(skipped + summary["skipped"])
    if summary.get("up_to_date"):
        _say(f"{out} already holds these {len(sources):,} inputs; nothing to do", quiet)
    else:
        _say(f"{'resumed: ' if summary['resumed'] else ''}packed {summary['rows_written']:,} cutout(s) into {out} "
             f"({summary['rows_total']:,} rows in all); skipped {summary['rows_skipped']:,}", quiet)
    return summary


# --------------------------------------------------------------------------- simulate


def run_simulate(out_dir, *, n_train_lenses=1730, n_train_nonlenses=28675, n_test_lenses=195,
                 n_test_nonlenses=19455, difficulty="medium", seed=None, jobs=1, overwrite=False, quiet=False):
    """Write a simulated data set in the DeepLense layout (wraps :func:`lensclf.write_lens_dir`).

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    counts = dict(n_train_lenses=n_train_lenses, n_train_nonlenses=n_train_nonlenses,
                  n_test_lenses=n_test_lenses, n_test_nonlenses=n_test_nonlenses)
    root = write_lens_dir(out_dir, **counts, difficulty=difficulty, random_state=seed, overwrite=overwrite,
                          n_jobs=jobs, progress=not quiet)
    _say(f"wrote {sum(counts.values()):,} simulated cutouts ({difficulty}) to {root}: "
         f"train {n_train_lenses:,} lenses / {n_train_nonlenses:,} non-lenses, "
         f"test {n_test_lenses:,} / {n_test_nonlenses:,}", quiet)
    return root


# --------------------------------------------------------------------------- demo


def run_demo(out_dir="lensclf-demo", *, fast=False, overwrite=False, quiet=False):
    """Simulate a small data set, train, evaluate on its test split and write a report.

    Writes ``out_dir/data/`` (the simulated set), ``out_dir/model.safetensors``
    and ``out_dir/report/``. Sizes: :data:`DEMO_SIZES` and :data:`DEMO_EPOCHS`,
    or :data:`DEMO_FAST_SIZES` and :data:`DEMO_FAST_EPOCHS` with ``fast``.

    Returns
    -------
    dict
        The test metrics (as in ``report/metrics.json``).
    """
    out_dir = os.fspath(out_dir)
    check_output_folder(out_dir, overwrite, how_to_overwrite="pass --overwrite")
    sizes, epochs = (DEMO_FAST_SIZES, DEMO_FAST_EPOCHS) if fast else (DEMO_SIZES, DEMO_EPOCHS)
    data_dir = os.path.join(out_dir, "data")
    report_dir = os.path.join(out_dir, "report")
    model_path = os.path.join(out_dir, MODEL_FILE_NAME)

    _say(f"1/4 simulating {sum(sizes.values()):,} cutouts into {data_dir}", quiet)
    write_lens_dir(data_dir, **sizes, difficulty=DEMO_DIFFICULTY, random_state=DEMO_SEED, overwrite=overwrite,
                   progress=not quiet)

    _say(f"2/4 training for {epochs} epoch(s) on {sizes['n_train_lenses']:,} lenses and "
         f"{sizes['n_train_nonlenses']:,} non-lenses", quiet)
    X, y, _, _, _ = _load_split(data_dir, "train", "raise")
    params = {"max_epochs": epochs, "random_state": DEMO_SEED}
    if fast:
        params["batch_size"] = 16
    clf = train_classifier(X, y, params, quiet=quiet)
    save_model(clf, model_path, overwrite=overwrite, extra_metadata={"made_by": "lensclf demo"},
               training_data={"data_dir": os.path.abspath(data_dir), "split": "train", "simulated": True,
                              "n_lenses": sizes["n_train_lenses"], "n_nonlenses": sizes["n_train_nonlenses"]})

    _say("3/4 scoring the test split", quiet)
    X_test, y_test, paths, _, _ = _load_split(data_dir, "test", "raise")
    scores = _score(clf, X_test, quiet=quiet)

    _say("4/4 writing the report", quiet)
    names = [os.path.relpath(path, data_dir) for path in paths]
    metrics = write_report(report_dir, y_test, scores, X=X_test, names=names, threshold=clf.threshold,
                           prior=_prior_label(clf), history=clf.history_, overwrite=overwrite)
    ci = metrics["roc_auc_ci"]
    _say(f"test ROC AUC: {metrics['roc_auc']:.3f} (95% CI {ci['low']:.3f} - {ci['high']:.3f}) on "
         f"{metrics['n_lenses']:,} lenses and {metrics['n_nonlenses']:,} non-lenses", quiet)
    _say(f"data:   {data_dir}", quiet)
    _say(f"model:  {model_path}", quiet)
    _say(f"report: {report_dir}", quiet)
    return metrics
