"""scikit-learn's estimator checks that apply to an image estimator, and image versions of its data checks.

The checks in ``sklearn.utils.estimator_checks`` that need no data run as they
are. Those that fit on 2-D tabular data (which a ResNet over images does not
accept) are rewritten below for 4-D image arrays.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks

from lensclf import LensClassifier

from conftest import make_ring_images

DATA_FREE_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    "check_estimator_cloneable",
    "check_mixin_order",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
]


@pytest.mark.parametrize("check_name", DATA_FREE_CHECKS)
def test_sklearn_check(check_name):
    check = getattr(estimator_checks, check_name)
    # every one of these takes (name, estimator) positionally
    check(LensClassifier.__name__, LensClassifier())


def test_sklearn_tags_describe_an_image_classifier():
    tags = LensClassifier().__sklearn_tags__()
    assert tags.estimator_type == "classifier"
    assert not tags.input_tags.two_d_array
    assert tags.non_deterministic and not LensClassifier(random_state=0).__sklearn_tags__().non_deterministic


def test_sklearn_tags_say_binary_only():
    assert not LensClassifier().__sklearn_tags__().classifier_tags.multi_class


@pytest.fixture(scope="module")
def fit_record():
    """One small fit, with everything recorded around it."""
    X, y = make_ring_images(48, size=16, lens_fraction=0.4, seed=7)
    labels = np.where(y == 1, "lens", "non-lens")
    X_before, labels_before = X.copy(), labels.copy()
    clf = LensClassifier(max_epochs=1, batch_size=32, verbose=0, random_state=0)
    params_before = clf.get_params()
    attrs_before = dict(vars(clf))
    returned = clf.fit(X, labels)
    return dict(clf=clf, returned=returned, X=X, labels=labels, X_before=X_before,
                labels_before=labels_before, params_before=params_before, attrs_before=attrs_before)


def test_fit_returns_self(fit_record):
    assert fit_record["returned"] is fit_record["clf"]


def test_fit_does_not_change_parameters(fit_record):
    # cf. check_dont_overwrite_parameters and check_estimators_overwrite_params
    params_after = fit_record["clf"].get_params()
    assert params_after.keys() == fit_record["params_before"].keys()
    for name, value in fit_record["params_before"].items():
        assert params_after[name] is value or params_after[name] == value, name


def test_fit_does_not_modify_its_input(fit_record):
    np.testing.assert_array_equal(fit_record["X"], fit_record["X_before"])
    assert fit_record["X"].dtype == fit_record["X_before"].dtype
    np.testing.assert_array_equal(fit_record["labels"], fit_record["labels_before"])


def test_fitted_attributes_end_with_underscore(fit_record):
    clf, before = fit_record["clf"], fit_record["attrs_before"]
    assert not [name for name in before if name.endswith("_")]  # nothing fitted before fit
    added = [name for name in vars(clf) if name not in before]
    public_added = [name for name in added if not name.startswith("_")]
    assert public_added, "fit set no attributes"
    assert all(name.endswith("_") for name in public_added), public_added
    for name in ("classes_", "net_", "history_", "input_shape_", "channel_mean_", "channel_std_",
                 "train_prior_", "best_epoch_", "device_"):
        assert hasattr(clf, name), name
    # clone() drops every fitted attribute
    assert not [name for name in vars(clone(clf)) if name.endswith("_")]


def test_predictions_are_valid(fit_record):
    clf, X = fit_record["clf"], fit_record["X"][:16]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    predicted = clf.predict(X)
    assert predicted.shape == (len(X),)
    assert set(predicted) <= set(clf.classes_)
    assert list(clf.classes_) == ["lens", "non-lens"]
    # predict and predict_proba agree (column 1 is the class classes_[1])
    np.testing.assert_array_equal(predicted, clf.classes_[(proba[:, 1] >= clf.threshold).astype(int)])


def test_unfitted_estimator_refuses_to_predict(fit_record):
    X = fit_record["X"][:2]
    for method in ("predict", "predict_proba", "decision_function"):
        with pytest.raises(NotFittedError):
            getattr(LensClassifier(), method)(X)
