"""The ``lensclf`` command line: simulate data, train, evaluate, predict, and a demo.

Run ``lensclf --help`` or ``lensclf COMMAND --help``. Every command is a plain
function (:func:`run_demo`, :func:`run_train`, :func:`run_evaluate`,
:func:`run_predict`, :func:`run_simulate`) that the argument parser calls, so
the work can also be driven from Python; :func:`main` only parses arguments and
turns errors into one-line messages.

Exit codes: 0 success, 1 a data, model or file problem (one line on stderr;
``--debug`` shows the traceback), 2 bad usage, 130 / 143 ``train`` interrupted
by SIGINT / SIGTERM (the best model so far is saved; ``--resume`` continues).
"""

import argparse
import csv
import math
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import (
    LensClassifier,
    LensDataError,
    LensDataWarning,
    LensFileArray,
    __version__,
    save_model,
    format_summary,
    load_lens_dir,
    open_lens_stack,
    plot_history,
    write_lens_dir,
    write_report,
)
from ._io import atomic_save_json, atomic_write, check_output_folder  # atomic writes, output checks
from .simulate import DIFFICULTIES

__all__ = [
    "DEMO_DIFFICULTY",
    "DEMO_EPOCHS",
    "DEMO_FAST_EPOCHS",
    "DEMO_FAST_SIZES",
    "DEMO_SIZES",
    "CHECKPOINT_DIR_NAME",
    "MODEL_FILE_NAME",
    "PREDICT_CHUNK_SIZE",
    "TrainingInterrupted",
    "main",
    "run_demo",
    "run_evaluate",
    "run_predict",
    "run_simulate",
    "run_train",
]

#: Name of the model file written by ``train`` and ``demo``.
MODEL_FILE_NAME = "model.safetensors"
#: Folder of ``train``'s epoch checkpoint and saved parameters, removed when the run completes.
CHECKPOINT_DIR_NAME = "checkpoint"
_PARAMS_FILE_NAME = "params.json"
#: Simulated set of ``lensclf demo`` (mild imbalance, 1:3, so the test AUC means something).
DEMO_SIZES = {"n_train_lenses": 1000, "n_train_nonlenses": 3000, "n_test_lenses": 300, "n_test_nonlenses": 900}
#: Training epochs of ``lensclf demo``.
DEMO_EPOCHS = 5
#: Tiny sizes of ``lensclf demo --fast`` (a smoke test, not a meaningful AUC).
DEMO_FAST_SIZES = {"n_train_lenses": 12, "n_train_nonlenses": 24, "n_test_lenses": 6, "n_test_nonlenses": 12}
#: Epochs of ``lensclf demo --fast``.
DEMO_FAST_EPOCHS = 1
#: Simulator preset of the demo: on "medium", 2,000 images and 3 epochs are too few to learn much (AUC ~0.53).
DEMO_DIFFICULTY = "easy"
DEMO_SEED = 0
#: Images scored at once by ``predict`` and ``evaluate``: memory does not grow with the input.
PREDICT_CHUNK_SIZE = 4096

_DEFAULTS = LensClassifier().get_params()
_CLASS_FOLDERS = {
    "train": ("train_lenses", "train_nonlenses"),
    "test": ("test_lenses", "test_nonlenses"),
}


# --------------------------------------------------------------------------- small pieces


def _natural_key(name):
    """Sort key putting ``2.npy`` before ``10.npy``."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def _say(message="", quiet=False, file=None):
    if not quiet:
        print(message, file=file or sys.stdout, flush=True)


def _resolve_device(device):
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _count_npy(folder):
    """Number of ``.npy`` files in ``folder`` (the loader's rule), or None if it is missing."""
    if not os.path.isdir(folder):
        return None
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith(".npy") and not e.name.startswith("."))


def _report_skipped(skipped):
    """List skipped inputs on stderr (always, even with --quiet: they concern the user's data)."""
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _history_rows(history):
    """A skorch History as a list of flat dicts of numbers (per-batch records dropped)."""
    rows = []
    for entry in history:
        row = {}
        for key, value in entry.items():
            if key == "batches":
                continue
            if isinstance(value, (bool, np.bool_)):
                row[key] = bool(value)
            elif isinstance(value, (int, np.integer)):
                row[key] = int(value)
            elif isinstance(value, (float, np.floating)):
                row[key] = float(value) if math.isfinite(value) else None
        rows.append(row)
    return rows


def _write_history(run_dir, history):
    """history.csv, history.json and history.png of a training run."""
    import matplotlib.pyplot as plt

    rows = _history_rows(history)
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_write(os.path.join(run_dir, "history.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_save_json(os.path.join(run_dir, "history.json"), rows)
    fig = plot_history(history)
    try:
        with atomic_write(os.path.join(run_dir, "history.png"), "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(fig)


def _prior_label(clf):
    """How the probabilities of ``clf`` are calibrated, for the report."""
    if clf.prior is not None:
        return clf.prior
    if math.isclose(clf.train_prior_, 0.5):
        return None  # write_report's "balanced (0.5)"
    return f"as trained ({clf.train_prior_:.4g})"


def _score(clf, X, quiet=False, desc="scoring"):
    """Lens probabilities of ``X`` in chunks, with a progress bar."""
    n = len(X)
    scores = np.empty(n, dtype=np.float64)
    with tqdm(total=n, desc=desc, unit="img", disable=quiet) as bar:
        for start in range(0, n, PREDICT_CHUNK_SIZE):
            stop = min(start + PREDICT_CHUNK_SIZE, n)
            scores[start:stop] = clf.predict_proba(X[start:stop])[:, 1]
            bar.update(stop - start)
    return scores


def _load_split(data_dir, split, errors, cache=None):
    """load_lens_dir with paths; skipped files are listed on stderr instead of warned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LensDataWarning)
        X, y, paths, skipped = load_lens_dir(
            data_dir, split, errors=errors, return_paths=True, return_skipped=True, cache=cache
        )
    _report_skipped(skipped)
    return X, y, paths, skipped


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


def run_train(data_dir, run_dir, params=None, *, errors="raise", cache=False, overwrite=False, quiet=False,
              resume=False):
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
    import json

    params = dict(params or {})
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
                params = json.load(handle)["params"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{params_path}: unreadable run parameters ({exc}).") from exc
    else:
        check_output_folder(run_dir, overwrite, "Run folder", "pass --overwrite")
    X, y, _, _ = _load_split(data_dir, "train", errors, cache=cache or None)
    n_lenses = int(np.count_nonzero(y == 1))
    _say(f"data: {data_dir}", quiet)
    _say(f"  train: {n_lenses:,} lenses, {len(y) - n_lenses:,} non-lenses "
         f"(loaded; {' x '.join(str(s) for s in X.shape[1:])} per cutout)", quiet)
    test_counts = [_count_npy(os.path.join(data_dir, name)) for name in _CLASS_FOLDERS["test"]]
    if None not in test_counts:
        _say(f"  test:  {test_counts[0]:,} lenses, {test_counts[1]:,} non-lenses (files counted, not loaded)", quiet)
    _say(f"device: {_resolve_device(params.get('device', 'auto'))}", quiet)

    if resume:
        _say(f"resuming the run in {run_dir}", quiet)
    else:
        if overwrite and os.path.isdir(checkpoint_dir):
            shutil.rmtree(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        atomic_save_json(params_path, {"data_dir": os.path.abspath(data_dir), "params": params})
    with _StopOnSignals() as stopper:
        try:
            clf = train_classifier(X, y, params, quiet=quiet, checkpoint_dir=checkpoint_dir, resume=resume)
        except KeyboardInterrupt as exc:
            signum = stopper.signum or getattr(exc, "signum", signal.SIGINT)
            print(f"interrupted before the first epoch ended; nothing saved. Start again with: lensclf train "
                  f"{shlex.quote(data_dir)} --out {shlex.quote(run_dir)} --overwrite", file=sys.stderr, flush=True)
            raise TrainingInterrupted("training interrupted before its first epoch ended", signum) from None
    interrupted = stopper.signum

    model_path = os.path.join(run_dir, MODEL_FILE_NAME)
    training_data = {
        "data_dir": os.path.abspath(data_dir),
        "split": "train",
        "n_lenses": n_lenses,
        "n_nonlenses": int(len(y) - n_lenses),
    }
    save_model(clf, model_path, overwrite=overwrite or resume, training_data=training_data)
    _write_history(run_dir, clf.history_)
    if "valid_auc" in clf.history_[-1]:
        best_auc = clf.history_[clf.best_epoch_ - 1, "valid_auc"]
        _say(f"best epoch: {clf.best_epoch_} of {len(clf.history_)} (validation ROC AUC {best_auc:.4f})", quiet)
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


def run_evaluate(model_path, data_dir, report_dir, *, split="test", tta=False, prior=None, threshold=None,
                 errors="raise", device="auto", overwrite=False, quiet=False):
    """Score one split of a DeepLense-layout folder and write an evaluation report.

    Parameters
    ----------
    model_path : str or path-like
        A model saved by ``lensclf train`` or :meth:`LensClassifier.save`.
    data_dir : str or path-like
        DeepLense-layout folder.
    report_dir : str or path-like
        Report folder (see :func:`lensclf.write_report`).
    split : {"test", "train"}, default="test"
        Which split to score.
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
    check_output_folder(report_dir, overwrite, "Report folder", "pass --overwrite")
    clf = _load_model(model_path, device=device, tta=tta or None, prior=prior, threshold=threshold)
    X, y, paths, _ = _load_split(data_dir, split, errors)
    scores = _score(clf, X, quiet=quiet)
    names = [os.path.relpath(path, data_dir) for path in paths]
    metrics = write_report(
        report_dir, y, scores, X=X, names=names, threshold=clf.threshold, prior=_prior_label(clf),
        history=getattr(clf, "history_", None) or None, overwrite=overwrite,
    )
    _say(format_summary(metrics), quiet)
    _say(f"report: {report_dir}", quiet)
    return metrics


# --------------------------------------------------------------------------- predict


def _npy_shape(path):
    """Shape in the ``.npy`` header of ``path``, or None when it cannot be read as one."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(handle)
        return tuple(int(side) for side in shape)
    except Exception:  # noqa: BLE001 - anything unreadable is reported by the loader later
        return None


def _expand_inputs(inputs):
    """Files to score, in order: folders become their ``.npy`` files (natural order)."""
    files = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            with os.scandir(item) as entries:
                names = [e.name for e in entries
                         if e.name.lower().endswith(".npy") and not e.name.startswith(".") and e.is_file()]
            if not names:
                raise LensDataError(f"{item}: folder holds no .npy files", [(item, "no .npy files")])
            files += [os.path.join(item, name) for name in sorted(names, key=_natural_key)]
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def _plan(files, input_shape, errors, skipped):
    """Group files into work: ("stack", path, n_rows) and ("files", [paths]) items, in order.

    Files whose header shows a shape the model cannot score are problems: raised,
    or added to ``skipped``.
    """
    plan = []
    for path in files:
        shape = _npy_shape(path)
        problem = None
        if shape is not None and len(shape) == 4:
            if tuple(shape[1:]) != tuple(input_shape):
                problem = f"is a stack of cutouts of shape {tuple(shape[1:])}; the model expects {tuple(input_shape)}"
            elif shape[0] == 0:
                problem = "is a stack that holds no cutouts"
            else:
                plan.append(("stack", path, shape[0]))
                continue
        elif shape is not None and len(shape) == 3 and tuple(shape) != tuple(input_shape):
            problem = f"has shape {tuple(shape)}; the model expects {tuple(input_shape)}"
        if problem is not None:
            if errors == "raise":
                raise LensDataError(f"{path}: {problem}", [(path, problem)])
            skipped.append((path, problem))
            continue
        if plan and plan[-1][0] == "files":
            plan[-1][1].append(path)
        else:
            plan.append(("files", [path]))
    return plan


def _read_files(paths, errors, skipped):
    """Read cutout files; with ``errors="skip"`` bad ones go to ``skipped``. Returns (X, paths)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LensDataWarning)
        try:
            array = LensFileArray(paths, errors=errors)
        except LensDataError as exc:  # errors="skip" and no file usable
            if errors == "raise":
                raise
            skipped += exc.problems
            return None, []
        skipped += array.skipped
        try:
            return array[:], array.paths
        except LensDataError as exc:  # pixel problems (NaN, blank) are found on reading
            if errors == "raise":
                raise
            bad = {path for path, _ in exc.problems}
            skipped += exc.problems
            kept = [path for path in array.paths if path not in bad]
            if not kept:
                return None, []
            return LensFileArray(kept)[:], kept


def _score_stack(clf, stack, path, start, stop, errors, skipped):
    """Scores of rows ``start:stop`` of an opened stack: (row indices, scores)."""
    block = np.asarray(stack[start:stop], dtype=np.float32)
    rows = np.arange(start, stop)
    finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
    if not finite.all():
        bad = rows[~finite]
        reason = "has NaN or infinite pixel values"
        if errors == "raise":
            shown = ", ".join(str(i) for i in bad[:5])
            raise LensDataError(
                f"{path}: row(s) {shown}{' ...' if len(bad) > 5 else ''} of the stack {reason}. "
                "Pass --errors skip to leave such rows out",
                [(f"{path}[{i}]", reason) for i in bad],
            )
        skipped += [(f"{path}[{i}]", reason) for i in bad]
        block, rows = block[finite], rows[finite]
    if len(block) == 0:
        return rows, np.zeros(0)
    return rows, clf.predict_proba(block)[:, 1]


def run_predict(model_path, inputs, out_csv, *, tta=False, prior=None, batch_size=None, errors="raise",
                device="auto", overwrite=False, quiet=False):
    """Score cutouts with a saved model and write ``source,index,score`` rows to a CSV file.

    Parameters
    ----------
    model_path : str or path-like
        A model saved by ``lensclf train`` or :meth:`LensClassifier.save`.
    inputs : sequence of str or path-like
        ``.npy`` files holding one cutout (bands, height, width), stacked
        ``.npy`` arrays (n, bands, height, width) (memory-mapped and scored in
        chunks of :data:`PREDICT_CHUNK_SIZE`), or folders of such files (not
        recursive, natural name order).
    out_csv : str or path-like
        Output CSV, written atomically. ``index`` is the row in a stack and
        empty for single files.
    tta, prior : optional
        As :class:`LensClassifier`'s parameters (default: the model's).
    batch_size : int, optional
        Inference batch size (default: the model's ``predict_batch_size``).
    errors : {"raise", "skip"}, default="raise"
        Bad files (or stack rows) stop the run, or are listed on stderr and left out.
    device : str, default="auto"
        Device to score on.
    overwrite : bool, default=False
        Replace an existing ``out_csv``.
    quiet : bool, default=False
        No progress bar or summary line.

    Returns
    -------
    n_scored : int
        Rows written.
    skipped : list of (str, str)
        ``(source, reason)`` of every file or stack row left out.
    """
    out_csv = os.fspath(out_csv)
    if os.path.isdir(out_csv):
        raise FileExistsError(f"Output {out_csv!r} is a folder; give a .csv file name.")
    if os.path.exists(out_csv) and not overwrite:
        raise FileExistsError(f"Output {out_csv!r} exists; pass --overwrite to replace it.")
    if not inputs:
        raise ValueError("give at least one INPUT (.npy file or folder)")
    files = _expand_inputs(inputs)
    clf = _load_model(model_path, device=device, tta=tta or None, prior=prior, batch_size=batch_size)
    skipped = []
    plan = _plan(files, clf.input_shape_, errors, skipped)
    total = sum(item[2] if item[0] == "stack" else len(item[1]) for item in plan)
    n_scored = 0
    with atomic_write(out_csv, "w", encoding="utf-8", newline="") as handle, tqdm(total=total, desc="scoring", unit="img", disable=quiet) as bar:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["source", "index", "score"])
        for item in plan:
            if item[0] == "stack":
                _, path, n_rows = item
                try:
                    open_lens_stack(path)
                except LensDataError as exc:  # e.g. truncated: the header alone looked fine
                    if errors == "raise":
                        raise
                    skipped += exc.problems
                    bar.update(n_rows)
                    continue
                for start in range(0, n_rows, PREDICT_CHUNK_SIZE):
                    stop = min(start + PREDICT_CHUNK_SIZE, n_rows)
                    # A fresh memory map per chunk: pages read earlier are unmapped with the old map, so the
                    # resident memory stays at one chunk instead of growing with the stack.
                    stack = open_lens_stack(path)
                    rows, scores = _score_stack(clf, stack, path, start, stop, errors, skipped)
                    del stack
                    writer.writerows([path, int(i), repr(float(s))] for i, s in zip(rows, scores))
                    n_scored += len(rows)
                    bar.update(stop - start)
            else:
                paths = item[1]
                for start in range(0, len(paths), PREDICT_CHUNK_SIZE):
                    chunk = paths[start:start + PREDICT_CHUNK_SIZE]
                    X, kept = _read_files(chunk, errors, skipped)
                    if kept:
                        scores = clf.predict_proba(X)[:, 1]
                        writer.writerows([path, "", repr(float(s))] for path, s in zip(kept, scores))
                        n_scored += len(kept)
                    bar.update(len(chunk))
    _report_skipped(skipped)
    _say(f"scored {n_scored:,} cutout(s); skipped {len(skipped):,}; wrote {out_csv}", quiet)
    return n_scored, skipped


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
    X, y, _, _ = _load_split(data_dir, "train", "raise")
    params = {"max_epochs": epochs, "random_state": DEMO_SEED}
    if fast:
        params["batch_size"] = 16
    clf = train_classifier(X, y, params, quiet=quiet)
    save_model(clf, model_path, overwrite=overwrite, extra_metadata={"made_by": "lensclf demo"},
               training_data={"data_dir": os.path.abspath(data_dir), "split": "train", "simulated": True,
                              "n_lenses": sizes["n_train_lenses"], "n_nonlenses": sizes["n_train_nonlenses"]})

    _say("3/4 scoring the test split", quiet)
    X_test, y_test, paths, _ = _load_split(data_dir, "test", "raise")
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


# --------------------------------------------------------------------------- argument parsing


def _integer(accept, what):
    """An argparse type: an integer for which ``accept(value)`` holds, else "expected {what}"."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _integer(lambda v: v >= 1, "a positive integer")
_count = _integer(lambda v: v >= 0, "a non-negative integer")
_jobs = _integer(lambda v: v != 0, "a non-zero integer (-1 = all cores)")


def _number(low, high, low_open, high_open, what):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_fraction = _number(0.0, 1.0, True, True, "a number strictly between 0 and 1")
_probability = _number(0.0, 1.0, False, False, "a number between 0 and 1")
_positive_float = _number(0.0, math.inf, True, True, "a positive number")
_non_negative_float = _number(0.0, math.inf, False, True, "a non-negative number")


def _valid_size(text):
    if text.lower() == "none":
        return None
    return _fraction(text)


def _balance(text):
    return None if text.lower() == "none" else text


def _add_debug(parser, suppress_default):
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS if suppress_default else False,
        help="show the full traceback of errors",
    )


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except empty ones (None, False) and those the help text already gives."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """The ``lensclf`` argument parser (one subcommand per task)."""
    parser = _ArgumentParser(
        prog="lensclf",
        description="Find strong gravitational lenses in astronomical cutouts with a ResNet classifier.",
        epilog="Run 'lensclf COMMAND --help' for the options of a command. Start with 'lensclf demo'.",
    )
    parser.add_argument("--version", action="version", version=f"lensclf {__version__}")
    _add_debug(parser, suppress_default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formatter = _HelpFormatter

    demo = commands.add_parser(
        "demo", formatter_class=formatter,
        help="simulate a small data set, train, evaluate and write a report",
        description=f"Simulate a small DeepLense-layout data set ({DEMO_DIFFICULTY} difficulty; train "
        f"{DEMO_SIZES['n_train_lenses']:,}/{DEMO_SIZES['n_train_nonlenses']:,}, test "
        f"{DEMO_SIZES['n_test_lenses']:,}/{DEMO_SIZES['n_test_nonlenses']:,} lenses/non-lenses), train a "
        f"LensClassifier for {DEMO_EPOCHS} epochs, evaluate it on the test split and write OUT/data, "
        "OUT/model.safetensors and OUT/report. A few minutes on a laptop CPU.",
    )
    demo.add_argument("--out", default="lensclf-demo", metavar="DIR", help="output folder")
    demo.add_argument("--fast", action="store_true", help="tiny sizes and 1 epoch (a smoke test; the AUC means little)")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    demo.add_argument("--quiet", action="store_true", help="print only errors")
    _add_debug(demo, True)

    train = commands.add_parser(
        "train", formatter_class=formatter,
        help="train a classifier on a DeepLense-layout folder",
        description="Train a LensClassifier on DATA_DIR/train_lenses and DATA_DIR/train_nonlenses; save "
        "RUN_DIR/model.safetensors (best weights), history.csv, history.json and history.png.",
    )
    train.add_argument("data_dir", metavar="DATA_DIR", help="folder with train_lenses/ and train_nonlenses/")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder (missing or empty)")
    train.add_argument("--epochs", type=_positive_int, default=_DEFAULTS["max_epochs"], help="training epochs")
    train.add_argument("--lr", type=_positive_float, default=_DEFAULTS["lr"], help="learning rate")
    train.add_argument("--batch-size", type=_positive_int, default=_DEFAULTS["batch_size"], help="training batch size")
    train.add_argument("--weight-decay", type=_non_negative_float, default=_DEFAULTS["weight_decay"],
                       help="L2 penalty")
    train.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default=_DEFAULTS["arch"],
                       help="torchvision architecture")
    train.add_argument("--weights", default=None, metavar="{imagenet,PATH}",
                       help="initial weights: random (default), 'imagenet' or a state-dict file")
    train.add_argument("--balance", type=_balance, choices=["sampler", "pos_weight", None],
                       default=_DEFAULTS["balance"], metavar="{sampler,pos_weight,none}",
                       help="class-imbalance correction")
    train.add_argument("--input-size", type=_positive_int, default=None,
                       help="resize images to this size inside the network (default: native size)")
    train.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    train.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    train.add_argument("--valid-size", type=_valid_size, default=_DEFAULTS["valid_size"], metavar="FRACTION",
                       help="held-out fraction scored each epoch to pick the best weights; 'none' keeps the last")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="EPOCHS",
                       help="stop after this many epochs without a better validation AUC")
    train.add_argument("--no-augment", action="store_true", help="no random flips, rotations and jitter")
    train.add_argument("--errors", choices=["raise", "skip"], default="raise",
                       help="stop on a bad data file, or list it on stderr and leave it out")
    train.add_argument("--cache", action="store_true",
                       help="cache the loaded split in $LENSCLF_CACHE_DIR or ~/.cache/lensclf")
    train.add_argument("--overwrite", action="store_true", help="write into a non-empty RUN_DIR")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in RUN_DIR from its last epoch, with its parameters")
    train.add_argument("--quiet", action="store_true", help="no progress bars or epoch table")
    _add_debug(train, True)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=formatter,
        help="score a split of a DeepLense-layout folder and write a report",
        description="Score DATA_DIR's test (or train) split with MODEL and write metrics.json, scores.csv "
        "and plots (ROC, precision-recall, confusion matrix, score histogram, worst mistakes, history) "
        "into REPORT_DIR.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="model file saved by 'lensclf train'")
    evaluate.add_argument("data_dir", metavar="DATA_DIR", help="DeepLense-layout folder")
    evaluate.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (missing or empty)")
    evaluate.add_argument("--split", choices=["test", "train"], default="test", help="split to score")
    evaluate.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations")
    evaluate.add_argument("--prior", type=_fraction, default=None, metavar="P",
                          help="lens fraction the probabilities should refer to (default: the model's)")
    evaluate.add_argument("--threshold", type=_probability, default=None, metavar="T",
                          help="decision threshold (default: the model's)")
    evaluate.add_argument("--errors", choices=["raise", "skip"], default="raise",
                          help="stop on a bad data file, or list it on stderr and leave it out")
    evaluate.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    evaluate.add_argument("--overwrite", action="store_true", help="replace a report in REPORT_DIR")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _add_debug(evaluate, True)

    predict = commands.add_parser(
        "predict", formatter_class=formatter,
        help="score .npy cutouts and write a CSV of lens probabilities",
        description="Score cutouts with MODEL. INPUT: .npy files holding one cutout (bands, height, width), "
        "stacked .npy arrays (n, bands, height, width) (memory-mapped and scored in chunks), or folders "
        "of them (not recursive, natural name order). Writes CSV rows source,index,score (index: the row "
        "in a stack, empty for single files).",
    )
    predict.add_argument("model", metavar="MODEL", help="model file saved by 'lensclf train'")
    predict.add_argument("inputs", metavar="INPUT", nargs="+", help=".npy file or folder of .npy files")
    predict.add_argument("--out", required=True, metavar="CSV", help="output CSV file")
    predict.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations")
    predict.add_argument("--prior", type=_fraction, default=None, metavar="P",
                         help="lens fraction the probabilities should refer to (default: the model's)")
    predict.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                         help="inference batch size (default: the model's)")
    predict.add_argument("--errors", choices=["raise", "skip"], default="raise",
                         help="stop on a bad file, or list it on stderr and leave it out")
    predict.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    predict.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _add_debug(predict, True)

    simulate = commands.add_parser(
        "simulate", formatter_class=formatter,
        help="write a simulated data set in the DeepLense layout",
        description="Simulate HSC-like g, r, i cutouts of strong lenses and non-lenses into OUT_DIR/"
        "{train,test}_{lenses,nonlenses}/ plus metadata.csv. The default sizes are those of the real "
        "DeepLense Test II set (about 50,000 files, 2.4 GB).",
    )
    simulate.add_argument("out_dir", metavar="OUT_DIR", help="output folder (missing or empty)")
    simulate.add_argument("--n-train-lenses", type=_count, default=1730, metavar="N", help="train lenses")
    simulate.add_argument("--n-train-nonlenses", type=_count, default=28675, metavar="N", help="train non-lenses")
    simulate.add_argument("--n-test-lenses", type=_count, default=195, metavar="N", help="test lenses")
    simulate.add_argument("--n-test-nonlenses", type=_count, default=19455, metavar="N", help="test non-lenses")
    simulate.add_argument("--difficulty", choices=DIFFICULTIES, default="medium", help="simulation preset")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    simulate.add_argument("--jobs", type=_jobs, default=1, help="parallel workers (-1 = all cores)")
    simulate.add_argument("--overwrite", action="store_true", help="replace a data set in OUT_DIR")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _add_debug(simulate, True)
    return parser


def _dispatch(args):
    if args.command == "demo":
        run_demo(args.out, fast=args.fast, overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "train":
        params = {
            "max_epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "weight_decay": args.weight_decay, "arch": args.arch, "weights": args.weights,
            "balance": args.balance, "input_size": args.input_size, "device": args.device,
            "random_state": args.seed, "valid_size": args.valid_size,
            "early_stopping": args.early_stopping, "augment": not args.no_augment,
        }
        run_train(args.data_dir, args.out, params, errors=args.errors, cache=args.cache,
                  overwrite=args.overwrite, quiet=args.quiet, resume=args.resume)
    elif args.command == "evaluate":
        run_evaluate(args.model, args.data_dir, args.out, split=args.split, tta=args.tta, prior=args.prior,
                     threshold=args.threshold, errors=args.errors, device=args.device,
                     overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "predict":
        run_predict(args.model, args.inputs, args.out, tta=args.tta, prior=args.prior,
                    batch_size=args.batch_size, errors=args.errors, device=args.device,
                    overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "simulate":
        run_simulate(args.out_dir, n_train_lenses=args.n_train_lenses, n_train_nonlenses=args.n_train_nonlenses,
                     n_test_lenses=args.n_test_lenses, n_test_nonlenses=args.n_test_nonlenses,
                     difficulty=args.difficulty, seed=args.seed, jobs=args.jobs, overwrite=args.overwrite,
                     quiet=args.quiet)


def _one_line(exc):
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    return message


def main(argv=None):
    """Run the ``lensclf`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 success, 1 a data, model or file problem, 2 bad usage,
        130 or 143 training interrupted by SIGINT or SIGTERM.
        (``--help``, ``--version`` and argparse's usage errors exit through
        ``SystemExit``, with codes 0 and 2.)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _dispatch(args)
    except KeyboardInterrupt as exc:
        # 128 + the signal number, as a shell reports a process ended by it
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (LensDataError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"lensclf: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
