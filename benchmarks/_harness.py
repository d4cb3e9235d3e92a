"""Helpers shared by the benchmark scripts: scoring current weights, hooking callbacks, library knobs."""

import contextlib

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def current_auc(module, X, y, batch_size=256):
    """Test AUC of a network's current weights (evaluation mode; training mode restored after)."""
    was_training = module.training
    module.eval()
    logits = []
    with torch.inference_mode():
        for s in range(0, len(X), batch_size):
            logits.append(module(torch.from_numpy(X[s:s + batch_size])).reshape(-1).numpy())
    module.train(was_training)
    return float(roc_auc_score(y, np.concatenate(logits)))


def add_callback(clf, name, callback):
    """Give a LensClassifier's skorch net one more callback (after its own)."""
    original = clf._callbacks
    clf._callbacks = lambda has_valid, checkpoint=None: original(has_valid, checkpoint) + [(name, callback)]
    return clf


@contextlib.contextmanager
def override(module, name, value):
    """Set a module-level setting of the library (e.g. ``_conv.MAX_TAP_POSITIONS``) for a block."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)
