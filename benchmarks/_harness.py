"""Helpers shared by the benchmark scripts: scoring current weights, adding callbacks, library knobs, JSON output."""

import contextlib
import json
import os

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
    """Give a LensClassifier one more skorch callback, after its own (through its ``callbacks`` parameter).

    The instance itself is used by ``fit`` (not a copy), so what it records can be read from it afterwards.
    """
    clf.set_params(callbacks=list(clf.callbacks or []) + [(name, callback)])
    return clf


@contextlib.contextmanager
def override(module, name, value):
    """Set a module-level constant of the library (e.g. ``lensclf._cpu.conv.MAX_TAP_POSITIONS``) for a block."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def emit_json(result, out=None):
    """Print ``result`` as JSON and, if ``out`` is given, write it there too."""
    print(json.dumps(result, indent=2))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
