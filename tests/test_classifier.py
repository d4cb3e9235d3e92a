"""LensClassifier: learning, balance, validation, restore-best, reproducibility, persistence."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from lensclf import LensClassifier
from lensclf._net import _fused_supported, build_training_net
from lensclf._pixels import scan_images as _scan_images
from lensclf._dataset import LensDataset, batch_as_is
from lensclf._sampling import balanced_sampler
from lensclf._transforms import BatchAugmenter, dihedral, dihedral_views
from lensclf._validation import seed_from

from conftest import make_ring_images

FAST = dict(max_epochs=1, batch_size=32, verbose=0, random_state=0)


def test_learning_happens(fitted_ring_model, ring_data):
    _, _, X_test, y_test = ring_data
    proba = fitted_ring_model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.9


def test_fitted_attributes(fitted_ring_model, ring_data):
    X, y, _, _ = ring_data
    clf = fitted_ring_model
    assert list(clf.classes_) == [0, 1]
    assert clf.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    assert clf.input_shape_ == (3, 32, 32)
    assert clf.train_prior_ == 0.5
    assert len(clf.history_) == 4
    for key in ("train_loss", "train_auc", "valid_loss", "valid_auc", "lr"):
        assert all(np.isfinite(clf.history_[:, key]))
    assert "valid_acc" not in clf.history_[-1]
    assert clf.best_epoch_ == 4  # keep="last"
    # Statistics come from the training part only (80 % of X), not from all of X.
    assert clf.channel_mean_.shape == (3,)
    assert not np.allclose(clf.channel_mean_, X.mean(axis=(0, 2, 3)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(clf.channel_mean_, X.mean(axis=(0, 2, 3)), atol=0.02)


def test_named_optimizers_use_the_fused_step_where_torch_has_it(fitted_ring_model):
    optimizer = fitted_ring_model.net_.optimizer_
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["weight_decay"] == fitted_ring_model.weight_decay
    # torch >= 2.4 has fused Adam on CPU; with it, the fit must use it.
    supported = _fused_supported(torch.optim.Adam, "cpu")
    assert supported == (tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
    assert bool(optimizer.defaults.get("fused")) == supported


def test_predict_uses_threshold(fitted_ring_model, ring_data):
    _, _, X_test, _ = ring_data
    p = fitted_ring_model.predict_proba(X_test)[:, 1]
    for threshold in (0.1, 0.5, 0.9):
        clf = clone(fitted_ring_model)
        clf.__dict__.update({k: v for k, v in fitted_ring_model.__dict__.items() if k.endswith("_")})
        clf.set_params(threshold=threshold)
        np.testing.assert_array_equal(clf.predict(X_test), (p >= threshold).astype(int))


def test_prior_shifts_probabilities_not_ranking(fitted_ring_model, ring_data):
    _, _, X_test, y_test = ring_data
    clf = fitted_ring_model
    p_balanced = clf.predict_proba(X_test)[:, 1]
    try:
        clf.set_params(prior=0.01)
        p_rare = clf.predict_proba(X_test)[:, 1]
    finally:
        clf.set_params(prior=None)
    assert np.all(p_rare <= p_balanced + 1e-12)
    # Bayes' rule: odds scale by prior odds / training odds.
    odds = p_balanced / (1 - p_balanced) * (0.01 / 0.99)
    np.testing.assert_allclose(p_rare, odds / (1 + odds), rtol=1e-6)
    assert roc_auc_score(y_test, p_rare) == pytest.approx(roc_auc_score(y_test, p_balanced))


def test_tta_is_exactly_invariant_to_flips_and_rotations(fitted_ring_model, ring_data):
    _, _, X_test, _ = ring_data
    X = X_test[:16]
    clf = clone(fitted_ring_model)
    clf.__dict__.update({k: v for k, v in fitted_ring_model.__dict__.items() if k.endswith("_")})
    plain = clf.predict_proba(X)[:, 1]
    turned = clf.predict_proba(np.ascontiguousarray(np.rot90(X, 1, axes=(2, 3))))[:, 1]
    assert not np.allclose(plain, turned, atol=1e-6)  # the network alone is not invariant
    clf.set_params(tta=True)
    tta = clf.predict_proba(X)[:, 1]
    for k, flip in dihedral_views():
        view = dihedral(torch.from_numpy(X), k, flip).numpy()
        np.testing.assert_allclose(clf.predict_proba(view)[:, 1], tta, atol=1e-5)


def test_balanced_sampler_draws_half_lenses():
    y = np.r_[np.ones(50), np.zeros(950)].astype(int)
    sampler = balanced_sampler(y, seed=0)
    drawn = y[np.fromiter(iter(sampler), dtype=int)]
    assert len(drawn) == len(y)
    assert 0.45 < drawn.mean() < 0.55


def test_training_batches_are_balanced_within_a_fit():
    X, y = make_ring_images(600, size=16, lens_fraction=0.05, seed=3)
    clf = LensClassifier(**FAST)
    clf._check_params()
    clf.channel_mean_, clf.channel_std_, clf.device_ = np.zeros(3), np.ones(3), "cpu"
    train_idx, valid_idx = clf._split(y, 0)
    net, train_set = build_training_net(clf, X, y, train_idx, valid_idx, 0)
    net.initialize()
    labels = torch.cat([yb for _, yb in net.get_iterator(train_set, training=True)])
    assert y[train_idx].mean() < 0.1
    assert 0.4 < labels.float().mean().item() < 0.6


def test_pos_weight_and_no_balance(ring_data):
    X, y, _, _ = ring_data
    clf = LensClassifier(balance="pos_weight", **FAST).fit(X, y)
    pos_weight = clf.net_.criterion_.pos_weight.item()
    train_idx, _ = clf._split(y, 0)
    y_train = y[train_idx]
    assert pos_weight == pytest.approx((y_train == 0).sum() / (y_train == 1).sum())
    assert clf.train_prior_ == 0.5
    clf = LensClassifier(balance=None, **FAST).fit(X, y)
    assert clf.net_.criterion_.pos_weight is None
    assert clf.train_prior_ == pytest.approx(y_train.mean())


def test_augmentation_changes_training_batches_only(ring_data):
    X, y, _, _ = ring_data
    batch = (torch.from_numpy(X[:64].copy()), torch.from_numpy(y[:64].astype(np.float32)))
    augmented, labels = BatchAugmenter(seed=0)(batch)
    assert torch.equal(labels, batch[1])
    assert not torch.equal(augmented, batch[0])
    assert torch.equal(batch_as_is(batch)[0], torch.from_numpy(X[:64]))
    # The validation loss recorded during training is the loss on un-augmented images.
    clf = LensClassifier(max_epochs=1, batch_size=32, verbose=0, random_state=0, augment=True).fit(X, y)
    _, valid_idx = clf._split(y, 0)
    p = clf.predict_proba(X[valid_idx])[:, 1]
    assert clf.history_[-1, "valid_loss"] == pytest.approx(log_loss(y[valid_idx], p), rel=1e-4)


def test_exact_symmetries_keep_pixels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen = {tuple(dihedral(x, k, flip).flatten().tolist()) for k, flip in dihedral_views()}
    assert len(seen) == 8
    for k, flip in dihedral_views():
        assert sorted(dihedral(x, k, flip).flatten().tolist()) == sorted(x.flatten().tolist())


def test_restores_best_epoch_weights():
    # Labels unrelated to the images: the validation AUC wanders around 0.5 from epoch to epoch.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3, 16, 16)).astype(np.float32)
    y = np.arange(200) % 2
    # keep="best" without averaging (the average wanders less; tests/test_averaging.py covers it with keep="best").
    # The first seed whose last epoch is not the best (the walk depends on the shipped backbone's weights)
    for seed in range(1, 9):
        clf = LensClassifier(max_epochs=5, batch_size=32, verbose=0, random_state=seed, ema_epochs=None,
                             keep="best").fit(X, y)
        valid_auc = np.asarray(clf.history_[:, "valid_auc"])
        if valid_auc[-1] < valid_auc.max():
            break
    assert valid_auc[-1] < valid_auc.max(), "precondition: for some seed the last epoch must not be the best"
    assert clf.best_epoch_ == int(np.argmax(valid_auc)) + 1
    _, valid_idx = clf._split(y, seed_from(seed))
    restored_auc = roc_auc_score(y[valid_idx], clf.predict_proba(X[valid_idx])[:, 1])
    assert restored_auc == pytest.approx(valid_auc.max(), abs=1e-9)


def _plateau_lrs(scores, lr, patience, higher_is_better):
    """The learning rate of each epoch under torch's ReduceLROnPlateau rule (factor 0.1, rel threshold 1e-4)."""
    best, bad, lrs = -np.inf if higher_is_better else np.inf, 0, []
    for score in scores:
        lrs.append(lr)
        improved = score > best * (1 + 1e-4) if higher_is_better else score < best * (1 - 1e-4)
        best, bad = (score, 0) if improved else (best, bad + 1)
        if bad > patience:
            lr, bad = lr * 0.1, 0
    return lrs


@pytest.mark.parametrize("schedule, monitor, higher_is_better", [
    ("plateau", "valid_loss", False), ("plateau_auc", "valid_auc", True)])
def test_plateau_schedules_cut_the_rate_on_their_own_validation_score(schedule, monitor, higher_is_better):
    # Labels unrelated to the images: neither validation score improves for long, so the rate is cut.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3, 16, 16)).astype(np.float32)
    y = np.arange(200) % 2
    # the trained weights' own scores (ema_epochs=None): their wander is what makes the schedule cut here.
    # 12 epochs: 6 sufficed on one machine; on another (other float rounding) the first cut came after epoch 8
    clf = LensClassifier(weights=None, max_epochs=12, batch_size=32, lr=1e-3, lr_patience=1, lr_schedule=schedule,
                         verbose=0, random_state=1, ema_epochs=None).fit(X, y)
    lrs = np.asarray(clf.history_[:, "lr"])
    expected = _plateau_lrs(clf.history_[:, monitor], 1e-3, 1, higher_is_better)
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert lrs[-1] < lrs[0], "precondition: the rate must have been cut at least once"


def test_cosine_schedule_decays_to_a_hundredth_over_max_epochs(ring_data):
    X, y, _, _ = ring_data
    clf = LensClassifier(max_epochs=4, batch_size=32, lr=1e-3, lr_schedule="cosine", verbose=0,
                         random_state=0).fit(X[:200], y[:200])
    epochs = np.arange(4)
    expected = 1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi * epochs / 4)) / 2
    np.testing.assert_allclose(clf.history_[:, "lr"], expected, rtol=1e-6)


def test_reproducible_with_random_state(ring_data):
    # Bit-for-bit on CPU (on CUDA, atomic-add kernels such as max-pool's backward are not).
    X, y, X_test, _ = ring_data
    cpu = {**FAST, "device": "cpu"}
    a = LensClassifier(**cpu).fit(X, y).predict_proba(X_test)
    b = LensClassifier(**cpu).fit(X, y).predict_proba(X_test)
    c = LensClassifier(**{**cpu, "random_state": 1}).fit(X, y).predict_proba(X_test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_leaves_global_rng_alone(ring_data):
    X, y, _, _ = ring_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LensClassifier(**FAST).fit(X[:100], y[:100])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("dump,load", [
    (lambda obj, f: pickle.dump(obj, f), pickle.load),
    (lambda obj, f: joblib.dump(obj, f), joblib.load),
])
def test_pickle_round_trip(fitted_ring_model, ring_data, dump, load):
    _, _, X_test, _ = ring_data
    buffer = io.BytesIO()
    dump(fitted_ring_model, buffer)
    # The fitted model must not drag the training data or optimizer moments along.
    assert buffer.tell() < 60e6
    buffer.seek(0)
    restored = load(buffer)
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted_ring_model.predict_proba(X_test))


def test_clone_and_params():
    clf = LensClassifier(lr=5e-4, weight_decay=0.0, max_epochs=2)
    cloned = clone(clf)
    assert cloned.get_params() == clf.get_params()
    assert cloned.set_params(lr=1e-2).lr == 1e-2
    assert "lr=0.0005" in repr(clf)  # a non-default value shows in the repr


def test_pipeline_and_cross_val_score_equal_fits_by_hand():
    X, y = make_ring_images(90, size=16, seed=6)
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a * 2.0)), ("clf", LensClassifier(**FAST))])
    assert pipe.fit(X, y).predict_proba(X[:5]).shape == (5, 2)
    cpu = {**FAST, "device": "cpu"}  # CPU fits are deterministic: scores must agree exactly
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    scores = cross_val_score(LensClassifier(**cpu), X, y, cv=cv, scoring="roc_auc")
    by_hand = [roc_auc_score(y[test], LensClassifier(**cpu).fit(X[train], y[train]).predict_proba(X[test])[:, 1])
               for train, test in cv.split(X, y)]
    np.testing.assert_allclose(scores, by_hand, rtol=0, atol=1e-12)


def test_grid_search_scores_and_refit_equal_direct_fits():
    # 2 parameter values x 2 folds + the refit (n_jobs=2 is covered by tests/test_checkpoint_files.py).
    X, y = make_ring_images(90, size=16, seed=6)
    X_test, _ = make_ring_images(40, size=16, seed=7)
    cpu = {**FAST, "device": "cpu"}
    lrs = [1e-4, 3e-3]  # with [1e-4, 1e-2] the two mean AUCs tied exactly (0.894) once the phase-6 backbone shipped
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(LensClassifier(**cpu), {"lr": lrs}, scoring="roc_auc", cv=cv, n_jobs=1).fit(X, y)
    # Each cross-validation score is the score of the same fit done by hand ...
    by_hand = np.array([[roc_auc_score(y[test], LensClassifier(**{**cpu, "lr": lr}).fit(X[train], y[train])
                                       .predict_proba(X[test])[:, 1]) for train, test in cv.split(X, y)]
                        for lr in lrs])
    for fold in range(2):
        np.testing.assert_allclose(search.cv_results_[f"split{fold}_test_score"], by_hand[:, fold], rtol=0, atol=1e-12)
    # ... the best parameters are those of the best mean score by hand ...
    assert by_hand[0].mean() != by_hand[1].mean(), "precondition: the two learning rates must score differently"
    assert search.best_params_ == {"lr": lrs[int(np.argmax(by_hand.mean(axis=1)))]}
    # ... and the refit model predicts exactly as a direct fit with those parameters on all of X.
    direct = LensClassifier(**{**cpu, **search.best_params_}).fit(X, y)
    np.testing.assert_array_equal(search.best_estimator_.predict_proba(X_test), direct.predict_proba(X_test))
    assert search.best_estimator_.lr == search.best_params_["lr"]


def test_string_labels_and_classes(ring_data):
    X, y, _, _ = ring_data
    labels = np.where(y == 1, "lens", "galaxy")
    clf = LensClassifier(**FAST).fit(X[:100], labels[:100])
    assert list(clf.classes_) == ["galaxy", "lens"]
    assert set(clf.predict(X[:20])) <= {"galaxy", "lens"}


@pytest.mark.parametrize("X,y,message", [
    (np.zeros((10, 64)), np.r_[np.zeros(5), np.ones(5)], "4-D"),
    (np.zeros((10, 3, 8, 8)), np.arange(10) % 3, "two classes"),
    (np.zeros((10, 3, 8, 8)), np.zeros(10), "two classes"),
    (np.zeros((10, 3, 8, 8)), np.zeros(9), "labels"),
    (np.full((10, 3, 8, 8), np.nan), np.arange(10) % 2, "NaN"),
    (np.zeros((10, 3, 8, 8), dtype=complex), np.arange(10) % 2, "real numbers"),
])
def test_bad_input_is_a_clear_value_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        LensClassifier(**FAST).fit(X, y)


@pytest.mark.parametrize("params,message", [
    ({"arch": "vgg16"}, "arch"), ({"balance": "both"}, "balance"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"valid_size": 1.5}, "valid_size"), ({"max_epochs": 0}, "max_epochs"), ({"prior": 1.0}, "prior"),
])
def test_bad_parameters(ring_data, params, message):
    X, y, _, _ = ring_data
    with pytest.raises(ValueError, match=message):
        LensClassifier(**{**FAST, **params}).fit(X[:50], y[:50])


def test_predict_errors(fitted_ring_model, ring_data):
    _, _, X_test, _ = ring_data
    with pytest.raises(NotFittedError):
        LensClassifier().predict_proba(X_test)
    with pytest.raises(ValueError, match=r"\(4, 32, 32\).*\(3, 32, 32\)"):
        fitted_ring_model.predict_proba(np.zeros((2, 4, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(3, 64, 64\)"):
        fitted_ring_model.predict_proba(np.zeros((2, 3, 64, 64), np.float32))
    bad = X_test[:4].copy()
    bad[2, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"index \[2\]"):
        fitted_ring_model.predict_proba(bad)


def test_too_small_for_validation_split():
    X, y = make_ring_images(10, size=16, seed=0)
    y[:] = 0
    y[0] = 1
    with pytest.raises(ValueError, match="valid_size=None"):
        LensClassifier(**FAST).fit(X, y)
    clf = LensClassifier(**{**FAST, "valid_size": None}).fit(X, y)
    assert "valid_auc" not in clf.history_[-1]


def test_constant_band_is_harmless():
    X, y = make_ring_images(120, size=16, seed=5)
    X[:, 1] = 0.5  # a dead band
    clf = LensClassifier(**FAST).fit(X, y)
    assert clf.channel_std_[1] == 1.0
    assert np.all(np.isfinite(clf.predict_proba(X)))


def test_image_scan_statistics_match_float64_over_the_training_rows():
    # One pass over all rows, statistics of the selected rows only: a large offset (sky level) costs
    # no precision, a constant band gets std 1, a finite pixel too large to square in float32 is fine.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5000, 3, 16, 16), dtype=np.float32) * np.float32(0.5)
    X += np.float32([1e4, 0.0, 0.0])[None, :, None, None]
    X[:, 2] = 7.0
    rows = rng.permutation(len(X))[:3000]
    X[rows[0], 1, 0, 0] = 3e20
    X[np.setdiff1d(np.arange(len(X)), rows)] *= 5  # other rows must not count
    mean, std = _scan_images(X, rows)
    reference = X[rows].astype(np.float64)
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std[:2], reference.std(axis=(0, 2, 3))[:2], rtol=1e-5)
    assert std[2] == 1.0 and mean.dtype == std.dtype == np.float32


def test_image_scan_names_every_bad_image_in_or_out_of_the_training_rows():
    X = np.ones((3000, 3, 8, 8), np.float32)
    X[17, 1, 3, 3] = np.nan
    X[2500, 0, 0, 0] = -np.inf  # in a later chunk, and not a training row
    with pytest.raises(ValueError, match=r"2 image\(s\), e.g. at index \[17, 2500\]"):
        _scan_images(X, np.arange(2000))


def test_verbose_prints_table_and_silent_prints_nothing(ring_data, capsys):
    X, y, _, _ = ring_data
    LensClassifier(**FAST).fit(X[:100], y[:100])
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    LensClassifier(**{**FAST, "verbose": 1}).fit(X[:100], y[:100])
    out = capsys.readouterr().out
    assert "valid_auc" in out and "train_loss" in out


def test_lens_dataset_batches_keep_requested_order(ring_data):
    X, y, _, _ = ring_data
    dataset = LensDataset(X, y, indices=np.arange(10, 30))
    xb, yb = dataset.__getitems__([5, 0, 19, 3])
    np.testing.assert_array_equal(xb.numpy(), X[[15, 10, 29, 13]])
    np.testing.assert_array_equal(yb.numpy(), y[[15, 10, 29, 13]].astype(np.float32))


def test_paths_give_the_same_results_as_arrays(tmp_path):
    X, y = make_ring_images(80, size=16, seed=8)
    paths = []
    for i, image in enumerate(X):
        path = tmp_path / f"{i}.npy"
        np.save(path, image)
        paths.append(str(path))
    cpu = {**FAST, "device": "cpu"}  # exact equality is a CPU property
    from_arrays = LensClassifier(**cpu).fit(X, y)
    from_paths = LensClassifier(**cpu).fit(paths, y)
    np.testing.assert_array_equal(from_paths.channel_mean_, from_arrays.channel_mean_)
    np.testing.assert_array_equal(from_paths.predict_proba(paths), from_arrays.predict_proba(X))
    np.testing.assert_array_equal(from_paths.predict_proba(X), from_arrays.predict_proba(X))


def test_the_inference_batch_size_defaults_by_device_and_does_not_change_scores(ring_data):
    X, y, X_test, _ = ring_data
    clf = LensClassifier(**{**FAST, "device": "cpu"}).fit(X[:100], y[:100])
    assert clf.predict_batch_size is None
    scores = clf.predict_proba(X_test[:150])
    assert clf.net_.iterator_valid__batch_size == 64  # on the CPU: maps under glibc's mmap threshold
    clf.set_params(predict_batch_size=7)
    np.testing.assert_allclose(clf.predict_proba(X_test[:150]), scores, rtol=1e-5, atol=1e-7)
    assert clf.net_.iterator_valid__batch_size == 7
    from lensclf._net import inference_batch_size
    assert inference_batch_size(None, "cuda") == 256 and inference_batch_size(32, "cuda") == 32
