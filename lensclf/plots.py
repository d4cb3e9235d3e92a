"""Plots for lens finding: training history, ROC, precision-recall, confusion matrix,
score histograms, colour composites and a gallery of the worst mistakes.

Every function draws on the Axes it is given (``ax=``) or on a new figure,
and returns the Axes (single panel) or the Figure (several panels). Nothing
here calls ``plt.show``: the functions work with the non-interactive Agg
backend (and in notebooks). Close figures you do not keep
(``matplotlib.pyplot.close(fig)``).

The ROC, precision-recall and confusion-matrix plots are scikit-learn's
displays (:class:`~sklearn.metrics.RocCurveDisplay`,
:class:`~sklearn.metrics.PrecisionRecallDisplay`,
:class:`~sklearn.metrics.ConfusionMatrixDisplay`) with lens-finding labels.
"""

import math
import os
from numbers import Integral, Real

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from .metrics import _check_labels_and_scores, predict_from_scores

__all__ = [
    "composite_rgb",
    "plot_confusion_matrix",
    "plot_error_gallery",
    "plot_history",
    "plot_precision_recall",
    "plot_roc",
    "plot_score_histogram",
]

_CLASS_NAMES = ("non-lens", "lens")
_CLASS_COLOURS = ("tab:blue", "tab:orange")


def _pyplot():
    """``matplotlib.pyplot``, imported when a figure is drawn (scoring never pays for it)."""
    import matplotlib.pyplot as plt

    return plt


def _new_axes(ax, figsize=(5.0, 4.5)):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


# --------------------------------------------------------------------------- history


def _history_columns(history):
    """``{key: (epochs, values)}`` for the keys present in at least one epoch."""
    if history is None or isinstance(history, (str, bytes, dict)):
        raise TypeError(
            "history must be a skorch History or a list of dicts (one per epoch); "
            f"got {type(history).__name__}."
        )
    rows = list(history)
    if not rows:
        raise ValueError("history is empty: no epoch was recorded.")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"history entry {i} must be a dict of per-epoch values; got {type(row).__name__}.")
    columns = {}
    for key in ("train_loss", "valid_loss", "train_auc", "valid_auc"):
        epochs, values = [], []
        for i, row in enumerate(rows):
            value = row.get(key)
            if value is None:
                continue
            epochs.append(row.get("epoch", i + 1))
            values.append(float(value))
        if epochs:
            columns[key] = (np.asarray(epochs), np.asarray(values))
    return columns


def plot_history(history, ax=None):
    """Training curves: loss (train vs valid) and ROC AUC (train vs valid) per epoch.

    Parameters
    ----------
    history : skorch.history.History or list of dict
        One dict per epoch with any of the keys ``epoch``, ``train_loss``,
        ``valid_loss``, ``train_auc``, ``valid_auc`` (missing keys, e.g. no
        validation set, are simply not drawn). ``LensClassifier().net_.history``
        works as is.
    ax : sequence of two matplotlib Axes, optional
        Axes for the loss and the AUC panel. A new figure is made if omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding both panels. The epoch with the best validation
        AUC, when recorded, is marked on both panels.

    Raises
    ------
    TypeError, ValueError
        If ``history`` is not a list of dicts or is empty, or ``ax`` is not
        two Axes.
    """
    columns = _history_columns(history)
    if ax is None:
        fig, (ax_loss, ax_auc) = _pyplot().subplots(1, 2, figsize=(10.0, 4.0), layout="constrained")
    else:
        axes = list(np.ravel(ax)) if not hasattr(ax, "plot") else [ax]
        if len(axes) != 2:
            raise ValueError("plot_history draws two panels: pass ax as a pair of Axes (loss, AUC).")
        ax_loss, ax_auc = axes
        fig = ax_loss.figure

    best = None
    if "valid_auc" in columns:
        epochs, values = columns["valid_auc"]
        i = int(np.argmax(values))
        best = (epochs[i], values[i])

    for panel, (kind, label) in zip((ax_loss, ax_auc), (("loss", "Loss"), ("auc", "ROC AUC"))):
        drawn = False
        for split, style in (("train", "-"), ("valid", "--")):
            key = f"{split}_{kind}"
            if key in columns:
                epochs, values = columns[key]
                panel.plot(epochs, values, style, marker="o", markersize=3, label=f"{split}")
                drawn = True
        if best is not None:
            panel.axvline(best[0], color="grey", linestyle=":", label=f"best valid AUC (epoch {best[0]})")
        if kind == "auc" and best is not None:
            panel.plot([best[0]], [best[1]], "*", color="tab:red", markersize=12, label=f"best valid AUC = {best[1]:.3f}")
        if not drawn:
            panel.text(0.5, 0.5, f"no {label.lower()} recorded", ha="center", va="center", transform=panel.transAxes)
        panel.set_xlabel("epoch")
        panel.set_ylabel(label)
        panel.set_title(f"{label} per epoch")
        if drawn:
            panel.legend(loc="best", fontsize="small")
            panel.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- ROC / PR / confusion


def _auc_label(auc_ci):
    if auc_ci is None:
        return None
    values = tuple(float(v) for v in auc_ci)
    if len(values) == 3:
        auc, low, high = values
        return f"AUC = {auc:.3f} [{low:.3f}, {high:.3f}]"
    if len(values) == 2:
        return values
    raise ValueError(f"auc_ci must be (auc, low, high) or (low, high); got {auc_ci!r}.")


def plot_roc(y_true, y_score, ax=None, auc_ci=None, log_fpr=False, name=None):
    """ROC curve (fraction of lenses found vs fraction of non-lenses called lens).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens.
    y_score : array-like of shape (n_samples,)
        Lens scores.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made if omitted.
    auc_ci : tuple, optional
        ``(auc, low, high)`` (e.g. from :func:`lensclf.roc_auc_ci`) or
        ``(low, high)``: the interval is written in the legend.
    log_fpr : bool, default=False
        Logarithmic false-positive-rate axis, to read the low-FPR corner
        that matters when lenses are rare. The axis starts at half of
        ``1 / n_nonlenses``; the point FPR = 0 cannot be drawn.
    name : str, optional
        Curve name for the legend (default ``"classifier"``).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes; the curve is drawn by
        :meth:`sklearn.metrics.RocCurveDisplay.from_predictions`.
    """
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    ci = _auc_label(auc_ci)
    ax = _new_axes(ax)
    display = RocCurveDisplay.from_predictions(
        y_true,
        y_score,
        pos_label=1,
        name=name or "classifier",
        ax=ax,
        plot_chance_level=not log_fpr,
    )
    if isinstance(ci, str):
        display.line_.set_label(f"{name or 'classifier'} ({ci})")
    elif ci is not None:
        display.line_.set_label(f"{display.line_.get_label()} [{ci[0]:.3f}, {ci[1]:.3f}]")
    if log_fpr:
        n_neg = int(np.sum(y_true == 0))
        ax.set_xscale("log")
        ax.set_xlim(0.5 / n_neg, 1.02)
        ax.set_aspect("auto")  # the display sets "equal", meaningless on a log axis
    ax.set_xlabel("false-positive rate (non-lenses called lens)")
    ax.set_ylabel("true-positive rate (lenses found)")
    ax.set_title("ROC curve" + (" (log FPR)" if log_fpr else ""))
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_precision_recall(y_true, y_score, ax=None, name=None):
    """Precision-recall curve for the lens class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens.
    y_score : array-like of shape (n_samples,)
        Lens scores.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made if omitted.
    name : str, optional
        Curve name for the legend (default ``"classifier"``).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes; drawn by
        :meth:`sklearn.metrics.PrecisionRecallDisplay.from_predictions`, with
        the chance level (the lens fraction of the data).

    Notes
    -----
    Precision depends on the lens fraction of the data shown: on a balanced
    test set it is far higher than it would be in a survey where lenses are
    rare.
    """
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    ax = _new_axes(ax)
    PrecisionRecallDisplay.from_predictions(
        y_true, y_score, pos_label=1, name=name or "classifier", ax=ax, plot_chance_level=True
    )
    ax.set_xlabel("recall (lenses found)")
    ax.set_ylabel("precision (lens candidates that are lenses)")
    ax.set_title(f"Precision-recall ({int(y_true.sum())} lenses / {len(y_true)} objects)")
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_confusion_matrix(y_true, y_pred, ax=None, normalize=None):
    """Confusion matrix with the classes labelled "non-lens" and "lens".

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, 1 = lens, 0 = non-lens.
    y_pred : array-like of shape (n_samples,)
        Predicted labels 0/1 (threshold scores first, e.g. with
        :func:`lensclf.metrics.predict_from_scores`).
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made if omitted.
    normalize : {None, "true", "pred", "all"}, default=None
        As in :func:`sklearn.metrics.confusion_matrix`: counts (None) or
        fractions over true rows, predicted columns or everything.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes; drawn by
        :meth:`sklearn.metrics.ConfusionMatrixDisplay.from_predictions`.
    """
    y_true, _ = _check_labels_and_scores(y_true, np.zeros(len(np.asarray(y_true))), need_both_classes=False)
    y_pred = np.asarray(y_pred)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred must have the shape of y_true {y_true.shape}; got {y_pred.shape}.")
    if not np.all(np.isin(y_pred, (0, 1))):
        raise ValueError(
            "y_pred must hold predicted labels 0/1, not scores; threshold the scores first "
            "(lensclf.metrics.predict_from_scores)."
        )
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all'; got {normalize!r}.")
    ax = _new_axes(ax, figsize=(4.5, 4.0))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred.astype(np.int64),
        labels=[0, 1],
        display_labels=list(_CLASS_NAMES),
        normalize=normalize,
        values_format=None if normalize is None else ".3f",
        cmap="Blues",
        ax=ax,
        colorbar=False,
    )
    ax.set_title("Confusion matrix" + ("" if normalize is None else f" (normalised over {normalize})"))
    return ax


def plot_score_histogram(y_true, y_score, ax=None, threshold=0.5, log_y=False, bins=50):
    """Histogram of the lens scores, one per class, with the decision threshold.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens.
    y_score : array-like of shape (n_samples,)
        Lens scores.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made if omitted.
    threshold : float or None, default=0.5
        Decision threshold drawn as a vertical line (None: no line).
    log_y : bool, default=False
        Logarithmic count axis (useful when one class dominates).
    bins : int, default=50
        Number of bins, shared by both classes (over [0, 1] when all scores
        lie there).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes, with one histogram patch set per class present.
    """
    y_true, y_score = _check_labels_and_scores(y_true, y_score, need_both_classes=False)
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}.")
    ax = _new_axes(ax)
    lo, hi = (0.0, 1.0) if (y_score.min() >= 0 and y_score.max() <= 1) else (y_score.min(), y_score.max())
    edges = np.histogram_bin_edges(y_score, bins=int(bins), range=(lo, hi) if hi > lo else None)
    for label in (0, 1):
        scores = y_score[y_true == label]
        if len(scores):
            ax.hist(
                scores,
                bins=edges,
                histtype="bar",
                rwidth=1.0,
                alpha=0.5,
                linewidth=0,
                color=_CLASS_COLOURS[label],
                label=f"{_CLASS_NAMES[label]} (n={len(scores)})",
            )
    if threshold is not None:
        ax.axvline(float(threshold), color="k", linestyle="--", label=f"threshold = {float(threshold):g}")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("lens score")
    ax.set_ylabel("number of objects")
    ax.set_title("Score distribution by true class")
    ax.legend(loc="best", fontsize="small")
    return ax


# --------------------------------------------------------------------------- images


def composite_rgb(image, stretch="asinh", softening=8.0):
    """Colour composite of a multi-band cutout, for display.

    Band 0 goes to blue, band 1 to green and band 2 to red (g, r, i ->
    B, G, R). The ``"asinh"`` stretch follows Lupton et al. (2004): the sky
    (per-band median) is subtracted, the mean intensity ``I`` of the bands is
    scaled by its 99.5th percentile and stretched as ``asinh(Q I) / asinh(Q)``,
    and every band is multiplied by the same factor, so colours are kept;
    pixels that would exceed 1 are scaled down as a whole (not clipped per
    band). ``"linear"`` only subtracts the sky and scales.

    Parameters
    ----------
    image : array-like of shape (C, H, W) or (H, W)
        The cutout. One or two bands give a grey image (mean of the bands);
        more than three bands: the first three are used. NaN/inf pixels are
        shown as sky. The input is not modified.
    stretch : {"asinh", "linear"}, default="asinh"
        Intensity stretch.
    softening : float, default=8.0
        Lupton's ``Q``: larger values show more faint structure.

    Returns
    -------
    numpy.ndarray of shape (H, W, 3), float64
        RGB values in [0, 1] (all 0 for a constant image).
    """
    if stretch not in ("asinh", "linear"):
        raise ValueError(f"stretch must be 'asinh' or 'linear'; got {stretch!r}.")
    if isinstance(softening, bool) or not isinstance(softening, Real) or not softening > 0:
        raise ValueError(f"softening must be a positive number; got {softening!r}.")
    bands = np.array(image, dtype=np.float64)  # a copy: the input stays untouched
    if bands.ndim == 2:
        bands = bands[None]
    if bands.ndim != 3 or bands.shape[0] < 1 or bands.shape[1] < 1 or bands.shape[2] < 1:
        raise ValueError(f"image must have shape (bands, height, width) or (height, width); got {np.shape(image)}.")
    if bands.shape[0] >= 3:
        bands = bands[:3]
    else:
        bands = np.repeat(bands.mean(axis=0, keepdims=True), 3, axis=0)

    finite = np.isfinite(bands)
    for b in range(3):
        sky = np.median(bands[b][finite[b]]) if finite[b].any() else 0.0
        bands[b][~finite[b]] = sky
        bands[b] -= sky
    np.clip(bands, 0.0, None, out=bands)

    intensity = bands.mean(axis=0)
    scale = np.percentile(intensity, 99.5)
    if not scale > 0:
        scale = intensity.max()
    if not scale > 0:  # constant (or all-sky) image
        return np.zeros(bands.shape[1:] + (3,))
    bands /= scale
    if stretch == "asinh":
        x = intensity / scale
        factor = np.ones_like(x)
        positive = x > 0
        factor[positive] = np.arcsinh(softening * x[positive]) / (math.asinh(softening) * x[positive])
        factor[~positive] = softening / math.asinh(softening)  # the limit x -> 0
        bands *= factor
    peak = bands.max(axis=0)
    over = peak > 1.0
    bands[:, over] /= peak[over]
    rgb = np.moveaxis(bands[::-1], 0, -1)  # band 2 -> R, band 1 -> G, band 0 -> B
    return np.clip(rgb, 0.0, 1.0)


def _short_name(name, width=24):
    """The file name with its folder (``test_lenses/9.npy``), shortened from the left."""
    parts = os.path.normpath(str(name)).split(os.sep)
    name = "/".join(parts[-2:])
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def plot_error_gallery(X, y_true, y_score, names=None, n=8, threshold=0.5):
    """Gallery of the most confident mistakes: false positives and false negatives.

    Top row: the ``n`` non-lenses with the highest scores at or above the
    threshold (false positives, most confident first). Bottom row: the ``n``
    lenses with the lowest scores below the threshold (false negatives,
    most confident first). Each is shown as a colour composite
    (:func:`composite_rgb`) titled with its file name and score.

    Parameters
    ----------
    X : array-like of shape (n_samples, C, H, W)
        The cutouts.
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens.
    y_score : array-like of shape (n_samples,)
        Lens scores; an object is called a lens when ``score >= threshold``.
    names : sequence of str, optional
        One name per object (e.g. file paths; the file name and its folder
        are shown).
        Defaults to the index ``#i``.
    n : int, default=8
        Largest number of images per row.
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    matplotlib.figure.Figure
        A 2 x ``n`` grid; unused cells are blank, and a row without any
        mistake says so.
    """
    y_true, y_score = _check_labels_and_scores(y_true, y_score, need_both_classes=False)
    X = np.asarray(X)
    if X.ndim != 4 or len(X) != len(y_true):
        raise ValueError(
            f"X must have shape (n_samples, bands, height, width) with n_samples = {len(y_true)}; got {X.shape}."
        )
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    if names is None:
        names = [f"#{i}" for i in range(len(y_true))]
    else:
        names = [str(v) for v in names]
        if len(names) != len(y_true):
            raise ValueError(f"names must hold one name per object ({len(y_true)}); got {len(names)}.")
    y_pred = predict_from_scores(y_score, threshold)

    false_pos = np.flatnonzero((y_true == 0) & (y_pred == 1))
    false_pos = false_pos[np.argsort(-y_score[false_pos], kind="stable")][:n]
    false_neg = np.flatnonzero((y_true == 1) & (y_pred == 0))
    false_neg = false_neg[np.argsort(y_score[false_neg], kind="stable")][:n]

    fig, axes = _pyplot().subplots(2, n, figsize=(1.9 * n, 4.9), squeeze=False, layout="constrained")
    rows = (
        (false_pos, f"no false positives (no non-lens scored >= {threshold:g})"),
        (false_neg, f"no false negatives (no lens scored < {threshold:g})"),
    )
    for row, (indices, empty_text) in enumerate(rows):
        for col in range(n):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(indices):
                i = indices[col]
                ax.imshow(composite_rgb(X[i]), origin="lower", interpolation="nearest")
                ax.set_title(f"{_short_name(names[i])}\nscore {y_score[i]:.3f}", fontsize=8)
            else:
                ax.patch.set_visible(False)  # blank cell; lets a note run across it
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if col == 0 and len(indices) == 0:
                    note = ax.text(0.02, 0.5, empty_text, ha="left", va="center", transform=ax.transAxes, fontsize=10)
                    note.set_in_layout(False)  # may run over the empty cells to its right
        axes[row, 0].set_ylabel("false positives" if row == 0 else "false negatives", fontsize=9)
    fig.suptitle(
        f"Most confident mistakes at threshold {threshold:g}: "
        f"{int(np.sum((y_true == 0) & (y_pred == 1)))} false positives (top), "
        f"{int(np.sum((y_true == 1) & (y_pred == 0)))} false negatives (bottom)",
        fontsize=10,
    )
    return fig
