"""``cpu_fast_paths``: the same function with the switch on and off, grid-searchable, and absent from saved models."""

import copy
import io
import pickle
import pickletools

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from torchvision.models.resnet import ResNet

from lensclf import LensClassifier, read_model_metadata

from conftest import make_ring_images

FAST = dict(max_epochs=1, batch_size=16, verbose=0, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def data():
    X, y = make_ring_images(64, size=32, seed=9)
    X_test, _ = make_ring_images(24, size=32, seed=10)
    return X, y, X_test


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _ = data
    return LensClassifier(**FAST).fit(X, y)  # cpu_fast_paths=True is the default


def _backbone_calls(clf):
    """A counter of calls of the backbone's own forward (torchvision's), which the fast path does not make."""
    calls = []
    handle = clf.net_.module_.backbone.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def _with_fast_paths(clf, on):
    """A copy of the fitted model with the switch set (prediction applies it to the network)."""
    other = copy.deepcopy(clf)
    other.set_params(cpu_fast_paths=on)
    other.net_.module_.fast_paths = on  # (for the tests that call the module directly)
    return other


@pytest.mark.parametrize("tta", [False, True])
def test_same_predictions_with_the_switch_on_and_off_for_the_same_weights(fitted, data, tta):
    _, _, X_test = data
    fast, plain = _with_fast_paths(fitted, True), _with_fast_paths(fitted, False)
    fast.set_params(tta=tta)
    plain.set_params(tta=tta)
    fast_calls, h1 = _backbone_calls(fast)
    plain_calls, h2 = _backbone_calls(plain)
    try:
        p_fast, p_plain = fast.predict_proba(X_test), plain.predict_proba(X_test)
    finally:
        h1.remove()
        h2.remove()
    # The two really are different computations: only the plain one goes through torchvision's forward.
    assert not fast_calls and plain_calls
    np.testing.assert_allclose(p_fast, p_plain, rtol=1e-5, atol=1e-6)


def test_same_loss_and_gradients_in_training_mode(fitted, data):
    X, y, _ = data
    x, target = torch.from_numpy(X[:16]), torch.from_numpy(y[:16].astype(np.float32))
    results = []
    for on in (True, False):
        module = _with_fast_paths(fitted, on).net_.module_.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(x), target)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    (loss_fast, grads_fast), (loss_plain, grads_plain) = results
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    assert grads_fast.keys() == grads_plain.keys()
    for name in grads_fast:
        torch.testing.assert_close(grads_fast[name], grads_plain[name], rtol=1e-3, atol=1e-5, msg=name)


def test_the_switch_reaches_the_network_and_a_loaded_model(fitted, data, tmp_path):
    X, y, X_test = data
    assert fitted.net_.module_.fast_paths is True
    plain = LensClassifier(**{**FAST, "cpu_fast_paths": False}).fit(X, y)
    assert plain.net_.module_.fast_paths is False
    # Both settings start from the same initial weights and train to nearly the same network.
    np.testing.assert_allclose(plain.predict_proba(X_test), fitted.predict_proba(X_test), atol=2e-2)
    # A saved model keeps its setting; the same weights predict alike either way.
    fitted.save(tmp_path / "fast.safetensors")
    loaded = LensClassifier.load(tmp_path / "fast.safetensors", device="cpu")
    assert loaded.cpu_fast_paths is True and loaded.net_.module_.fast_paths is True
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))
    np.testing.assert_allclose(_with_fast_paths(loaded, False).predict_proba(X_test), fitted.predict_proba(X_test),
                               rtol=1e-5, atol=1e-6)
    plain.save(tmp_path / "plain.safetensors")
    assert LensClassifier.load(tmp_path / "plain.safetensors", device="cpu").net_.module_.fast_paths is False


def test_grid_search_over_the_switch(data):
    X, y, _ = data
    grid = {"cpu_fast_paths": [True, False]}
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(LensClassifier(**FAST), grid, scoring="roc_auc", cv=cv, n_jobs=1).fit(X, y)
    assert [p["cpu_fast_paths"] for p in search.cv_results_["params"]] == [True, False]
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    # The same fits up to float rounding: the scores agree closely.
    assert abs(scores[0] - scores[1]) < 0.1
    best = search.best_estimator_
    assert best.cpu_fast_paths == search.best_params_["cpu_fast_paths"]
    assert best.net_.module_.fast_paths is bool(search.best_params_["cpu_fast_paths"])


@pytest.mark.parametrize("value", ["yes", 2, None])
def test_other_values_of_the_switch_are_refused(data, value):
    X, y, _ = data
    with pytest.raises(ValueError, match="cpu_fast_paths"):
        LensClassifier(**{**FAST, "cpu_fast_paths": value}).fit(X, y)


def _pickled_globals(data):
    """The ``module.name`` of every class or function a pickle refers to."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
    return found


def test_a_pickled_or_saved_model_holds_a_plain_torchvision_resnet(fitted, tmp_path):
    backbone = fitted.net_.module_.backbone
    assert type(backbone) is ResNet
    convolutions = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(type(m) is torch.nn.Conv2d for m in convolutions)
    buffer = io.BytesIO()
    pickle.dump(fitted, buffer)
    data = buffer.getvalue()
    # skorch pickles the module with torch.save (an uncompressed zip of a pickle), nested in the outer pickle:
    # its class names are in the bytes.
    assert b"torchvision.models.resnet" in data and b"lensclf._models" in data
    assert b"lensclf._cpu" not in data and b"lensclf._conv" not in data and b"TapConv" not in data
    assert not [name for name in _pickled_globals(data) if "_cpu" in name or "Tap" in name]
    restored = pickle.loads(data)
    assert type(restored.net_.module_.backbone) is ResNet
    path = fitted.save(tmp_path / "model.safetensors")
    metadata = str(read_model_metadata(path))
    assert "_cpu" not in metadata and "Tap" not in metadata
