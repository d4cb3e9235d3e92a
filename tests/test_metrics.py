"""Tests for lensclf.metrics: TPR at FPR, bootstrap AUC, scorers, evaluate_scores."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

import lensclf
from lensclf.metrics import (
    SCORERS,
    _bootstrap_aucs,
    _bootstrap_counts,
    evaluate_scores,
    predict_from_scores,
    roc_auc_ci,
    tpr_at_fpr,
    tpr_at_fpr_scorer,
)


def _scores(n, n_pos, separation=1.0, seed=0):
    """Labels (n_pos lenses first, shuffled) and noisy scores that favour lenses."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[:n_pos] = 1
    rng.shuffle(y)
    s = rng.normal(size=n) + separation * y
    return y, 1.0 / (1.0 + np.exp(-s))


# --------------------------------------------------------------------------- tpr_at_fpr


def test_tpr_at_fpr_hand_worked_example():
    # Sorted by score: 0.95 (lens), 0.9 (non-lens), 0.8 (lens), then three non-lenses.
    # Operating points (fpr, tpr): (0, 0), (0, .5), (.25, .5), (.25, 1), (.5, 1), (.75, 1), (1, 1)
    y = [0, 0, 0, 0, 1, 1]
    s = [0.1, 0.2, 0.3, 0.9, 0.8, 0.95]
    assert tpr_at_fpr(y, s, fpr=0.2) == 0.5
    assert tpr_at_fpr(y, s, fpr=0.25) == 1.0
    assert tpr_at_fpr(y, s, fpr=1.0) == 1.0
    # no lens above the top non-lens: only FPR 0 -> TPR 0 is admissible
    assert tpr_at_fpr([1, 0, 0, 0], [0.1, 0.9, 0.2, 0.3], fpr=0.3) == 0.0


def test_tpr_at_fpr_with_tied_scores_does_not_interpolate():
    # the tie at 0.5 moves (fpr, tpr) from (0, .5) to (.5, 1) in one step
    y = [0, 1, 0, 1]
    s = [0.5, 0.5, 0.1, 0.9]
    assert tpr_at_fpr(y, s, fpr=0.49) == 0.5
    assert tpr_at_fpr(y, s, fpr=0.5) == 1.0


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=2, max_size=40),
    data=st.data(),
    fpr=st.floats(min_value=1e-3, max_value=1.0),
)
def test_tpr_at_fpr_matches_brute_force_threshold_sweep(labels, data, fpr):
    y = np.array(labels)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    s = np.array(data.draw(st.lists(st.integers(0, 6), min_size=len(y), max_size=len(y)))) / 6.0
    best = 0.0  # threshold above every score: nothing called a lens
    for t in np.unique(s):
        called = s >= t
        if called[y == 0].mean() <= fpr:
            best = max(best, called[y == 1].mean())
    assert tpr_at_fpr(y, s, fpr) == pytest.approx(best)


@pytest.mark.parametrize("fpr", [0, -0.1, 1.5, float("nan"), "0.01", True])
def test_tpr_at_fpr_rejects_bad_fpr(fpr):
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([0, 1], [0.2, 0.8], fpr=fpr)


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "only lenses"),
        ([0, 0], [0.1, 0.2], "only non-lenses"),
        ([0, 2], [0.1, 0.2], "labels 0"),
        ([0, 1, 1], [0.1, 0.2], "different lengths"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], r"predict_proba\(X\)\[:, 1\]"),
        ([], [], "empty"),
    ],
)
def test_bad_labels_and_scores_give_clear_errors(y, s, match):
    with pytest.raises(ValueError, match=match):
        tpr_at_fpr(y, s)
    with pytest.raises(ValueError, match=match):
        roc_auc_ci(y, s, n_bootstraps=10)


def test_boolean_labels_are_accepted():
    y, s = _scores(200, 60)
    assert tpr_at_fpr(y.astype(bool), s, 0.1) == tpr_at_fpr(y, s, 0.1)


# --------------------------------------------------------------------------- roc_auc_ci


def test_roc_auc_ci_point_estimate_and_interval():
    y, s = _scores(600, 150)
    result = roc_auc_ci(y, s, n_bootstraps=500)
    assert result.auc == pytest.approx(roc_auc_score(y, s))
    assert result.low < result.auc < result.high
    auc, low, high = result  # a plain tuple as well
    assert (auc, low, high) == tuple(result)


def test_roc_auc_ci_narrows_with_more_data():
    small = roc_auc_ci(*_scores(200, 50, seed=1), n_bootstraps=400)
    large = roc_auc_ci(*_scores(8000, 2000, seed=1), n_bootstraps=400)
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_roc_auc_ci_wider_for_higher_confidence():
    y, s = _scores(500, 100)
    narrow = roc_auc_ci(y, s, n_bootstraps=400, confidence=0.5)
    wide = roc_auc_ci(y, s, n_bootstraps=400, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_roc_auc_ci_is_deterministic_given_random_state():
    y, s = _scores(300, 100)
    assert roc_auc_ci(y, s, n_bootstraps=200, random_state=3) == roc_auc_ci(y, s, n_bootstraps=200, random_state=3)
    assert roc_auc_ci(y, s, n_bootstraps=200, random_state=3) != roc_auc_ci(y, s, n_bootstraps=200, random_state=4)


def test_bootstrap_aucs_equal_sklearn_on_each_resample():
    # ties in the scores on purpose; chunks smaller than the number of resamples
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    s = np.round(rng.normal(size=120) + y, 1)
    pos, neg = s[y == 1], s[y == 0]
    fast = _bootstrap_aucs(pos, neg, 11, np.random.default_rng(7), chunk_size=4)

    replay = np.random.default_rng(7)  # the same draws, one resample at a time
    slow = []
    neg_sorted = np.sort(neg)
    for start in range(0, 11, 4):
        b = min(4, 11 - start)
        neg_counts = _bootstrap_counts(replay, len(neg), b)
        pos_counts = _bootstrap_counts(replay, len(pos), b)
        for k in range(b):
            scores = np.r_[np.repeat(pos, pos_counts[k]), np.repeat(neg_sorted, neg_counts[k])]
            labels = np.r_[np.ones(pos_counts[k].sum()), np.zeros(neg_counts[k].sum())]
            slow.append(roc_auc_score(labels, scores))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_bootstrap_counts_are_stratified_resamples():
    counts = _bootstrap_counts(np.random.default_rng(0), 7, 50)
    assert counts.shape == (50, 7)
    assert np.all(counts.sum(axis=1) == 7)  # each resample keeps the class size
    assert counts.max() > 1  # drawn with replacement


def test_roc_auc_ci_works_with_a_single_lens():
    # stratified resampling: every resample keeps the one lens, so no resample is one-class
    y = np.r_[1, np.zeros(40, dtype=int)]
    s = np.linspace(0, 1, 41)
    result = roc_auc_ci(y, s, n_bootstraps=100)
    assert 0.0 <= result.low <= result.auc <= result.high <= 1.0


@pytest.mark.parametrize("kwargs", [{"n_bootstraps": 0}, {"n_bootstraps": 2.5}, {"confidence": 1.0}, {"confidence": 0}])
def test_roc_auc_ci_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        roc_auc_ci([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6], **kwargs)


def test_inputs_are_not_modified():
    y, s = _scores(100, 30)
    y_copy, s_copy = y.copy(), s.copy()
    roc_auc_ci(y, s, n_bootstraps=20)
    tpr_at_fpr(y, s)
    evaluate_scores(y, s, n_bootstraps=20)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(s, s_copy)


# --------------------------------------------------------------------------- scorers


@pytest.fixture(scope="module")
def tabular_data():
    X, y = make_classification(n_samples=900, n_features=8, n_informative=4, weights=[0.8], flip_y=0.05, random_state=0)
    return X, y


def test_scorer_in_cross_val_score_matches_manual_folds(tabular_data):
    X, y = tabular_data
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(LogisticRegression(), X, y, cv=cv, scoring=tpr_at_fpr_scorer(0.05))
    manual = []
    for train, test in cv.split(X, y):
        clf = LogisticRegression().fit(X[train], y[train])
        manual.append(tpr_at_fpr(y[test], clf.predict_proba(X[test])[:, 1], 0.05))
    np.testing.assert_allclose(scores, manual)


def test_scorer_scores_the_lens_class_probability(tabular_data):
    X, y = tabular_data
    clf = LogisticRegression().fit(X, y)
    proba = clf.predict_proba(X)
    scorer = tpr_at_fpr_scorer(1e-2)
    assert scorer(clf, X, y) == tpr_at_fpr(y, proba[:, 1], 1e-2)
    assert scorer(clf, X, y) != tpr_at_fpr(y, proba[:, 0], 1e-2)


def test_scorers_in_grid_search(tabular_data):
    X, y = tabular_data
    search = GridSearchCV(
        LogisticRegression(), {"C": [1e-3, 1.0]}, scoring=SCORERS, refit="tpr_at_fpr_1e-2", cv=3
    ).fit(X, y)
    for name in SCORERS:
        values = search.cv_results_[f"mean_test_{name}"]
        assert np.all((values >= 0) & (values <= 1))
    best = search.cv_results_["mean_test_tpr_at_fpr_1e-2"].argmax()
    assert search.best_params_ == search.cv_results_["params"][best]
    # a single scorer works too
    single = GridSearchCV(LogisticRegression(), {"C": [1.0]}, scoring=tpr_at_fpr_scorer(1e-3), cv=3).fit(X, y)
    assert 0.0 <= single.best_score_ <= 1.0


def test_scorer_rejects_bad_fpr():
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr_scorer(0)


# --------------------------------------------------------------------------- evaluate_scores


def test_evaluate_scores_matches_sklearn():
    y, s = _scores(1500, 300, seed=2)
    m = evaluate_scores(y, s, threshold=0.6, n_bootstraps=200)
    y_pred = (s >= 0.6).astype(int)
    assert m["n"] == 1500 and m["n_lenses"] == 300 and m["n_nonlenses"] == 1200
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["roc_auc_ci"]["low"] < m["roc_auc"] < m["roc_auc_ci"]["high"]
    assert m["roc_auc_ci"]["confidence"] == 0.95 and m["roc_auc_ci"]["n_bootstraps"] == 200
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    assert m["confusion_matrix"] == confusion_matrix(y, y_pred, labels=[0, 1]).tolist()
    assert m["precision"] == pytest.approx(precision_score(y, y_pred))
    assert m["recall"] == pytest.approx(recall_score(y, y_pred))
    assert m["f1"] == pytest.approx(f1_score(y, y_pred))
    assert m["threshold"] == 0.6
    for key, fpr in (("1e-2", 1e-2), ("1e-3", 1e-3)):
        assert m["tpr_at_fpr"][key]["tpr"] == tpr_at_fpr(y, s, fpr)
        assert m["tpr_at_fpr"][key]["note"] is None
    assert m["notes"] == []


def test_evaluate_scores_is_plain_json():
    y, s = _scores(300, 100)
    m = evaluate_scores(y, np.float32(s), prior=np.float64(0.001), n_bootstraps=50)
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_evaluate_scores_flags_too_few_nonlenses():
    y, s = _scores(400, 300)  # 100 non-lenses: enough for 1e-2, not for 1e-3
    m = evaluate_scores(y, s, n_bootstraps=50)
    assert m["tpr_at_fpr"]["1e-2"]["tpr"] == tpr_at_fpr(y, s, 1e-2)
    assert m["tpr_at_fpr"]["1e-3"]["tpr"] is None
    assert "100 non-lenses" in m["tpr_at_fpr"]["1e-3"]["note"]
    assert len(m["notes"]) == 1 and "1e-3" in m["notes"][0]
    m = evaluate_scores(*_scores(400, 301), n_bootstraps=50)  # 99 non-lenses
    assert m["tpr_at_fpr"]["1e-2"]["tpr"] is None


@pytest.mark.parametrize("prior, recorded", [(None, "balanced (0.5)"), (0.001, 0.001), ("1 in 1000 (survey)", "1 in 1000 (survey)")])
def test_evaluate_scores_records_the_prior_verbatim(prior, recorded):
    y, s = _scores(100, 50)
    assert evaluate_scores(y, s, prior=prior, n_bootstraps=20)["prior"] == recorded


def test_evaluate_scores_rejects_an_unrecordable_prior():
    with pytest.raises(TypeError, match="prior"):
        evaluate_scores([0, 1], [0.2, 0.8], prior=[0.5], n_bootstraps=10)


def test_threshold_rule_matches_lens_classifier_predict():
    # a score equal to the threshold is called a lens (LensClassifier.predict uses >=)
    np.testing.assert_array_equal(predict_from_scores([0.2, 0.5, 0.7], 0.5), [0, 1, 1])
    m = evaluate_scores([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9], threshold=0.5, n_bootstraps=20)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    with pytest.raises(ValueError, match="threshold"):
        predict_from_scores([0.1], float("nan"))


def test_public_names_are_reexported():
    assert lensclf.tpr_at_fpr is tpr_at_fpr
    assert lensclf.roc_auc_ci is roc_auc_ci
    assert lensclf.evaluate_scores is evaluate_scores
    assert lensclf.tpr_at_fpr_scorer is tpr_at_fpr_scorer


# --------------------------------------------------------------------------- Bologna challenge metrics
from lensclf import purity_at_top, tpr_at_n_false_positives  # noqa: E402


def test_tpr0_and_tpr10_on_hand_computed_cases():
    # non-lens scores, highest first: 0.9, 0.6, 0.3, 0.2; lenses: 0.95, 0.9, 0.7, 0.5, 0.1
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    s = [0.9, 0.6, 0.3, 0.2, 0.95, 0.9, 0.7, 0.5, 0.1]
    assert tpr_at_n_false_positives(y, s, 0) == 1 / 5      # only 0.95 beats 0.9; the tie does not count
    assert tpr_at_n_false_positives(y, s, 1) == 3 / 5      # above 0.6: 0.95, 0.9, 0.7
    assert tpr_at_n_false_positives(y, s, 2) == 4 / 5      # above 0.3
    assert tpr_at_n_false_positives(y, s, 4) == 1.0        # no more than 4 non-lenses: all admitted
    y_big = np.r_[np.zeros(20), np.ones(4)]
    s_big = np.r_[np.arange(20) / 20.0, [0.975, 0.5, 0.44, 0.3]]   # non-lenses 0.00, 0.05, ..., 0.95
    assert tpr_at_n_false_positives(y_big, s_big, 0) == 0.25       # above 0.95: 0.975
    assert tpr_at_n_false_positives(y_big, s_big, 10) == 0.5       # above 0.45 (11th highest non-lens): 0.975, 0.5
    with pytest.raises(ValueError, match="n_false_positives"):
        tpr_at_n_false_positives(y, s, -1)


def test_purity_of_the_top_candidates():
    y = [0, 1, 1, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.1, 0.2, 0.75]
    # by score: 0.9 (non-lens), 0.8 (lens), 0.75 (non-lens), 0.7 (lens), 0.2 (lens), 0.1 (non-lens)
    assert purity_at_top(y, s, 1) == 0.0
    assert purity_at_top(y, s, 3) == 1 / 3
    assert purity_at_top(y, s, 4) == 0.5
    assert purity_at_top(y, s, 6) == 0.5
    with pytest.raises(ValueError, match="n_candidates"):
        purity_at_top(y, s, 7)


def test_evaluate_scores_reports_the_challenge_metrics():
    y = np.r_[np.zeros(30), np.ones(10)]
    s = np.r_[np.linspace(0, 0.6, 30), np.linspace(0.5, 1.0, 10)]
    metrics = evaluate_scores(y, s, n_bootstraps=10)
    assert metrics["tpr0"] == tpr_at_n_false_positives(y, s, 0)
    assert metrics["tpr10"] == tpr_at_n_false_positives(y, s, 10)
    assert metrics["purity_at_top"] == {"10": purity_at_top(y, s, 10)}
    assert "TPR0" in lensclf.format_summary(metrics)
