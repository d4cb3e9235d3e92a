"""An evaluation report on disk: metrics, plots and per-object scores in one folder.

:func:`write_report` writes, atomically and without overwriting an earlier
report unless asked, ``metrics.json`` (:func:`lensclf.evaluate_scores`),
``roc.png``, ``precision_recall.png``, ``confusion_matrix.png``,
``score_histogram.png``, ``errors_gallery.png`` (when the images are given),
``history.png`` (when a training history is given) and ``scores.csv``.
:func:`format_summary` turns the metrics into a few lines for a terminal.
"""

import csv
import json
import os

import numpy as np

from ._files import atomic_write, check_output_folder, save_figure
from .metrics import evaluate_scores, predict_from_scores
from .plots import (
    _pyplot,
    _history_columns,
    plot_confusion_matrix,
    plot_error_gallery,
    plot_history,
    plot_precision_recall,
    plot_roc,
    plot_score_histogram,
)

__all__ = ["REPORT_FILES", "format_summary", "write_report"]

#: Every file :func:`write_report` may write, in the order it writes them.
REPORT_FILES = (
    "metrics.json",
    "scores.csv",
    "roc.png",
    "precision_recall.png",
    "confusion_matrix.png",
    "score_histogram.png",
    "errors_gallery.png",
    "history.png",
)


def write_report(
    out_dir,
    y_true,
    y_score,
    *,
    X=None,
    names=None,
    threshold=0.5,
    prior=None,
    history=None,
    overwrite=False,
    n_bootstraps=1000,
    random_state=0,
    extra=None,
):
    """Write an evaluation report (metrics, plots, scores) into a folder.

    Files written (each to a temporary file in ``out_dir`` first, then moved
    into place with :func:`os.replace`, so a file is either the old one or the
    complete new one):

    - ``metrics.json``: the dict of :func:`lensclf.evaluate_scores`;
    - ``scores.csv``: columns ``name`` (or ``index``), ``label``, ``score``;
    - ``roc.png``, ``precision_recall.png``, ``confusion_matrix.png``,
      ``score_histogram.png``;
    - ``errors_gallery.png``: only when ``X`` is given;
    - ``history.png``: only when ``history`` is given.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Report folder; created if missing. An existing non-empty folder is
        refused unless ``overwrite=True``.
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens. Both classes must be present.
    y_score : array-like of shape (n_samples,)
        Lens probabilities (``predict_proba(X)[:, 1]``).
    X : array-like of shape (n_samples, C, H, W), optional
        The cutouts, for the gallery of the most confident mistakes.
    names : sequence of str, optional
        One name per object (e.g. file paths) for ``scores.csv`` and the
        gallery. Defaults to the row index.
    threshold : float, default=0.5
        Decision threshold (a lens when ``score >= threshold``).
    prior : float, str or None, default=None
        The lens prior the probabilities refer to; recorded verbatim
        (``None``: ``"balanced (0.5)"``).
    history : skorch History or list of dict, optional
        Training history (e.g. ``LensClassifier().history_``) for
        ``history.png``.
    overwrite : bool, default=False
        Allow writing into a non-empty folder. The report files are
        replaced; a ``errors_gallery.png`` or ``history.png`` left by an
        earlier report is removed when this report has none, so the folder
        never mixes two reports. Other files are left alone.
    n_bootstraps : int, default=1000
        Resamples for the ROC AUC interval.
    random_state : int or None, default=0
        Seed for the bootstrap.
    extra : dict, optional
        More entries for ``metrics.json`` (JSON-serialisable), e.g. how the
        cutouts were brought to the model's size.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` is a non-empty folder (or a file) and ``overwrite`` is
        False.
    ValueError, TypeError
        For bad labels, scores, names, images or history (checked before
        anything is written).
    """
    # Everything is checked and computed before the folder is touched.
    metrics = evaluate_scores(
        y_true, y_score, threshold=threshold, prior=prior, n_bootstraps=n_bootstraps, random_state=random_state
    )
    metrics.update(extra or {})
    y_true = np.asarray(y_true).astype(np.int64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if names is not None:
        names = [str(name) for name in names]
        if len(names) != len(y_true):
            raise ValueError(f"names must hold one name per object ({len(y_true)}); got {len(names)}.")
    if X is not None:
        X = np.asarray(X)
        if X.ndim != 4 or len(X) != len(y_true):
            raise ValueError(
                f"X must have shape (n_samples, bands, height, width) with n_samples = {len(y_true)}; got {X.shape}."
            )

    if history is not None:
        _history_columns(history)  # raises on a malformed history before anything is written

    out_dir = check_output_folder(out_dir, overwrite, "Report folder")
    os.makedirs(out_dir, exist_ok=True)
    path = lambda name: os.path.join(out_dir, name)  # noqa: E731

    with atomic_write(path("metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2, allow_nan=False)
        handle.write("\n")

    with atomic_write(path("scores.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name" if names is not None else "index", "label", "score"])
        for i in range(len(y_true)):
            writer.writerow([names[i] if names is not None else i, int(y_true[i]), repr(float(y_score[i]))])

    auc_ci = (metrics["roc_auc"], metrics["roc_auc_ci"]["low"], metrics["roc_auc_ci"]["high"])
    fig, (ax_lin, ax_log) = _pyplot().subplots(1, 2, figsize=(10.0, 4.5), layout="constrained")
    plot_roc(y_true, y_score, ax=ax_lin, auc_ci=auc_ci)
    plot_roc(y_true, y_score, ax=ax_log, auc_ci=auc_ci, log_fpr=True)
    save_figure(fig, path("roc.png"))

    save_figure(plot_precision_recall(y_true, y_score).figure, path("precision_recall.png"))

    fig, (ax_counts, ax_norm) = _pyplot().subplots(1, 2, figsize=(9.0, 4.0), layout="constrained")
    y_pred = predict_from_scores(y_score, threshold)
    plot_confusion_matrix(y_true, y_pred, ax=ax_counts)
    plot_confusion_matrix(y_true, y_pred, ax=ax_norm, normalize="true")
    ax_counts.set_title(f"Confusion matrix (threshold {threshold:g})")
    save_figure(fig, path("confusion_matrix.png"))

    fig, (ax_lin, ax_log) = _pyplot().subplots(1, 2, figsize=(10.0, 4.0), layout="constrained")
    plot_score_histogram(y_true, y_score, ax=ax_lin, threshold=threshold)
    plot_score_histogram(y_true, y_score, ax=ax_log, threshold=threshold, log_y=True)
    ax_log.set_title("Score distribution (log counts)")
    save_figure(fig, path("score_histogram.png"))

    optional = {
        "errors_gallery.png": None if X is None else (lambda: plot_error_gallery(X, y_true, y_score, names=names, threshold=threshold)),
        "history.png": None if history is None else (lambda: plot_history(history)),
    }
    for name, make_figure in optional.items():
        if make_figure is not None:
            save_figure(make_figure(), path(name))
        elif os.path.exists(path(name)):
            os.remove(path(name))  # stale file from an earlier report (overwrite=True)
    return metrics


def _fmt(value, spec=".3f"):
    return "n/a" if value is None else format(value, spec)


def format_summary(metrics):
    """A short multi-line, human-readable summary of :func:`lensclf.evaluate_scores` output.

    Parameters
    ----------
    metrics : dict
        As returned by :func:`lensclf.evaluate_scores` or :func:`write_report`
        (or read back from ``metrics.json``).

    Returns
    -------
    str
        Lines for the counts and prior, ROC AUC with its interval, average
        precision, TPR at each reported FPR (or why it is missing), and the
        confusion matrix with precision, recall and F1 at the threshold.
    """
    try:
        ci = metrics["roc_auc_ci"]
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        lines = [
            f"objects: {metrics['n']} ({metrics['n_lenses']} lenses, {metrics['n_nonlenses']} non-lenses)",
            f"lens prior of the probabilities: {metrics['prior']}",
            f"ROC AUC: {metrics['roc_auc']:.4f}  "
            f"({100 * ci['confidence']:.0f}% CI {ci['low']:.4f} - {ci['high']:.4f}, {ci['method']}, "
            f"{ci['n_bootstraps']} resamples)",
            f"average precision: {metrics['average_precision']:.4f}",
        ]
        for key, entry in metrics["tpr_at_fpr"].items():
            if entry["tpr"] is None:
                lines.append(f"TPR at FPR {key}: n/a ({entry['note']})")
            else:
                lines.append(f"TPR at FPR {key}: {entry['tpr']:.4f}")
        if "tpr0" in metrics:  # (metrics.json files of lensclf 0.1.0 lack them)
            lines.append(f"TPR0 (recall at zero false positives): {metrics['tpr0']:.4f}; "
                         f"TPR10 (at ten): {metrics['tpr10']:.4f}")
            purity = ", ".join(f"top {k}: {v:.3f}" for k, v in metrics["purity_at_top"].items())
            lines.append(f"purity of the top-N candidates: {purity}")
        lines += [
            f"at threshold {metrics['threshold']:g}: precision {_fmt(metrics['precision'])}, "
            f"recall {_fmt(metrics['recall'])}, F1 {_fmt(metrics['f1'])}",
            "confusion matrix (rows true, columns predicted):",
            "                 non-lens   lens",
            f"  true non-lens  {tn:8d} {fp:6d}",
            f"  true lens      {fn:8d} {tp:6d}",
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"metrics must be the dict returned by lensclf.evaluate_scores; it lacks or mangles {exc}."
        ) from exc
    return "\n".join(lines)
