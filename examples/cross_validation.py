"""Cross-validation: how stable is the ROC AUC of a LensClassifier?

Usage::

    python examples/cross_validation.py

A single train/test split gives one number; k-fold cross-validation trains k
models on different parts of the data and shows the spread. About five
minutes on a laptop CPU; ``LENSCLF_EXAMPLE_FAST=1`` runs a tiny smoke version.
"""

import os

from sklearn.model_selection import StratifiedKFold, cross_val_score

from lensclf import LensClassifier, make_lenses

FAST = os.environ.get("LENSCLF_EXAMPLE_FAST") == "1"
N_LENSES, N_NONLENSES, EPOCHS, FOLDS = (16, 32, 1, 2) if FAST else (300, 900, 2, 3)

# Simulated cutouts, one lens for three non-lenses.
X, y = make_lenses(N_LENSES, N_NONLENSES, random_state=0)

# StratifiedKFold keeps the lens fraction equal in every fold, which matters
# when lenses are the rare class. Shuffling with a seed makes the folds
# reproducible.
cv = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)

# LensClassifier is a regular scikit-learn estimator: cross_val_score clones it
# for every fold, fits the clone on the other folds and scores it on this one.
# scoring="roc_auc" uses predict_proba(X)[:, 1], the lens probability.
# verbose=0 keeps the output to the summary below.
clf = LensClassifier(max_epochs=EPOCHS, random_state=0, verbose=0)
aucs = cross_val_score(clf, X, y, cv=cv, scoring="roc_auc")

for fold, auc in enumerate(aucs, start=1):
    print(f"fold {fold}: ROC AUC {auc:.3f}")
print(f"ROC AUC over {FOLDS} folds: mean {aucs.mean():.3f}, standard deviation {aucs.std(ddof=1):.3f}")
