"""Weight averaging (``ema_epochs``): the average is validated and returned, training itself is untouched."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import make_ring_images
from lensclf import LensClassifier

# CPU: fits with the same seed are bit-for-bit repeatable there.
TINY = dict(batch_size=16, augment=True, balance="sampler", random_state=5, verbose=0, device="cpu", max_epochs=3)


@pytest.fixture(scope="module")
def tiny_data():
    return make_ring_images(80, size=16, seed=3)


@pytest.fixture(scope="module")
def fits(tiny_data, tmp_path_factory):
    """The same fit without and with averaging, each with its checkpoint (the trained weights of the last epoch)."""
    X, y = tiny_data
    plain = LensClassifier(checkpoint_dir=tmp_path_factory.mktemp("plain"), **TINY).fit(X, y)
    averaged = LensClassifier(ema_epochs=1, checkpoint_dir=tmp_path_factory.mktemp("ema"), **TINY).fit(X, y)
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
    # the returned model is the one validated at the best epoch: its validation AUC is the history's
    valid_idx = checkpoint(averaged)["valid_idx"].numpy()
    auc = roc_auc_score(y[valid_idx], averaged.decision_function(X[valid_idx]))
    assert auc == pytest.approx(averaged.history_[averaged.best_epoch_ - 1, "valid_auc"], abs=1e-9)
    returned = averaged.net_.module_.state_dict()
    assert not all(torch.equal(returned[name], live_averaged[name]) for name in returned)


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
    LensClassifier(ema_epochs=1, checkpoint_dir=tmp_path, **{**TINY, "max_epochs": 1}).fit(X, y)
    resumed = LensClassifier(ema_epochs=1, checkpoint_dir=tmp_path, **TINY).fit(X, y, resume=True)
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


@pytest.mark.parametrize("bad", [0, -1.0, "1"])
def test_bad_ema_epochs_are_refused(tiny_data, bad):
    X, y = tiny_data
    with pytest.raises(ValueError, match="ema_epochs"):
        LensClassifier(ema_epochs=bad, **TINY).fit(X, y)
