"""Grid search: choose the learning rate and weight decay with GridSearchCV.

Usage::

    python examples/grid_search.py

Scores every setting with two metrics: the ROC AUC and the fraction of lenses
found while calling only 1 % of the non-lenses a lens (``tpr_at_fpr``), the
number that matters when lenses are rare in a survey. About ten minutes on a
laptop CPU; ``LENSCLF_EXAMPLE_FAST=1`` runs a tiny smoke version.
"""

import os

from sklearn.model_selection import GridSearchCV, StratifiedKFold

from lensclf import LensClassifier, make_lenses, tpr_at_fpr, tpr_at_fpr_scorer

FAST = os.environ.get("LENSCLF_EXAMPLE_FAST") == "1"
N_TRAIN, N_TEST, EPOCHS, FOLDS = ((16, 32), (8, 16), 1, 2) if FAST else ((300, 900), (200, 600), 2, 3)

X, y = make_lenses(*N_TRAIN, random_state=0)
X_test, y_test = make_lenses(*N_TEST, random_state=1)

# Every combination of these values is trained FOLDS times (the smoke run tries fewer).
param_grid = {"lr": [1e-3] if FAST else [1e-3, 3e-4], "weight_decay": [0.0, 1e-4]}

# Two metrics: sklearn's "roc_auc", and lensclf's scorer for the true-positive
# rate at a false-positive rate of 1 % (each validation fold needs at least
# 100 non-lenses for that number to mean much). refit="roc_auc" retrains the
# best setting by AUC on all the data at the end.
scoring = {"roc_auc": "roc_auc", "tpr_at_fpr_1%": tpr_at_fpr_scorer(1e-2)}
search = GridSearchCV(
    LensClassifier(max_epochs=EPOCHS, random_state=0, verbose=0),
    param_grid,
    scoring=scoring,
    refit="roc_auc",
    cv=StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0),
)
search.fit(X, y)

# cv_results_ holds one entry per setting; print it as a small table.
results = search.cv_results_
print("       lr  weight_decay   ROC AUC   TPR at FPR 1%")
for params, auc, tpr in zip(results["params"], results["mean_test_roc_auc"], results["mean_test_tpr_at_fpr_1%"]):
    print(f"{params['lr']:9.0e}  {params['weight_decay']:12.0e}   {auc:7.3f}   {tpr:13.3f}")
print(f"best setting: {search.best_params_} (cross-validated ROC AUC {search.best_score_:.3f})")

# The refitted best model, on data it has never seen.
scores = search.predict_proba(X_test)[:, 1]
print(f"held-out TPR at FPR 1%: {tpr_at_fpr(y_test, scores, fpr=1e-2):.3f}")
