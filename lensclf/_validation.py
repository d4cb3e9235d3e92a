"""What the estimator accepts: its parameters, images and labels, checked with clear messages.

Parameters are declared once in :data:`PARAMETER_CONSTRAINTS` and checked by
scikit-learn's own parameter validation (``BaseEstimator._validate_params``),
as scikit-learn's and imbalanced-learn's estimators do.
"""

import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_consistent_length

from ._cpu import FAST_PATH_MODES
from ._filearray import LensFileArray
from ._zarr import LensZarrArray
from ._models import ARCHITECTURES, SCALINGS, STEMS

__all__ = ["OPTIMIZERS", "PARAMETER_CONSTRAINTS", "as_images", "check_labels", "check_optimizer",
           "check_prediction_params", "seed_from"]

#: Optimizers by name (``"sgd"`` gets momentum 0.9).
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_PROBABILITY_OPEN = Interval(Real, 0, 1, closed="neither")

#: Every parameter of :class:`~lensclf.LensClassifier` and what it may hold.
PARAMETER_CONSTRAINTS = {
    "arch": [StrOptions(set(ARCHITECTURES))],
    "weights": [None, str, os.PathLike],
    "input_size": [None, StrOptions({"auto"}), Interval(Integral, 16, None, closed="left")],
    "stem": [StrOptions(set(STEMS))],
    "scaling": [StrOptions(set(SCALINGS) | {"auto"})],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "optimizer": [str, type],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "batch_size": [_POSITIVE_INT],
    "max_epochs": [_POSITIVE_INT],
    "balance": [StrOptions({"sampler", "pos_weight"}), None],
    "augment": ["boolean"],
    "valid_size": [None, _PROBABILITY_OPEN],
    "lr_patience": [_POSITIVE_INT],
    "lr_schedule": [StrOptions({"plateau", "plateau_auc", "cosine"})],
    "early_stopping": [None, _POSITIVE_INT],
    "ema_epochs": [None, Interval(Real, 0, None, closed="neither")],
    "keep": [StrOptions({"best", "last"})],
    "tta": ["boolean"],
    "prior": [None, _PROBABILITY_OPEN],
    "threshold": [Interval(Real, 0, 1, closed="both")],
    "predict_batch_size": [None, _POSITIVE_INT],
    "device": [None, str],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "checkpoint_dir": [None, str, os.PathLike],
    "callbacks": [None, list],
    "cpu_fast_paths": ["boolean", StrOptions({m for m in FAST_PATH_MODES if isinstance(m, str)})],
}

_PREDICTION_PARAMS = ("tta", "prior", "threshold", "predict_batch_size")


def check_optimizer(optimizer):
    """The optimizer class for the ``optimizer`` parameter (a name or a ``torch.optim.Optimizer`` class)."""
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer
    raise ValueError(f"optimizer={optimizer!r}; choose one of {sorted(OPTIMIZERS)} or pass a torch.optim class.")


def check_prediction_params(estimator):
    """Check only the parameters that prediction uses (they may be changed after ``fit``)."""
    params = estimator.get_params(deep=False)
    validate_parameter_constraints({name: PARAMETER_CONSTRAINTS[name] for name in _PREDICTION_PARAMS},
                                   {name: params[name] for name in _PREDICTION_PARAMS},
                                   caller_name=type(estimator).__name__)


def seed_from(random_state):
    """One integer seed from ``random_state`` (an int is used as it is)."""
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _is_path_list(X):
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS" and len(X) > 0 and isinstance(X.flat[0], (str, os.PathLike))
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(item, (str, os.PathLike)) for item in X)
    return False


def as_images(X):
    """``X`` as an (N, C, H, W) float32 array-like, without copying when possible.

    Accepts arrays (any real dtype), memory maps, :class:`~lensclf.LensFileArray`,
    :class:`~lensclf.LensZarrArray` and lists of cutout file paths (read lazily in batches).
    """
    if isinstance(X, (LensFileArray, LensZarrArray)):
        return X
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(
            f"X={os.fspath(X)!r} is a single path; load a directory with lensclf.load_lens_dir "
            "or pass a list of .npy file paths."
        )
    if _is_path_list(X):
        return LensFileArray([os.fspath(p) for p in X])
    if isinstance(X, np.ndarray) and X.dtype == np.float32:
        images = X
    else:
        try:
            images = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X cannot be read as an array of images: {exc}") from exc
        if images.dtype.kind not in "fiu":
            raise ValueError(f"X must hold real numbers (float or integer pixels); got dtype {images.dtype}.")
        images = images.astype(np.float32, copy=False)
    if images.ndim != 4:
        hint = ""
        if images.ndim == 3:
            hint = " For one image, use X[None]; for single-band images, use X[:, None]."
        elif images.ndim == 2:
            hint = " lensclf works on images, not on flattened feature vectors."
        raise ValueError(
            "X must be a 4-D array of images with shape (n_samples, n_channels, height, width); "
            f"got a {images.ndim}-D array of shape {images.shape}.{hint}"
        )
    if images.shape[0] == 0:
        raise ValueError("X holds no images (0 samples).")
    return images


def check_labels(y, X):
    """``(classes, encoded)`` for two-class labels ``y`` of the images ``X`` (encoded: 0, 1)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels; got shape {y.shape}.")
    try:
        check_consistent_length(X, y)
    except ValueError:
        raise ValueError(f"X holds {len(X)} images but y holds {len(y)} labels.") from None
    kind = type_of_target(y)
    if kind != "binary" or len(np.unique(y)) != 2:
        classes = np.unique(y) if kind != "continuous" else "continuous values"
        raise ValueError(
            "LensClassifier needs exactly two classes (lens / non-lens); "
            f"y is {kind!r} with classes {classes}."
        )
    classes, encoded = np.unique(y, return_inverse=True)
    return classes, encoded.astype(np.int64)
