"""The ``callbacks`` parameter: the user's skorch callbacks run after lensclf's own, and survive clone/get_params."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import average_precision_score
from skorch.callbacks import Callback, EpochScoring

from lensclf import LensClassifier

from conftest import make_ring_images

FAST = dict(max_epochs=1, batch_size=16, verbose=0, random_state=0, device="cpu")


class EpochRecorder(Callback):
    """Records, at the end of every epoch, its number and the history columns already filled in."""

    def __init__(self, tag="recorder"):
        self.tag = tag

    def initialize(self):
        self.epochs_ = []
        self.columns_ = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs_.append(len(net.history))
        self.columns_.append(set(net.history[-1]))


@pytest.fixture(scope="module")
def data():
    return make_ring_images(64, size=16, seed=4)


def _user_callback(clf, kind):
    found = [cb for _, cb in clf.net_.callbacks_ if isinstance(cb, kind)]
    assert len(found) == 1
    return found[0]


def test_an_instance_records_every_epoch_after_lensclfs_own_callbacks(data):
    X, y = data
    recorder = EpochRecorder()
    clf = LensClassifier(callbacks=[recorder], **{**FAST, "max_epochs": 2}).fit(X, y)
    seen = _user_callback(clf, EpochRecorder)
    assert seen.epochs_ == [1, 2]
    # It runs after lensclf's scoring callbacks: their columns are there when it looks.
    for columns in seen.columns_:
        assert {"train_loss", "train_auc", "valid_loss", "valid_auc"} <= columns
    names = [name for name, _ in clf.net_.callbacks_]
    assert names.index("valid_auc") < names.index(next(n for n, cb in clf.net_.callbacks_ if cb is seen))


def test_a_named_epoch_scoring_adds_a_history_column(data):
    X, y = data
    scoring = EpochScoring("average_precision", lower_is_better=False, name="valid_ap")
    clf = LensClassifier(callbacks=[("valid_ap", scoring)], **FAST).fit(X, y)
    assert "valid_ap" in dict(clf.net_.callbacks_)
    # The column is the validation score of the epoch's network (one epoch: the weights kept).
    _, valid_idx = clf._split(np.asarray(y), 0)
    expected = average_precision_score(y[valid_idx], clf.predict_proba(X[valid_idx])[:, 1])
    assert clf.history_[-1, "valid_ap"] == pytest.approx(expected, abs=1e-6)


def test_both_forms_together_keep_their_order_and_names(data):
    X, y = data
    callbacks = [EpochRecorder(), ("valid_ap", EpochScoring("average_precision", lower_is_better=False,
                                                            name="valid_ap"))]
    clf = LensClassifier(callbacks=callbacks, **FAST).fit(X, y)
    names = [name for name, _ in clf.net_.callbacks_]
    recorder_name = next(n for n, cb in clf.net_.callbacks_ if isinstance(cb, EpochRecorder))
    assert names.index(recorder_name) < names.index("valid_ap")
    assert "valid_ap" in clf.history_[-1]
    assert _user_callback(clf, EpochRecorder).epochs_ == [1]


def test_clone_and_get_params_keep_the_callbacks(data):
    X, y = data
    recorder = EpochRecorder(tag="mine")
    scoring = EpochScoring("average_precision", lower_is_better=False, name="valid_ap")
    clf = LensClassifier(callbacks=[recorder, ("valid_ap", scoring)], **FAST)
    params = clf.get_params()
    assert params["callbacks"] is clf.callbacks
    assert params["callbacks"][0] is recorder and params["callbacks"][1] == ("valid_ap", scoring)
    cloned = clone(clf)
    kept = cloned.get_params()["callbacks"]
    assert len(kept) == 2
    assert isinstance(kept[0], EpochRecorder) and kept[0].tag == "mine"
    assert kept[1][0] == "valid_ap" and isinstance(kept[1][1], EpochScoring) and kept[1][1].name == "valid_ap"
    assert kept[1][1].scoring == "average_precision"
    # The clone trains with them.
    cloned.fit(X, y)
    assert _user_callback(cloned, EpochRecorder).epochs_ == [1]
    assert "valid_ap" in cloned.history_[-1]
    # set_params replaces them; None means lensclf's own only.
    cloned.set_params(callbacks=None).fit(X, y)
    assert not any(isinstance(cb, EpochRecorder) for _, cb in cloned.net_.callbacks_)
    assert "valid_ap" not in cloned.history_[-1]


def test_callbacks_must_be_a_list(data):
    X, y = data
    with pytest.raises(ValueError, match="callbacks"):
        LensClassifier(callbacks=EpochRecorder(), **FAST).fit(X, y)
