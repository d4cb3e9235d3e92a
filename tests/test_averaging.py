"""Weight averaging (``ema_epochs``): the average is validated and returned, training itself is untouched."""

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import InterruptInEpoch, make_ring_images
from lensclf import LensClassifier
from lensclf._checkpoint import training_params

# CPU: fits with the same seed are bit-for-bit repeatable there. The cosine schedule does not depend on what is
# validated (a plateau schedule follows the validated average's loss, so its cuts may come at other epochs).
TINY = dict(batch_size=16, augment=True, balance="sampler", random_state=5, verbose=0, device="cpu", max_epochs=3,
            lr_schedule="cosine")


@pytest.fixture(scope="module")
def tiny_data():
    return make_ring_images(80, size=16, seed=3)


@pytest.fixture(scope="module")
def fits(tiny_data, tmp_path_factory):
    """The same fit without and with averaging, each with its checkpoint (the trained weights of the last epoch)."""
    X, y = tiny_data
    plain = LensClassifier(ema_epochs=None, keep="best", checkpoint_dir=tmp_path_factory.mktemp("plain"), **TINY
                           ).fit(X, y)
    averaged = LensClassifier(ema_epochs=1, keep="best", checkpoint_dir=tmp_path_factory.mktemp("ema"), **TINY
                              ).fit(X, y)
    return plain, averaged


def checkpoint(clf):
    return torch.load(clf.checkpoint_path_, weights_only=True)


def test_averaging_leaves_training_alone_but_validates_and_returns_the_average(tiny_data, fits):
    X, y = tiny_data
    plain, averaged = fits
    # the trained weights follow the same path: same training losses, same last-epoch weights
    assert averaged.history_[:, "train_loss"] == plain.history_[:, "train_loss"]
    live_plain, live_averaged = checkpoint(plain)["module"], checkpoint(averaged)["module"]
    assert all(torch.equal(live_plain[name], live_averaged[name]) for name in live_plain)
    # ... but what was validated differs (the average of the weights, not the weights)
    assert averaged.history_[:, "valid_loss"] != plain.history_[:, "valid_loss"]
    # the returned model is the average validated at the best epoch (early stopping's best weights) ...
    state = checkpoint(averaged)
    returned = averaged.net_.module_.state_dict()
    best = state["early_stopping"]["best_model_weights"]
    assert all(torch.equal(returned[name], best[name]) for name in returned)
    assert not all(torch.equal(returned[name], live_averaged[name]) for name in returned)
    # ... and its validation loss and AUC are the history's
    loss, auc = validation_scores(averaged, X, y)
    assert loss == pytest.approx(averaged.history_[averaged.best_epoch_ - 1, "valid_loss"], rel=1e-4)
    assert auc == pytest.approx(averaged.history_[averaged.best_epoch_ - 1, "valid_auc"], abs=1e-9)


def validation_scores(clf, X, y):
    """Validation loss and AUC of the model ``fit`` returned, on the split its checkpoint recorded."""
    valid_idx = checkpoint(clf)["valid_idx"].numpy()
    logits = clf.decision_function(X[valid_idx])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logits), torch.as_tensor(y[valid_idx], dtype=torch.float64)).item()
    return loss, roc_auc_score(y[valid_idx], logits)


@pytest.mark.parametrize("ema_epochs", [1, None])
def test_keep_last_returns_the_last_validated_weights(tiny_data, tmp_path, ema_epochs):
    X, y = tiny_data
    clf = LensClassifier(ema_epochs=ema_epochs, keep="last", checkpoint_dir=tmp_path, **{**TINY, "max_epochs": 4}
                         ).fit(X, y)
    assert clf.best_epoch_ == 4
    loss, _ = validation_scores(clf, X, y)
    assert loss == pytest.approx(clf.history_[-1, "valid_loss"], rel=1e-4)
    live = checkpoint(clf)["module"]
    returned = clf.net_.module_.state_dict()
    assert all(torch.equal(returned[name], live[name]) for name in returned) == (ema_epochs is None)


@pytest.mark.parametrize("valid_size", [0.2, None])
def test_interrupted_averaged_fit_keeps_an_average_never_the_trained_weights(tiny_data, tmp_path, valid_size):
    X, y = tiny_data
    clf = LensClassifier(ema_epochs=1, keep="best", valid_size=valid_size, checkpoint_dir=tmp_path,
                         callbacks=[InterruptInEpoch(3)], **{**TINY, "max_epochs": 5}).fit(X, y)
    assert len(clf.history_) == 2  # the cut epoch is dropped
    state = checkpoint(clf)  # written after epoch 2
    returned = clf.net_.module_.state_dict()
    assert not all(torch.equal(returned[name], state["module"][name]) for name in returned)
    if valid_size is not None:  # the best validated average of the completed epochs
        best = state["early_stopping"]["best_model_weights"]
        assert all(torch.equal(returned[name], best[name]) for name in returned)


def test_interrupted_fit_with_keep_last_keeps_the_last_completed_epoch(tiny_data, tmp_path):
    X, y = tiny_data
    clf = LensClassifier(ema_epochs=1, keep="last", checkpoint_dir=tmp_path, callbacks=[InterruptInEpoch(3)],
                         **{**TINY, "max_epochs": 5}).fit(X, y)
    assert len(clf.history_) == 2 and clf.best_epoch_ == 2
    loss, _ = validation_scores(clf, X, y)
    assert loss == pytest.approx(clf.history_[1, "valid_loss"], rel=1e-4)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_early_stopping_stops_on_the_average_and_keeps_its_best_or_last(tiny_data, tmp_path, keep):
    X, y = tiny_data
    clf = LensClassifier(ema_epochs=1, early_stopping=1, keep=keep, checkpoint_dir=tmp_path,
                         **{**TINY, "max_epochs": 8, "lr": 0.05}).fit(X, y)
    valid_auc = clf.history_[:, "valid_auc"]
    assert len(valid_auc) < 8 and valid_auc[-1] <= max(valid_auc[:-1])  # stopped when the AUC did not rise
    assert clf.best_epoch_ == (1 + int(np.argmax(valid_auc)) if keep == "best" else len(valid_auc))
    loss, _ = validation_scores(clf, X, y)  # the returned model is the average validated at that epoch
    assert loss == pytest.approx(clf.history_[clf.best_epoch_ - 1, "valid_loss"], rel=1e-4)
    live = checkpoint(clf)["module"]  # (written after the epoch before the stop)
    returned = clf.net_.module_.state_dict()
    assert not all(torch.equal(returned[name], live[name]) for name in returned)


def test_defaults_average_over_one_epoch_and_keep_the_last():
    assert (LensClassifier().ema_epochs, LensClassifier().keep) == (1.0, "last")


def test_checkpoints_written_before_weight_averaging_keep_their_key():
    params = json.loads(training_params(LensClassifier(ema_epochs=None, keep="best")))
    assert "ema_epochs" not in params and "keep" not in params
    params = json.loads(training_params(LensClassifier(ema_epochs=2, keep="last")))
    assert params["ema_epochs"] == 2 and params["keep"] == "last"


def test_without_a_validation_split_the_average_after_the_last_epoch_is_returned(tiny_data, tmp_path):
    X, y = tiny_data
    clf = LensClassifier(ema_epochs=0.5, valid_size=None, checkpoint_dir=tmp_path, **TINY).fit(X, y)
    state = checkpoint(clf)
    average = {name[len("module."):]: t for name, t in state["weight_average"].items() if name.startswith("module.")}
    returned = clf.net_.module_.state_dict()
    assert returned.keys() == average.keys()
    assert all(torch.equal(returned[name], average[name]) for name in returned)
    assert not all(torch.equal(returned[name], state["module"][name]) for name in returned)
    # batches of 16 from 80 images: 5 steps per epoch, all averaged
    assert int(state["weight_average"]["n_averaged"]) == 3 * 5


def test_averaged_fit_resumes_to_the_same_model(tiny_data, fits, tmp_path):
    X, y = tiny_data
    _, full = fits
    # interrupted in epoch 2 (the checkpoint holds epoch 1), then resumed
    LensClassifier(ema_epochs=1, keep="best", checkpoint_dir=tmp_path, callbacks=[InterruptInEpoch(2)], **TINY
                   ).fit(X, y)
    resumed = LensClassifier(ema_epochs=1, keep="best", checkpoint_dir=tmp_path, **TINY).fit(X, y, resume=True)
    for key in ("train_loss", "valid_loss", "valid_auc"):
        assert resumed.history_[:, key] == full.history_[:, key], key
    a, b = full.net_.module_.state_dict(), resumed.net_.module_.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    np.testing.assert_array_equal(resumed.predict_proba(X), full.predict_proba(X))


def test_fitted_model_keeps_no_average_and_round_trips(tiny_data, fits, tmp_path):
    X, _ = tiny_data
    _, averaged = fits
    callback = dict(averaged.net_.callbacks_)["weight_averaging"]
    assert callback.average_ is None and callback.live_ is None
    clone = pickle.loads(pickle.dumps(averaged))
    np.testing.assert_array_equal(clone.predict_proba(X), averaged.predict_proba(X))
    loaded = LensClassifier.load(averaged.save(tmp_path / "model.safetensors"), device="cpu")
    assert loaded.ema_epochs == 1
    np.testing.assert_array_equal(loaded.predict_proba(X), averaged.predict_proba(X))


@pytest.mark.parametrize("name, bad", [("ema_epochs", 0), ("ema_epochs", -1.0), ("ema_epochs", "1"),
                                       ("keep", "first"), ("keep", None)])
def test_bad_ema_epochs_or_keep_are_refused(tiny_data, name, bad):
    X, y = tiny_data
    with pytest.raises(ValueError, match=name):
        LensClassifier(**{**TINY, name: bad}).fit(X, y)
