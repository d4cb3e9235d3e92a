"""Model files: round trips, refusals, atomic writes, damaged or foreign files, warm starts."""

import copy
import json
import os
import pickle

import joblib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import lensclf
from lensclf import LensClassifier, load_model, read_model_metadata, save_model
from lensclf._files import atomic_save_json, atomic_write
from lensclf._modelfile import FORMAT_VERSION
from lensclf._models import LensNet

from conftest import make_ring_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier with string labels, a prior, a threshold and an optimizer class, saved once.

    Returns the classifier, the file and 16 images to predict (few, to keep the tests fast).
    """
    X, y = make_ring_images(60, size=16, lens_fraction=0.4, seed=3)
    labels = np.where(y == 1, "lens", "galaxy")
    clf = LensClassifier(max_epochs=1, batch_size=32, verbose=0, random_state=0,
                         prior=0.2, threshold=0.3, optimizer=torch.optim.AdamW)
    clf.fit(X, labels)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    clf.save(path, metadata={"test_auc": 0.91, "note": "unit test"})
    return clf, str(path), X[:16]


def _fitted_copy(clf, **params):
    """A shallow copy sharing the trained network, with some parameters changed."""
    other = copy.copy(clf)
    other.set_params(**params)
    return other


def _no_temp_files(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")] == []


def test_round_trip_predicts_identically(trained):
    clf, path, X = trained
    loaded = LensClassifier.load(path)
    assert isinstance(loaded, LensClassifier)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # fitted state
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.classes_.dtype == clf.classes_.dtype
    assert loaded.input_shape_ == clf.input_shape_ == (3, 16, 16)
    np.testing.assert_array_equal(loaded.channel_mean_, clf.channel_mean_)
    np.testing.assert_array_equal(loaded.channel_std_, clf.channel_std_)
    assert loaded.channel_mean_.dtype == np.float32
    assert loaded.train_prior_ == clf.train_prior_ and loaded.best_epoch_ == clf.best_epoch_
    assert loaded.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    for name, tensor in clf.net_.module_.state_dict().items():
        assert torch.equal(loaded.net_.module_.state_dict()[name].cpu(), tensor.cpu()), name


def test_parameters_restored(trained):
    clf, path, X = trained
    loaded = load_model(path)
    saved = clf.get_params()
    restored = loaded.get_params()
    assert restored.pop("device") == "auto"
    saved.pop("device")
    assert restored == saved
    assert loaded.optimizer is torch.optim.AdamW
    assert (loaded.tta, loaded.prior, loaded.threshold) == (False, 0.2, 0.3)
    # The restored prediction parameters are in force: changing them changes the output.
    p = loaded.predict_proba(X)[:, 1]
    assert not np.allclose(_fitted_copy(loaded, prior=None).predict_proba(X)[:, 1], p)
    np.testing.assert_array_equal(loaded.predict(X), loaded.classes_[(p >= 0.3).astype(int)])
    # clone gives an unfitted copy with the same parameters
    assert clone(loaded).get_params() == loaded.get_params()


def test_test_time_augmentation_restored(trained, tmp_path):
    clf, _, X = trained
    with_tta = _fitted_copy(clf, tta=True)
    loaded = load_model(with_tta.save(tmp_path / "tta.safetensors"))
    assert loaded.tta is True
    few = X[:4]  # 8 views each: keep it small
    p = loaded.predict_proba(few)
    np.testing.assert_array_equal(p, with_tta.predict_proba(few))
    assert not np.allclose(p, clf.predict_proba(few))  # the 8-view average differs from one view


def test_history_preserved(trained):
    clf, path, _ = trained
    loaded = load_model(path)
    assert type(loaded.history_).__name__ == "History" and loaded.history_ is loaded.net_.history
    assert len(loaded.history_) == len(clf.history_)
    for key in ("epoch", "train_loss", "valid_loss", "train_auc", "valid_auc", "lr", "valid_auc_best"):
        assert loaded.history_[:, key] == pytest.approx(clf.history_[:, key]), key
    assert "batches" not in loaded.history_[0]
    json.dumps(list(loaded.history_), allow_nan=False)  # plain JSON values only
    lensclf.plot_history(loaded.history_)  # usable by the plots


@pytest.mark.parametrize("classes", [
    np.array([-1, 1], dtype=np.int32),
    np.array([False, True]),
    np.array(["non-lens", "lens"], dtype=object),
], ids=["int32", "bool", "object-str"])
def test_class_labels_round_trip(trained, tmp_path, classes):
    clf, _, X = trained
    relabelled = _fitted_copy(clf)
    relabelled.classes_ = classes
    path = relabelled.save(tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.classes_.dtype == classes.dtype
    assert loaded.classes_.tolist() == classes.tolist()
    np.testing.assert_array_equal(loaded.predict(X), relabelled.predict(X))


def test_metadata_readable_without_building_the_network(trained, tmp_path):
    clf, path, _ = trained
    meta = read_model_metadata(path)
    assert meta["format"] == "lensclf-model" and meta["format_version"] == FORMAT_VERSION
    assert meta["lensclf_version"] == lensclf.__version__
    assert meta["extra"] == {"test_auc": 0.91, "note": "unit test"}
    assert meta["params"]["optimizer"] == "torch.optim.AdamW"
    assert meta["params"]["threshold"] == 0.3 and meta["params"]["prior"] == 0.2
    assert meta["fitted"]["classes"] == ["galaxy", "lens"]
    assert meta["fitted"]["input_shape"] == [3, 16, 16]
    assert meta["network"] == {"class": "LensNet", "arch": "resnet18", "stem": "standard",
                               "input_size": None, "in_channels": 3, "scaling": "robust"}  # the lens weights: robust per image
    assert len(meta["history"]) == 1
    # Only the header is read: the same metadata over weights that fit no network still reads,
    # while loading the model fails.
    header_only = tmp_path / "header_only.safetensors"
    save_file({"x": torch.zeros(2)}, str(header_only), metadata=_with_metadata(path))
    assert read_model_metadata(header_only) == meta
    with pytest.raises(ValueError, match="header_only.safetensors"):
        load_model(header_only)


def test_training_data_summary_saved(trained, tmp_path):
    clf, _, _ = trained
    summary = {"folder": "data/train", "n_lenses": np.int64(24), "n_nonlenses": 36}
    path = save_model(clf, tmp_path / "m.safetensors", training_data=summary,
                      extra_metadata={"roc_auc": np.float64(0.93)})
    meta = read_model_metadata(path)
    assert meta["training_data"] == {"folder": "data/train", "n_lenses": 24, "n_nonlenses": 36}
    assert meta["extra"] == {"roc_auc": 0.93}


def test_file_is_small_and_holds_cpu_tensors_only(trained):
    clf, path, _ = trained
    assert os.path.getsize(path) < 50e6  # resnet18: ~45 MB of float32 weights
    tensors = load_file(path)
    assert set(tensors) == set(clf.net_.module_.state_dict())
    assert "channel_mean" in tensors and all(k == "channel_std" or k == "channel_mean" or
                                             k.startswith("backbone.") for k in tensors)


def test_model_whose_file_says_cuda_loads_on_this_machine(trained, tmp_path):
    # A file saved on a GPU machine differs from a CPU one only in its metadata (parameters and the
    # fitted device say "cuda"; safetensors stores no device): such a file loads where there is none.
    clf, _, X = trained
    on_gpu = _fitted_copy(clf, device="cuda")  # as saved from a GPU machine
    path = on_gpu.save(tmp_path / "gpu.safetensors")
    assert read_model_metadata(path)["params"]["device"] == "cuda"
    loaded = load_model(path)
    assert loaded.device == "auto"
    if not torch.cuda.is_available():
        assert loaded.device_ == "cpu"
        assert next(loaded.net_.module_.parameters()).device.type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model(path, device="cuda")
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a torch device"):
        load_model(path, device="gpu please")



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_saves_and_loads_on_cpu(tmp_path):
    X, y = make_ring_images(64, size=32, seed=4)
    on_gpu = LensClassifier(max_epochs=1, batch_size=16, verbose=0, random_state=0, device="cuda").fit(X, y)
    assert next(on_gpu.net_.module_.parameters()).device.type == "cuda"
    path = on_gpu.save(tmp_path / "gpu.safetensors")
    on_cpu = load_model(path, device="cpu")
    assert next(on_cpu.net_.module_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(X), on_gpu.predict_proba(X), rtol=1e-3, atol=1e-4)

def test_unsaveable_parameter_takes_its_default(trained, tmp_path):
    clf, _, X = trained
    seeded = _fitted_copy(clf, random_state=np.random.RandomState(0))
    path = seeded.save(tmp_path / "m.safetensors")
    meta = read_model_metadata(path)
    assert "random_state" in meta["params_not_saved"] and "random_state" not in meta["params"]
    loaded = load_model(path)
    assert loaded.random_state is None
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_network_described_from_the_trained_module(trained, tmp_path):
    clf, _, X = trained
    changed = _fitted_copy(clf, arch="resnet34", stem="small")  # parameters changed after fit
    path = changed.save(tmp_path / "m.safetensors")
    assert read_model_metadata(path)["network"]["arch"] == "resnet18"
    assert read_model_metadata(path)["network"]["stem"] == "standard"
    loaded = load_model(path)
    assert (loaded.arch, loaded.stem) == ("resnet34", "small")  # the parameters, as saved
    np.testing.assert_array_equal(loaded.predict_proba(X[:4]), clf.predict_proba(X[:4]))


def test_refuses_to_overwrite(trained, tmp_path):
    clf, _, _ = trained
    path = tmp_path / "model.safetensors"
    clf.save(path, metadata={"run": 1})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="model.safetensors"):
        clf.save(path, metadata={"run": 2})
    assert path.read_bytes() == before
    clf.save(path, overwrite=True, metadata={"run": 2})
    assert read_model_metadata(path)["extra"] == {"run": 2}
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    with pytest.raises(IsADirectoryError):
        clf.save(tmp_path)
    # missing parent folders are created
    nested = clf.save(tmp_path / "runs" / "a" / "model.safetensors")
    assert os.path.isfile(nested)


def test_failed_save_keeps_the_old_file(trained, tmp_path, monkeypatch):
    clf, _, _ = trained
    path = tmp_path / "model.safetensors"
    clf.save(path, metadata={"run": 1})
    before = path.read_bytes()
    # metadata without a JSON form: refused before anything is written
    with pytest.raises(TypeError, match="extra_metadata"):
        clf.save(path, overwrite=True, metadata={"bad": object()})
    # the disk fails at the last step (os.replace): the old model survives, no temporary file stays
    def failing_replace(src, dst):
        raise OSError("simulated failure while replacing")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        clf.save(path, overwrite=True, metadata={"run": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert load_model(path).classes_.tolist() == ["galaxy", "lens"]


def test_atomic_write_and_json(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(target, "a"):
            pass

    doc = tmp_path / "metrics.json"
    atomic_save_json(doc, {"auc": np.float32(0.5), "counts": np.arange(3), "path": tmp_path})
    assert json.loads(doc.read_text()) == {"auc": 0.5, "counts": [0, 1, 2], "path": str(tmp_path)}
    with pytest.raises(ValueError):
        atomic_save_json(doc, {"auc": float("nan")})
    with pytest.raises(FileExistsError, match="metrics.json"):
        atomic_save_json(doc, {"auc": 0.7}, overwrite=False)
    assert json.loads(doc.read_text())["auc"] == 0.5
    assert _no_temp_files(tmp_path)


def test_damaged_files_are_named(trained, tmp_path):
    _, path, _ = trained
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    for reader in (load_model, read_model_metadata):
        with pytest.raises(ValueError, match="truncated.safetensors.*(corrupt|truncated)"):
            reader(truncated)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.safetensors"):
        load_model(empty)
    # flipped bytes inside the weights: the header is intact, the checksum catches it
    flipped = bytearray(data)
    flipped[-1000:-990] = bytes(b ^ 0xFF for b in flipped[-1000:-990])
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(flipped))
    assert read_model_metadata(damaged)["format"] == "lensclf-model"
    with pytest.raises(ValueError, match="damaged.safetensors.*checksum"):
        load_model(damaged)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(IsADirectoryError):
        load_model(tmp_path)


def _with_metadata(path, **changes):
    """A copy of the model file's metadata with some entries changed or removed (None)."""
    with safe_open(path, framework="pt") as st:
        metadata = dict(st.metadata())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return metadata


def test_foreign_and_future_files(trained, tmp_path):
    _, path, _ = trained
    tensors = load_file(path)

    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata=_with_metadata(path, lensclf_format="someone-elses-model"))
    with pytest.raises(ValueError, match="other.safetensors.*unknown model format 'someone-elses-model'"):
        load_model(other)

    future = tmp_path / "future.safetensors"
    save_file(tensors, str(future), metadata=_with_metadata(path, lensclf_format_version="2"))
    with pytest.raises(ValueError, match=r"future.safetensors.*version 2.*up to version 1.*[Uu]pgrade lensclf"):
        read_model_metadata(future)
    with pytest.raises(ValueError, match="version 2"):
        load_model(future)

    plain = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(plain), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="resnet.safetensors.*not a lensclf model.*weights="):
        load_model(plain)

    garbled = tmp_path / "garbled.safetensors"
    save_file(tensors, str(garbled), metadata=_with_metadata(path, lensclf_metadata="{not json"))
    with pytest.raises(ValueError, match="garbled.safetensors.*corrupt.*JSON"):
        load_model(garbled)


class _Trap:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_loader_never_unpickles(trained, tmp_path):
    clf, _, _ = trained
    marker = str(tmp_path / "pickle_was_executed")
    trap = tmp_path / "trap.safetensors"
    trap.write_bytes(pickle.dumps(_Trap(marker)))
    for reader in (load_model, read_model_metadata):
        with pytest.raises(ValueError, match="trap.safetensors.*not a safetensors file"):
            reader(trap)
    assert not os.path.exists(marker)
    # a joblib pickle of a real classifier, renamed: also refused, by content not by name
    renamed = tmp_path / "joblib_model.safetensors"
    joblib.dump(clf, renamed)
    with pytest.raises(ValueError, match="joblib_model.safetensors"):
        load_model(renamed)


def test_pickle_of_a_loaded_model_still_works(trained):
    _, path, X = trained
    loaded = load_model(path)
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict_proba(X), loaded.predict_proba(X))


def test_save_needs_a_fitted_lens_classifier(tmp_path):
    with pytest.raises(NotFittedError):
        LensClassifier().save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="LensClassifier"):
        save_model(object(), tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_saved_model_warm_starts_a_new_classifier(trained):
    clf, path, _ = trained
    saved = {k: v for k, v in load_file(path).items() if k.startswith("backbone.")}
    # The network a new classifier builds from weights=<saved model> starts from the saved backbone.
    torch.manual_seed(123)
    warm = LensNet(arch="resnet18", weights=path, in_channels=3)
    torch.manual_seed(123)
    cold = LensNet(arch="resnet18", weights=None, in_channels=3)
    warm_state, cold_state = warm.state_dict(), cold.state_dict()
    compared = 0
    for key, value in saved.items():
        if key.startswith("backbone.fc."):
            continue  # the head is always new
        assert torch.equal(warm_state[key], value), key
        compared += 1
    assert compared > 100
    assert not torch.equal(cold_state["backbone.conv1.weight"], saved["backbone.conv1.weight"])
    # ... and a classifier fitted with a vanishing learning rate stays next to the saved weights.
    X, y = make_ring_images(8, size=16, seed=5)
    tuned = LensClassifier(weights=path, lr=1e-9, max_epochs=1, batch_size=32, valid_size=None,
                           augment=False, verbose=0, random_state=1).fit(X, y)
    tuned_conv = tuned.net_.module_.backbone.conv1.weight.detach().cpu()
    torch.testing.assert_close(tuned_conv, saved["backbone.conv1.weight"], rtol=0, atol=1e-6)
