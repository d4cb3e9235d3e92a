"""Metrics for lens finding: TPR at a fixed false-positive rate, bootstrap AUC, scorers.

Lenses are rare: in a real survey only about one object in a thousand (or
fewer) is a strong lens, so the useful question is "what fraction of the
lenses do we find while calling at most 1 % (or 0.1 %) of the non-lenses a
lens?". :func:`tpr_at_fpr` answers it; :func:`tpr_at_fpr_scorer` and
:data:`SCORERS` make it usable in scikit-learn model selection;
:func:`roc_auc_ci` puts an uncertainty on the ROC AUC; :func:`evaluate_scores`
gathers everything a report needs in one JSON-serialisable dict.

Labels are 1 = lens (the positive class) and 0 = non-lens; scores are the
lens probability ``predict_proba(X)[:, 1]`` (any score that grows with the
lens probability works for the ranking metrics).
"""

import math
from collections import namedtuple
from numbers import Integral, Real

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    get_scorer,
    make_scorer,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "REPORTED_FPRS",
    "RocAucInterval",
    "SCORERS",
    "evaluate_scores",
    "predict_from_scores",
    "purity_at_top",
    "roc_auc_ci",
    "tpr_at_n_false_positives",
    "tpr_at_fpr",
    "tpr_at_fpr_scorer",
]

#: The false-positive rates reported by :func:`evaluate_scores`, by key.
REPORTED_FPRS = {"1e-2": 1e-2, "1e-3": 1e-3}
#: Sizes of the top-N candidate lists whose purity evaluate_scores reports.
PURITY_TOP_N = (10, 100, 1000)

RocAucInterval = namedtuple("RocAucInterval", ["auc", "low", "high"])
RocAucInterval.__doc__ = """ROC AUC with a bootstrap confidence interval.

Fields
------
auc : float
    ROC AUC of the full sample.
low, high : float
    Lower and upper bounds of the percentile bootstrap interval.
"""


def _check_labels_and_scores(y_true, y_score, *, need_both_classes=True):
    """Return ``(y_true, y_score)`` as 1-D int / float arrays, or raise ValueError."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one label per object); got shape {y_true.shape}.")
    if y_score.ndim == 2 and y_score.shape[1] == 2:
        raise ValueError(
            "y_score must be 1-D; got a 2-column array. Pass the lens probability "
            "predict_proba(X)[:, 1], not the whole predict_proba output."
        )
    if y_score.ndim != 1:
        raise ValueError(f"y_score must be 1-D (one score per object); got shape {y_score.shape}.")
    if len(y_true) != len(y_score):
        raise ValueError(
            f"y_true and y_score have different lengths: {len(y_true)} labels, {len(y_score)} scores."
        )
    if len(y_true) == 0:
        raise ValueError("y_true and y_score are empty.")
    if y_true.dtype == bool:
        y_true = y_true.astype(np.int64)
    if not np.issubdtype(y_true.dtype, np.number):
        raise ValueError(f"y_true must hold the labels 0 (non-lens) and 1 (lens); got dtype {y_true.dtype}.")
    bad = ~np.isin(y_true, (0, 1))
    if bad.any():
        found = np.unique(y_true[bad])[:5].tolist()
        raise ValueError(
            f"y_true must hold only the labels 0 (non-lens) and 1 (lens); found {found}."
        )
    y_true = y_true.astype(np.int64)
    if not np.issubdtype(y_score.dtype, np.number) or y_score.dtype == bool:
        raise ValueError(f"y_score must be numeric scores; got dtype {y_score.dtype}.")
    y_score = y_score.astype(np.float64)
    if not np.all(np.isfinite(y_score)):
        n_bad = int(np.sum(~np.isfinite(y_score)))
        raise ValueError(f"y_score holds {n_bad} NaN or infinite value(s); scores must be finite.")
    if need_both_classes:
        n_pos = int(y_true.sum())
        if n_pos == 0 or n_pos == len(y_true):
            only = "lenses (1)" if n_pos else "non-lenses (0)"
            raise ValueError(
                f"y_true holds only {only}; this metric needs both lenses and non-lenses."
            )
    return y_true, y_score


def _check_fpr(fpr):
    if isinstance(fpr, bool) or not isinstance(fpr, Real) or not (0 < fpr <= 1):
        raise ValueError(f"fpr must be a number in (0, 1]; got {fpr!r}.")
    return float(fpr)


def tpr_at_fpr(y_true, y_score, fpr=1e-2):
    """True-positive rate (fraction of lenses found) at a given false-positive rate.

    The ROC curve is computed with :func:`sklearn.metrics.roc_curve` (every
    operating point kept). The value returned is the true-positive rate of
    the operating point with the largest false-positive rate that is still
    ``<= fpr``: a threshold that can really be used, never an interpolation
    between two thresholds. The curve starts at the point (0, 0), so the
    result is always defined; it is 0 when even the single highest-scored
    non-lens would exceed the allowed false-positive rate and no lens scores
    above all non-lenses.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens (booleans accepted). Both classes must
        be present.
    y_score : array-like of shape (n_samples,)
        Lens scores, higher meaning more lens-like (e.g.
        ``predict_proba(X)[:, 1]``).
    fpr : float, default=1e-2
        The largest allowed false-positive rate, in (0, 1].

    Returns
    -------
    float
        The true-positive rate at that operating point, in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` holds only one class or labels other than 0/1, if the
        inputs have different lengths or non-finite scores, or if ``fpr`` is
        outside (0, 1].

    Notes
    -----
    With ``n`` non-lenses the achievable false-positive rates are multiples
    of ``1 / n``; for ``fpr < 1 / n`` the only usable point is FPR = 0 and
    the number says little. :func:`evaluate_scores` flags that case.

    Examples
    --------
    >>> tpr_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.95], fpr=0.25)
    1.0
    >>> tpr_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.95], fpr=0.2)
    0.5
    """
    fpr = _check_fpr(fpr)
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    fprs, tprs, _ = roc_curve(y_true, y_score, pos_label=1, drop_intermediate=False)
    # fprs is non-decreasing and tprs non-decreasing along it; the last point
    # with fprs <= fpr has the largest TPR among admissible points.
    last = np.searchsorted(fprs, fpr, side="right") - 1
    return float(tprs[last])


def _check_count_arg(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return int(value)


def tpr_at_n_false_positives(y_true, y_score, n_false_positives=0):
    """Fraction of lenses scored above every non-lens but ``n_false_positives`` of them.

    The Bologna Lens Finding Challenge metrics: TPR0 (``n_false_positives=0``,
    the recall at zero false positives) and TPR10 (``n_false_positives=10``).
    The threshold is the score of the ``n_false_positives + 1``-th highest
    scored non-lens; a lens counts when it scores strictly above it (a tie
    with that non-lens does not count). With at most ``n_false_positives``
    non-lenses, every lens counts.

    Examples
    --------
    >>> tpr_at_n_false_positives([0, 0, 1, 1, 1], [0.9, 0.2, 0.95, 0.5, 0.1], 0)
    0.3333333333333333
    >>> tpr_at_n_false_positives([0, 0, 1, 1, 1], [0.9, 0.2, 0.95, 0.5, 0.1], 1)
    0.6666666666666666
    """
    n = _check_count_arg("n_false_positives", n_false_positives)
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    negatives = np.sort(y_score[y_true == 0])[::-1]
    positives = y_score[y_true == 1]
    if len(negatives) <= n:
        return 1.0
    return float(np.mean(positives > negatives[n]))


def purity_at_top(y_true, y_score, n_candidates):
    """Fraction of lenses among the ``n_candidates`` highest-scored objects (the purity of a top-N list).

    Objects with equal scores are taken in their input order (a stable sort).

    Examples
    --------
    >>> purity_at_top([0, 1, 1, 0, 1], [0.9, 0.8, 0.7, 0.1, 0.2], 3)
    0.6666666666666666
    """
    n = _check_count_arg("n_candidates", n_candidates, low=1)
    y_true, y_score = _check_labels_and_scores(y_true, y_score, need_both_classes=False)
    if n > len(y_true):
        raise ValueError(f"n_candidates={n} is larger than the {len(y_true)} objects scored.")
    top = np.argsort(-y_score, kind="stable")[:n]
    return float(y_true[top].mean())


def _check_bootstrap_args(n_bootstraps, confidence):
    if isinstance(n_bootstraps, bool) or not isinstance(n_bootstraps, Integral) or n_bootstraps < 1:
        raise ValueError(f"n_bootstraps must be a positive integer; got {n_bootstraps!r}.")
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not (0 < confidence < 1):
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}.")


def _bootstrap_counts(rng, n_items, n_resamples):
    """How often each of ``n_items`` is drawn in each resample (with replacement)."""
    idx = rng.integers(0, n_items, size=(n_resamples, n_items))
    offsets = (np.arange(n_resamples) * n_items)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=n_resamples * n_items).reshape(
        n_resamples, n_items
    )


def _bootstrap_aucs(pos_scores, neg_scores, n_bootstraps, rng, chunk_size=None):
    """ROC AUC of ``n_bootstraps`` stratified resamples, by the Mann-Whitney formula.

    For a resample, AUC = U / (n_pos * n_neg), with U the number of
    (positive, negative) pairs with the positive ranked higher (ties count
    one half). Each positive's place among the *sorted* negatives is found
    once; the resample only changes how often each positive and each negative
    is drawn, so U is a weighted sum of cumulative negative counts.
    """
    n_pos, n_neg = len(pos_scores), len(neg_scores)
    neg_sorted = np.sort(neg_scores)
    below = np.searchsorted(neg_sorted, pos_scores, side="left")  # negatives strictly lower
    not_above = np.searchsorted(neg_sorted, pos_scores, side="right")  # lower or tied
    if chunk_size is None:  # keep each (chunk, n) array around 4 million entries
        chunk_size = max(1, 4_000_000 // max(n_pos, n_neg))
    aucs = np.empty(n_bootstraps)
    for start in range(0, n_bootstraps, chunk_size):
        b = min(chunk_size, n_bootstraps - start)
        # draws of each (sorted) negative -> cumulative count of drawn negatives
        neg_counts = _bootstrap_counts(rng, n_neg, b)
        cum = np.zeros((b, n_neg + 1))
        np.cumsum(neg_counts, axis=1, out=cum[:, 1:])
        n_lower = cum[:, below]
        n_tied = cum[:, not_above] - n_lower
        pos_counts = _bootstrap_counts(rng, n_pos, b)
        u = np.einsum("ij,ij->i", pos_counts, n_lower + 0.5 * n_tied)
        aucs[start : start + b] = u / (n_pos * n_neg)
    return aucs


def roc_auc_ci(y_true, y_score, n_bootstraps=1000, confidence=0.95, random_state=0):
    """ROC AUC with a stratified-bootstrap percentile confidence interval.

    Lenses and non-lenses are resampled separately (each with replacement,
    keeping their counts), so every resample holds both classes and the class
    balance of the data. The AUC of each resample is computed from ranks
    (the Mann-Whitney U statistic, ties counted one half, exactly as
    :func:`sklearn.metrics.roc_auc_score`), vectorised over resamples.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens. Both classes must be present.
    y_score : array-like of shape (n_samples,)
        Lens scores, higher meaning more lens-like.
    n_bootstraps : int, default=1000
        Number of bootstrap resamples.
    confidence : float, default=0.95
        Coverage of the interval, in (0, 1).
    random_state : int, numpy.random.Generator or None, default=0
        Seed for the resampling; the same seed gives the same interval.

    Returns
    -------
    RocAucInterval
        Named tuple ``(auc, low, high)``: the AUC of the full sample and the
        ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of
        the bootstrap AUCs.

    Raises
    ------
    ValueError
        For one-class or non-0/1 labels, mismatched lengths, non-finite
        scores, ``n_bootstraps < 1`` or ``confidence`` outside (0, 1).

    Examples
    --------
    >>> auc, low, high = roc_auc_ci([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    >>> low <= auc <= high
    True
    """
    _check_bootstrap_args(n_bootstraps, confidence)
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    auc = float(roc_auc_score(y_true, y_score))
    rng = np.random.default_rng(random_state)
    aucs = _bootstrap_aucs(y_score[y_true == 1], y_score[y_true == 0], int(n_bootstraps), rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return RocAucInterval(auc, float(low), float(high))


def tpr_at_fpr_scorer(fpr=1e-2):
    """A scikit-learn scorer for the true-positive rate at a false-positive rate.

    Usable as ``scoring=`` in :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_val_score` and friends. It calls the
    estimator's ``predict_proba`` and scores the probability of class 1
    (lens) with :func:`tpr_at_fpr`; higher is better.

    Parameters
    ----------
    fpr : float, default=1e-2
        The largest allowed false-positive rate, in (0, 1].

    Returns
    -------
    callable
        A scorer ``scorer(estimator, X, y) -> float`` made by
        :func:`sklearn.metrics.make_scorer`.

    Notes
    -----
    A validation fold needs at least ``1 / fpr`` non-lenses for the number to
    mean much; with fewer the only usable operating point is FPR = 0.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> # cross_val_score(clf, X, y, scoring=tpr_at_fpr_scorer(1e-2))
    """
    fpr = _check_fpr(fpr)
    return make_scorer(tpr_at_fpr, response_method="predict_proba", fpr=fpr)


#: Ready-made scorers for ``GridSearchCV(scoring=SCORERS, refit=...)``: TPR at
#: FPR 1e-2 and 1e-3, plus scikit-learn's ROC AUC and average precision.
SCORERS = {
    "tpr_at_fpr_1e-2": tpr_at_fpr_scorer(1e-2),
    "tpr_at_fpr_1e-3": tpr_at_fpr_scorer(1e-3),
    "roc_auc": get_scorer("roc_auc"),
    "average_precision": get_scorer("average_precision"),
}


def predict_from_scores(y_score, threshold=0.5):
    """Labels from lens scores: 1 (lens) where ``score >= threshold``, else 0.

    The rule is the one of :meth:`lensclf.LensClassifier.predict` (a lens when
    the lens probability is at least the threshold).

    Parameters
    ----------
    y_score : array-like of shape (n_samples,)
        Lens scores.
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    numpy.ndarray of shape (n_samples,), dtype int64
        Predicted labels.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}.")
    return (np.asarray(y_score, dtype=np.float64) >= threshold).astype(np.int64)


def _min_negatives(fpr):
    """Fewest non-lenses for which an FPR of ``fpr`` is a reachable operating point."""
    return math.ceil(1.0 / fpr - 1e-9)


def evaluate_scores(y_true, y_score, threshold=0.5, prior=None, n_bootstraps=1000, random_state=0):
    """Every number a lens-finding report needs, as a JSON-serialisable dict.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels, 1 = lens, 0 = non-lens. Both classes must be present.
    y_score : array-like of shape (n_samples,)
        Lens probabilities (``predict_proba(X)[:, 1]``).
    threshold : float, default=0.5
        Decision threshold for the confusion matrix, precision, recall and
        F1 (an object is called a lens when ``score >= threshold``).
    prior : float, str or None, default=None
        The lens prior the probabilities refer to (the lens fraction the
        classifier was trained or calibrated for). Recorded verbatim; ``None``
        is recorded as ``"balanced (0.5)"``.
    n_bootstraps : int, default=1000
        Resamples for the ROC AUC interval (see :func:`roc_auc_ci`).
    random_state : int or None, default=0
        Seed for the bootstrap.

    Returns
    -------
    dict
        Plain floats, ints, strings, lists and ``None`` only:

        - ``n``, ``n_lenses``, ``n_nonlenses``: counts;
        - ``prior``, ``threshold``;
        - ``roc_auc``: float; ``roc_auc_ci``: dict with ``low``, ``high``,
          ``confidence``, ``n_bootstraps``, ``method``;
        - ``average_precision``: float;
        - ``tpr_at_fpr``: dict keyed ``"1e-2"`` and ``"1e-3"``, each a dict
          ``{"fpr", "tpr", "note"}``; ``tpr`` is ``None`` (and ``note`` says
          why) when there are fewer than ``1 / fpr`` non-lenses;
        - ``tpr0``, ``tpr10``: the fraction of lenses scored above all but 0 /
          10 non-lenses (:func:`tpr_at_n_false_positives`);
        - ``purity_at_top``: dict keyed by N (``"10"``, ``"100"``, ``"1000"``,
          those up to ``n``): the lens fraction among the N highest scores;
        - ``confusion_matrix``: ``[[tn, fp], [fn, tp]]`` (rows true label,
          columns predicted label, 0 = non-lens, 1 = lens);
        - ``precision``, ``recall``, ``f1``: for the lens class at the
          threshold (0 when undefined, e.g. no object called a lens);
        - ``notes``: list of strings (the ``tpr_at_fpr`` notes).

    Raises
    ------
    ValueError
        For one-class or non-0/1 labels, mismatched lengths, non-finite
        scores or a bad threshold / bootstrap setting.
    TypeError
        If ``prior`` is not a number, a string or None.
    """
    if isinstance(prior, np.generic):
        prior = prior.item()
    if not (prior is None or isinstance(prior, str) or (isinstance(prior, Real) and not isinstance(prior, bool))):
        raise TypeError(f"prior must be a number, a string or None; got {type(prior).__name__}.")
    y_true, y_score = _check_labels_and_scores(y_true, y_score)
    y_pred = predict_from_scores(y_score, threshold)
    n_lenses = int(y_true.sum())
    n_nonlenses = int(len(y_true) - n_lenses)

    auc, low, high = roc_auc_ci(
        y_true, y_score, n_bootstraps=n_bootstraps, confidence=0.95, random_state=random_state
    )
    tprs, notes = {}, []
    for key, fpr in REPORTED_FPRS.items():
        needed = _min_negatives(fpr)
        if n_nonlenses < needed:
            note = (
                f"only {n_nonlenses} non-lenses, fewer than 1/FPR = {needed}: "
                "this false-positive rate cannot be measured"
            )
            tprs[key] = {"fpr": fpr, "tpr": None, "note": note}
            notes.append(f"TPR at FPR {key} not reported: {note}.")
        else:
            tprs[key] = {"fpr": fpr, "tpr": tpr_at_fpr(y_true, y_score, fpr), "note": None}

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=[1], average="binary", pos_label=1, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "n_lenses": n_lenses,
        "n_nonlenses": n_nonlenses,
        "prior": "balanced (0.5)" if prior is None else prior,
        "threshold": float(threshold),
        "roc_auc": auc,
        "roc_auc_ci": {
            "low": low,
            "high": high,
            "confidence": 0.95,
            "n_bootstraps": int(n_bootstraps),
            "method": "stratified bootstrap, percentile interval",
        },
        "average_precision": float(average_precision_score(y_true, y_score, pos_label=1)),
        "tpr_at_fpr": tprs,
        "tpr0": tpr_at_n_false_positives(y_true, y_score, 0),
        "tpr10": tpr_at_n_false_positives(y_true, y_score, 10),
        "purity_at_top": {str(k): purity_at_top(y_true, y_score, k) for k in PURITY_TOP_N if k <= len(y_true)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "notes": notes,
    }
