"""Quickstart: simulate lenses, train a classifier, measure its ROC AUC.

Usage::

    python examples/quickstart.py

About two to five minutes on a laptop CPU (faster with a GPU). Set the
environment variable ``LENSCLF_EXAMPLE_FAST=1`` for a seconds-long smoke run
(tiny data, one epoch: the AUC then means nothing).
"""

import os

from sklearn.metrics import roc_auc_score

from lensclf import LensClassifier, make_lenses, roc_auc_ci

FAST = os.environ.get("LENSCLF_EXAMPLE_FAST") == "1"
# (lenses, non-lenses) for training and testing, and the number of passes over the data.
N_TRAIN, N_TEST, EPOCHS = ((16, 32), (8, 16), 1) if FAST else ((400, 1200), (200, 600), 3)

# 1. Data. make_lenses simulates HSC-like g, r, i cutouts: X has shape
#    (n, 3, 64, 64), float32, each band scaled to [0, 1]; y is 1 for a lens and
#    0 for a non-lens. Different seeds give different objects, so the test set
#    is independent of the training set.
X_train, y_train = make_lenses(*N_TRAIN, random_state=0)
X_test, y_test = make_lenses(*N_TEST, random_state=1)
print(f"training set: {len(y_train)} cutouts of shape {X_train.shape[1:]}, {y_train.sum()} lenses")

# 2. Model. LensClassifier is a scikit-learn estimator around a ResNet-18.
#    By default it balances the classes with a weighted sampler, augments the
#    training images with flips and rotations, and keeps the weights of the
#    epoch with the best AUC on a 20 % validation split. verbose=1 prints a
#    progress bar and a table per epoch.
clf = LensClassifier(max_epochs=EPOCHS, random_state=0)
clf.fit(X_train, y_train)
print(f"kept epoch: {clf.best_epoch_}")

# 3. Scores. Column 1 of predict_proba is the lens probability.
scores = clf.predict_proba(X_test)[:, 1]

# 4. Evaluation. The ROC AUC does not depend on a threshold; roc_auc_ci adds a
#    95 % bootstrap interval, which tells how much the number could move with
#    another test set of the same size.
auc = roc_auc_score(y_test, scores)
_, low, high = roc_auc_ci(y_test, scores)
print(f"test ROC AUC: {auc:.3f} (95% CI {low:.3f} - {high:.3f})")
