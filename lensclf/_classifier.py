"""``LensClassifier``: a scikit-learn estimator that trains a ResNet with skorch."""

import functools
import json
import math
import numbers
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetBinaryClassifier
from skorch.callbacks import EarlyStopping, EpochScoring, LRScheduler, ProgressBar
from skorch.helper import predefined_split

from ._checkpoint import (
    CHECKPOINT_FILE_NAME,
    TrainingCheckpoint,
    data_fingerprint,
    history_from_checkpoint,
    read_checkpoint,
)
from ._dataset import LensDataset, batch_as_is
from ._heap import retained_heap
from ._models import ARCHITECTURES, STEMS, LensNet
from ._sampling import BALANCE_MODES, balanced_sampler, positive_weight
from ._transforms import BatchAugmenter, dihedral, dihedral_views

__all__ = ["LensClassifier"]

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


@functools.lru_cache(maxsize=None)
def _fused_supported(optimizer, device):
    """Whether ``optimizer(..., fused=True)`` works on ``device`` with this torch.

    The fused (single-kernel) Adam/AdamW/SGD steps are several times faster than
    the per-tensor ones on CPU (benchmarks/bench_fast_paths.py); torch gained
    them for CPU in 2.4, so older versions fall back to the default step.
    """
    try:
        optimizer([torch.zeros(1, device=device, requires_grad=True)], lr=0.1, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


# Rows processed at once when computing statistics or checking values.
_CHUNK = 2048


def _silent(*args, **kwargs):
    """A sink that prints nothing (a module-level function, so it pickles)."""


def _is_path_list(X):
    if isinstance(X, (str, os.PathLike)):
        return False
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS" and len(X) > 0 and isinstance(X.flat[0], (str, os.PathLike))
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(item, (str, os.PathLike)) for item in X)
    return False


def _as_images(X):
    """Return X as an (N, C, H, W) array-like without copying when possible."""
    if not isinstance(X, np.ndarray) or X.dtype.kind in "OUS":
        from ._data import LensFileArray

        if isinstance(X, LensFileArray):
            return X
        if _is_path_list(X):
            return LensFileArray([os.fspath(p) for p in X])
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(
            f"X={os.fspath(X)!r} is a single path; load a directory with lensclf.load_lens_dir "
            "or pass a list of .npy file paths."
        )
    if isinstance(X, np.ndarray) and X.dtype == np.float32:
        images = X
    else:
        try:
            images = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X cannot be read as an array of images: {exc}") from exc
        if images.dtype.kind not in "fiu" or images.dtype.kind == "c":
            raise ValueError(
                f"X must hold real numbers (float or integer pixels); got dtype {images.dtype}."
            )
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


def _scan_images(X, indices):
    """Check the images and return the per-channel mean and std over ``X[indices]``.

    For an in-memory or memory-mapped array this is one pass over all of ``X``,
    in chunks of rows: a :class:`ValueError` names the first images with NaN or
    infinite pixels, and per-row sums of the pixels and of their squares (shifted
    by a typical pixel value, so that large offsets cost no precision) give the
    statistics of the rows in ``indices``. Lazily read files are validated as they
    are read, and only the rows in ``indices`` are read here.

    Returns
    -------
    mean, std : float32 arrays of shape (n_channels,)
        A constant (or nearly constant) band gets std 1: it carries no information.
    """
    n_channels = X.shape[1]
    pixels = int(np.prod(X.shape[2:]))
    ordered = np.sort(np.asarray(indices))
    if isinstance(X, np.ndarray):  # every row, in slices
        blocks = ((np.arange(start, min(start + _CHUNK, len(X))), np.asarray(X[start:start + _CHUNK]))
                  for start in range(0, len(X), _CHUNK))
    else:  # only the selected rows
        blocks = ((rows, np.asarray(X[rows], dtype=np.float32))
                  for rows in (ordered[start:start + _CHUNK] for start in range(0, len(ordered), _CHUNK)))
    selected = np.zeros(len(X), dtype=bool)
    selected[ordered] = True
    # The shift: a typical value of each band, from the first few selected images.
    head = np.asarray(X[ordered[:16]], dtype=np.float32).reshape(-1, n_channels, pixels)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band with no finite pixel
        shift = np.nanmedian(np.where(np.isfinite(head), head, np.nan), axis=(0, 2))
    shift = np.where(np.isfinite(shift), shift, 0.0).astype(np.float32)[:, None]
    row_sums, row_squares, bad = [], [], []
    for rows, block in blocks:
        block = block.reshape(len(block), n_channels, pixels)
        centred = block - shift
        sums = centred.sum(axis=2, dtype=np.float64)
        squares = np.einsum("ncp,ncp->nc", centred, centred).astype(np.float64)
        suspect = np.flatnonzero(~np.isfinite(squares).all(axis=1))
        for row in suspect:  # NaN or infinity, or a finite pixel too large to square in float32
            if not np.isfinite(block[row]).all():
                bad.append(int(rows[row]))
                continue
            wide = block[row].astype(np.float64) - shift
            sums[row], squares[row] = wide.sum(axis=1), np.square(wide).sum(axis=1)
        keep = selected[rows]
        row_sums.append(sums[keep])
        row_squares.append(squares[keep])
    if bad:
        raise ValueError(
            f"X contains NaN or infinite pixels in {len(bad)} image(s), e.g. at index {bad[:5]}. "
            "Remove or repair them (lensclf.load_lens_dir reports such files by name)."
        )
    # Summed in ascending row order, however the rows were read: the same statistics either way.
    count = len(ordered) * pixels
    centred_mean = np.concatenate(row_sums).sum(axis=0) / count
    var = np.maximum(np.concatenate(row_squares).sum(axis=0) / count - centred_mean**2, 0.0)
    mean = centred_mean + shift[:, 0]
    std = np.sqrt(var)
    scale = np.maximum(np.abs(mean), 1.0)
    std = np.where(std > 1e-6 * scale, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class LensClassifier(ClassifierMixin, BaseEstimator):
    """A ResNet lens finder with the scikit-learn estimator interface.

    ``fit`` builds and trains a skorch :class:`~skorch.NeuralNetBinaryClassifier`
    around a torchvision ResNet (kept as ``net_``), so the estimator works with
    ``clone``, ``Pipeline``, ``cross_val_score``, ``GridSearchCV``, pickle and
    joblib. Labels: the larger of the two classes in ``np.unique(y)`` is the
    lens (with ``y`` in {0, 1}: 1 = lens); ``predict_proba(X)[:, 1]`` is the lens
    probability.

    Parameters
    ----------
    arch : {"resnet18", "resnet34", "resnet50"}, default="resnet18"
        torchvision architecture.
    weights : None, "imagenet" or path, default=None
        Initial weights: random (works offline), torchvision's ImageNet
        weights (needs the network once or the file in torchvision's cache),
        or a local state dict (a torchvision ResNet checkpoint or a
        lensclf-trained network).
    input_size : int or None, default=None
        Images are resized (bilinear) to ``input_size`` x ``input_size`` inside
        the network; ``None`` keeps the native size. The notebook recipe used 224.
    stem : {"standard", "small"}, default="standard"
        ResNet input stem; ``"small"`` is a 3x3 stride-1 first convolution
        without max-pool.
    lr : float, default=1e-3
        Learning rate.
    optimizer : {"adam", "adamw", "sgd"} or torch optimizer class, default="adam"
        Optimizer; ``"sgd"`` uses momentum 0.9. The named ones use torch's
        fused implementation where available (same update, fewer kernels).
    weight_decay : float, default=1e-4
        L2 penalty (decoupled for AdamW).
    batch_size : int, default=64
        Training batch size.
    max_epochs : int, default=10
        Number of passes; with ``balance="sampler"`` one epoch draws as many
        images as the training part holds.
    balance : {"sampler", "pos_weight", None}, default="sampler"
        Class-imbalance correction: a balanced ``WeightedRandomSampler`` built
        from this fit's training labels, a positive-class weight in the loss,
        or nothing. Never both.
    augment : bool, default=True
        Random flips, 90-degree rotations and small affine jitter of the
        training batches (never of validation or test data).
    valid_size : float or None, default=0.2
        Fraction of the training data held out (stratified) to score each
        epoch and choose the best weights; ``None`` trains on everything and
        keeps the last epoch's weights.
    lr_patience : int, default=2
        Epochs without improvement of the validation loss before the learning
        rate is divided by 10 (``ReduceLROnPlateau``).
    early_stopping : int or None, default=None
        Stop after this many epochs without improvement of the validation AUC.
    tta : bool, default=False
        Test-time augmentation: average the logits over the 8 flips and
        rotations of each image in ``predict_proba``.
    prior : float or None, default=None
        Lens fraction of the population to be searched. ``predict_proba``
        returns probabilities under this prior; ``None`` keeps the prior the
        model was trained under (0.5 with ``balance`` set, see ``train_prior_``).
        ROC AUC is unaffected.
    threshold : float, default=0.5
        Probability above which ``predict`` says "lens".
    predict_batch_size : int, default=256
        Batch size for inference.
    device : {"auto", "cpu", "cuda", ...}, default="auto"
        ``"auto"`` uses CUDA when available; resolved in ``fit`` into ``device_``.
    random_state : int or None, default=None
        Seed for initialisation, splitting, sampling and augmentation; the same
        seed on the same machine gives the same predictions on CPU. On a GPU,
        some kernels (max-pool's backward pass, cuDNN's algorithm choice) are
        not deterministic, so fits agree closely but not bit for bit.
    verbose : int, default=1
        0: silent; 1: a progress bar per epoch and the epoch table.
    checkpoint_dir : str, path-like or None, default=None
        Folder where ``fit`` writes, atomically after every epoch, one file
        ``checkpoint.pt`` with the whole training state (network, optimizer,
        scheduler, best weights, history, random generators, split and
        preprocessing). ``fit(X, y)`` always starts afresh (replacing it);
        ``fit(X, y, resume=True)`` continues from it and, on CPU, ends with
        the same weights as an uninterrupted fit (``max_epochs`` may be
        raised to train longer; the other training parameters and the data
        must be the same). ``None`` writes nothing.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The class labels; ``classes_[1]`` is the lens class.
    net_ : skorch.NeuralNetBinaryClassifier
        The trained network (module ``net_.module_`` is a ``LensNet``).
    history_ : skorch.History
        Per-epoch ``train_loss``, ``train_auc``, ``valid_loss``, ``valid_auc``, ``lr``, ``dur``.
    channel_mean_, channel_std_ : ndarray of shape (n_channels,)
        Standardisation fitted on the training part of the data.
    input_shape_ : tuple
        ``(n_channels, height, width)`` of the training images.
    train_prior_ : float
        Lens fraction the model was effectively trained under.
    device_ : str
        Device the network lives on.
    best_epoch_ : int
        Epoch whose weights were kept (best validation AUC).
    """

    def __init__(self, arch="resnet18", weights=None, input_size=None, stem="standard",
                 lr=1e-3, optimizer="adam", weight_decay=1e-4, batch_size=64, max_epochs=10,
                 balance="sampler", augment=True, valid_size=0.2, lr_patience=2,
                 early_stopping=None, tta=False, prior=None, threshold=0.5,
                 predict_batch_size=256, device="auto", random_state=None, verbose=1,
                 checkpoint_dir=None):
        self.arch = arch
        self.weights = weights
        self.input_size = input_size
        self.stem = stem
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.balance = balance
        self.augment = augment
        self.valid_size = valid_size
        self.lr_patience = lr_patience
        self.early_stopping = early_stopping
        self.tta = tta
        self.prior = prior
        self.threshold = threshold
        self.predict_batch_size = predict_batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------ checks
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = False
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = self.random_state is None
        return tags

    def _check_params(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch={self.arch!r}; choose one of {sorted(ARCHITECTURES)}.")
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r}; choose one of {list(STEMS)}.")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance={self.balance!r}; choose one of {list(BALANCE_MODES)}.")
        if not (isinstance(self.optimizer, str) and self.optimizer.lower() in _OPTIMIZERS) and not (
            isinstance(self.optimizer, type) and issubclass(self.optimizer, torch.optim.Optimizer)
        ):
            raise ValueError(
                f"optimizer={self.optimizer!r}; choose one of {sorted(_OPTIMIZERS)} or pass a torch.optim class."
            )
        for name in ("batch_size", "max_epochs", "predict_batch_size", "lr_patience"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.early_stopping is not None and (
            not isinstance(self.early_stopping, numbers.Integral) or self.early_stopping < 1
        ):
            raise ValueError(f"early_stopping must be None or a positive integer, got {self.early_stopping!r}.")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if not (isinstance(self.weight_decay, numbers.Real) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}.")
        if self.valid_size is not None and not (
            isinstance(self.valid_size, numbers.Real) and 0 < self.valid_size < 1
        ):
            raise ValueError(f"valid_size must be None or a fraction in (0, 1), got {self.valid_size!r}.")
        if self.input_size is not None and not (
            isinstance(self.input_size, numbers.Integral) and self.input_size >= 16
        ):
            raise ValueError(f"input_size must be None or an integer >= 16, got {self.input_size!r}.")
        self._check_prediction_params()

    def _check_prediction_params(self):
        if self.prior is not None and not (isinstance(self.prior, numbers.Real) and 0 < self.prior < 1):
            raise ValueError(f"prior must be None or a probability in (0, 1), got {self.prior!r}.")
        if not (isinstance(self.threshold, numbers.Real) and 0 <= self.threshold <= 1):
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold!r}.")

    def _check_labels(self, y, n_samples):
        y = np.asarray(y)
        if y.ndim != 1:
            y = np.ravel(y) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D array of labels; got shape {y.shape}.")
        if len(y) != n_samples:
            raise ValueError(f"X holds {n_samples} images but y holds {len(y)} labels.")
        kind = type_of_target(y)
        if kind != "binary" or len(np.unique(y)) != 2:
            classes = np.unique(y) if kind != "continuous" else "continuous values"
            raise ValueError(
                "LensClassifier needs exactly two classes (lens / non-lens); "
                f"y is {kind!r} with classes {classes}."
            )
        classes, encoded = np.unique(y, return_inverse=True)
        return classes, encoded.astype(np.int64)

    def _resolve_device(self):
        if self.device in (None, "auto"):
            return "cuda" if torch.cuda.is_available() else "cpu"
        device = str(self.device)
        try:
            kind = torch.device(device).type
        except RuntimeError as exc:
            raise ValueError(f"device={self.device!r} is not a torch device ({exc}).") from exc
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r}, but no CUDA GPU is available here; "
                             "use device='auto' or 'cpu'.")
        return device

    # --------------------------------------------------------------- training
    def _seed(self):
        if self.random_state is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        return int(self.random_state)

    def _split(self, y, seed):
        indices = np.arange(len(y))
        if self.valid_size is None:
            return indices, None
        counts = np.bincount(y, minlength=2)
        n_valid = math.ceil(self.valid_size * len(y))
        if counts.min() < 2 or n_valid < 2 or len(y) - n_valid < 2:
            raise ValueError(
                f"Too few images for a stratified validation split (class counts {counts.tolist()}, "
                f"valid_size={self.valid_size}); use more data or valid_size=None."
            )
        return train_test_split(indices, test_size=self.valid_size, stratify=y, random_state=seed)

    def _optimizer_kwargs(self):
        optimizer = self.optimizer
        kwargs = {}
        if isinstance(optimizer, str):
            if optimizer.lower() == "sgd":
                kwargs["optimizer__momentum"] = 0.9
            optimizer = _OPTIMIZERS[optimizer.lower()]
            if _fused_supported(optimizer, self.device_):
                kwargs["optimizer__fused"] = True
        kwargs["optimizer"] = optimizer
        kwargs["optimizer__weight_decay"] = self.weight_decay
        return kwargs

    def _callbacks(self, has_valid, checkpoint=None):
        callbacks = [
            ("train_auc", EpochScoring("roc_auc", lower_is_better=False, on_train=True, name="train_auc")),
        ]
        monitor_loss = "valid_loss" if has_valid else "train_loss"
        if has_valid:
            callbacks.append(("valid_auc", EpochScoring("roc_auc", lower_is_better=False, name="valid_auc")))
        callbacks.append(("lr_scheduler", LRScheduler(
            policy="ReduceLROnPlateau", monitor=monitor_loss, patience=self.lr_patience,
            factor=0.1, event_name="lr")))
        if has_valid:
            patience = self.early_stopping if self.early_stopping is not None else self.max_epochs + 1
            callbacks.append(("best_weights", EarlyStopping(
                monitor="valid_auc", lower_is_better=False, patience=patience, threshold=0.0,
                load_best=True, sink=print if self.verbose else _silent)))
        if self.verbose:
            callbacks.append(("progress_bar", ProgressBar(postfix_keys=["train_loss"])))
        if checkpoint is not None:
            # last: it restores a resumed state after the scheduler and early stopping set themselves up
            callbacks.append(("checkpoint", checkpoint))
        return callbacks

    def _build_net(self, X, y, train_idx, valid_idx, seed, checkpoint=None):
        mean, std = self.channel_mean_, self.channel_std_
        has_valid = valid_idx is not None
        train_set = LensDataset(X, y, train_idx)
        kwargs = dict(
            module=LensNet,
            module__arch=self.arch,
            module__weights=self.weights,
            module__in_channels=int(X.shape[1]),
            module__stem=self.stem,
            module__input_size=self.input_size,
            module__channel_mean=mean.tolist(),
            module__channel_std=std.tolist(),
            criterion=torch.nn.BCEWithLogitsLoss,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            device=self.device_,
            train_split=predefined_split(LensDataset(X, y, valid_idx)) if has_valid else None,
            callbacks=self._callbacks(has_valid, checkpoint),
            callbacks__valid_acc=None,
            iterator_train__collate_fn=(
                BatchAugmenter(seed=seed + 1) if self.augment else batch_as_is
            ),
            iterator_train__drop_last=len(train_idx) > self.batch_size,
            iterator_valid__collate_fn=batch_as_is,
            iterator_valid__batch_size=self.predict_batch_size,
            verbose=int(self.verbose),
            **self._optimizer_kwargs(),
        )
        if self.device_.startswith("cuda"):
            kwargs["iterator_train__pin_memory"] = True
            kwargs["iterator_valid__pin_memory"] = True
        y_train = y[train_idx]
        if self.balance == "sampler":
            kwargs["iterator_train__sampler"] = balanced_sampler(y_train, seed + 2)
        else:
            kwargs["iterator_train__shuffle"] = True
            kwargs["iterator_train__generator"] = torch.Generator().manual_seed(seed + 2)
            if self.balance == "pos_weight":
                kwargs["criterion__pos_weight"] = torch.tensor(positive_weight(y_train))
        return NeuralNetBinaryClassifier(**kwargs), train_set

    # Parameters that change what training does (the others only affect prediction or output).
    # max_epochs may change between an interrupted fit and its resumption (to train longer).
    _NOT_TRAINING_PARAMS = ("verbose", "checkpoint_dir", "device", "tta", "prior", "threshold",
                            "predict_batch_size", "max_epochs")

    def _training_params(self):
        """The training parameters as a JSON string, to tell whether a checkpoint belongs to them."""
        params = {}
        for name, value in self.get_params(deep=False).items():
            if name in self._NOT_TRAINING_PARAMS:
                continue
            if isinstance(value, type):
                value = f"{value.__module__}.{value.__qualname__}"
            elif isinstance(value, np.random.RandomState):
                value = "RandomState"
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif isinstance(value, numbers.Number) and not isinstance(value, bool):
                value = value.item() if hasattr(value, "item") else value
            params[name] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        return json.dumps(params, sort_keys=True)

    def _resume_state(self, X, y):
        """Read and check the checkpoint in ``checkpoint_dir`` for a resumed fit."""
        if self.checkpoint_dir is None:
            raise ValueError("fit(..., resume=True) needs checkpoint_dir: the folder of the checkpoint to resume.")
        path = os.path.join(os.fspath(self.checkpoint_dir), CHECKPOINT_FILE_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"No checkpoint to resume from: {path!r} does not exist "
                             "(training stopped before its first epoch ended, or never ran there).")
        state = read_checkpoint(path)
        if state["data"] != data_fingerprint(X, y):
            raise ValueError(
                f"{path}: this checkpoint was written while training on other data "
                f"({state['data']['n_samples']} images of shape {tuple(state['data']['image_shape'])}); "
                f"resume with the same X and y (got {len(X)} images of shape {tuple(X.shape[1:])}).")
        saved, current = json.loads(state["params"]), json.loads(self._training_params())
        changed = sorted(name for name in set(saved) | set(current) if saved.get(name) != current.get(name))
        if changed:
            details = ", ".join(f"{name}={saved.get(name)!r} (now {current.get(name)!r})" for name in changed)
            raise ValueError(f"{path}: this checkpoint was written with other parameters: {details}; "
                             "resume with the same parameters.")
        return state

    def fit(self, X, y, resume=False):
        """Train the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels, height, width), or list of .npy paths
            Images (float or integer pixels), or file paths read lazily in batches.
        y : array-like of shape (n_samples,)
            Two-class labels; the larger label is the lens class.
        resume : bool, default=False
            Continue from the checkpoint in ``checkpoint_dir`` (written by an
            earlier, interrupted ``fit`` on the same data with the same
            parameters) instead of starting afresh. A :class:`ValueError`
            says when there is none or when it belongs to other data or
            parameters.

        Returns
        -------
        self

        Notes
        -----
        A :class:`KeyboardInterrupt` (Ctrl-C) during training ends it after
        the epochs completed so far, keeping the best weights among them;
        before the first epoch has ended, it is raised again.
        """
        self._check_params()
        X = _as_images(X)
        self.classes_, y_encoded = self._check_labels(y, len(X))
        restore = self._resume_state(X, y_encoded) if resume else None
        if restore is None:
            seed = self._seed()
            train_idx, valid_idx = self._split(y_encoded, seed)
        else:
            seed = int(restore["seed"])
            train_idx = restore["train_idx"].numpy()
            valid_idx = None if restore["valid_idx"] is None else restore["valid_idx"].numpy()
        mean, std = _scan_images(X, train_idx)  # also checks every pixel, so it runs on resume too
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        if restore is None:
            self.channel_mean_, self.channel_std_ = mean, std
        else:
            self.channel_mean_ = restore["channel_mean"].numpy()
            self.channel_std_ = restore["channel_std"].numpy()
        self.device_ = self._resolve_device()
        if self.balance is None:
            self.train_prior_ = float(y_encoded[train_idx].mean())
        else:
            self.train_prior_ = 0.5
        checkpoint = None
        if self.checkpoint_dir is not None:
            checkpoint = TrainingCheckpoint(self.checkpoint_dir, restore=restore, extra={
                "seed": seed,
                "train_idx": torch.as_tensor(np.asarray(train_idx, dtype=np.int64)),
                "valid_idx": None if valid_idx is None else torch.as_tensor(np.asarray(valid_idx, dtype=np.int64)),
                "channel_mean": torch.as_tensor(self.channel_mean_),
                "channel_std": torch.as_tensor(self.channel_std_),
                "data": data_fingerprint(X, y_encoded),
                "params": self._training_params(),
            })
        with torch.random.fork_rng(devices=[]), retained_heap():
            torch.manual_seed(seed)
            net, train_set = self._build_net(X, y_encoded, train_idx, valid_idx, seed, checkpoint)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*epoch parameter in `scheduler.step\\(\\)`.*")
                if restore is None:
                    net.fit(train_set, None)
                else:
                    net.initialize()
                    net.history = history_from_checkpoint(restore)
                    net.partial_fit(train_set, None, epochs=max(self.max_epochs - int(restore["epoch"]), 0))
        self._drop_unfinished_epoch(net, valid_idx is not None)
        self.net_ = net
        self.history_ = net.history
        if valid_idx is not None:
            scores = net.history[:, "valid_auc"]
            self.best_epoch_ = int(np.nanargmax(np.asarray(scores, dtype=float))) + 1
        else:
            self.best_epoch_ = len(net.history)
        self._drop_training_state()
        return self

    @staticmethod
    def _drop_unfinished_epoch(net, has_valid):
        """Remove the history row of an epoch cut short by Ctrl-C; re-raise if no epoch ended."""
        needed = {"dur", "train_loss", "train_auc", "lr"} | ({"valid_loss", "valid_auc"} if has_valid else set())
        while len(net.history) and not needed <= set(net.history[-1]):
            net.history.pop()
        if not len(net.history):
            raise KeyboardInterrupt("training was interrupted before its first epoch ended")

    def _drop_training_state(self):
        """Forget what only training needs, so fitted models stay small and hold no data.

        The validation data, the sampler, the optimizer's moment estimates and
        the best-weights copy would otherwise be pickled with the estimator.
        """
        for _, callback in self.net_.callbacks_:
            if isinstance(callback, EarlyStopping):
                callback.best_model_weights_ = None
            if isinstance(callback, LRScheduler):
                callback.lr_scheduler_ = None  # refers to the optimizer, pickled apart from the net
            if isinstance(callback, TrainingCheckpoint):
                callback.release()
        self.net_.optimizer_.state.clear()
        # (skorch keeps these as plain attributes; set_params would re-initialise the net.)
        self.net_.train_split = None
        if hasattr(self.net_, "iterator_train__sampler"):
            self.net_.iterator_train__sampler = None

    # ------------------------------------------------------------- prediction
    def _check_predict_input(self, X):
        check_is_fitted(self, "net_")
        X = _as_images(X)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has images of shape {tuple(X.shape[1:])} (channels, height, width), but this "
                f"model was trained on {self.input_shape_}. Resample or select bands to match."
            )
        return X

    def decision_function(self, X):
        """Lens logits (log-odds under the training prior, or ``prior`` if set)."""
        self._check_prediction_params()
        X = self._check_predict_input(X)
        module = self.net_.module_
        module.eval()
        device = self.device_
        loader = torch.utils.data.DataLoader(
            LensDataset(X), batch_size=self.predict_batch_size, shuffle=False,
            collate_fn=batch_as_is, pin_memory=device.startswith("cuda"))
        views = dihedral_views() if self.tta else [(0, False)]
        logits = []
        start = 0
        with torch.inference_mode():
            for xb, _ in loader:
                if not torch.isfinite(xb).all():
                    bad = start + torch.nonzero(~torch.isfinite(xb).flatten(1).all(1)).flatten()
                    raise ValueError(f"X contains NaN or infinite pixels at index {bad[:5].tolist()}.")
                xb = xb.to(device, non_blocking=True)
                out = sum(module(dihedral(xb, k, flip)) for k, flip in views) / len(views)
                logits.append(out.float().cpu().numpy())
                start += len(xb)
        logits = np.concatenate(logits).astype(np.float64)
        if self.prior is not None:
            logits += math.log(self.prior / (1 - self.prior)) - math.log(
                self.train_prior_ / (1 - self.train_prior_))
        return logits

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, 2); column 1 is the lens probability.

        The probabilities refer to the lens prior ``prior`` when it is set, else
        to the prior the model was trained under (``train_prior_``, 0.5 with
        a balanced sampler or ``pos_weight``).
        """
        logits = self.decision_function(X)
        p_lens = 1.0 / (1.0 + np.exp(-logits))
        return np.column_stack([1.0 - p_lens, p_lens])

    def predict(self, X):
        """Predicted class labels: lens where the lens probability is at least ``threshold``."""
        p_lens = self.predict_proba(X)[:, 1]
        return self.classes_[(p_lens >= self.threshold).astype(int)]

    # ------------------------------------------------------------ persistence
    def save(self, path, overwrite=False, metadata=None):
        """Save the fitted classifier to one safetensors file (e.g. ``model.safetensors``).

        The file holds the weights and, as JSON, the parameters, classes,
        preprocessing, training history and ``metadata``; loading it with
        :meth:`load` never executes code, so it is safe to share. Pickle and
        joblib also work, but only for trusted files: unpickling can run
        arbitrary code. See :func:`lensclf.save_model`.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; written atomically.
        overwrite : bool, default=False
            Replace an existing file (otherwise :class:`FileExistsError`).
        metadata : dict or None, default=None
            JSON-serialisable extras (e.g. test metrics), read back under
            ``lensclf.read_model_metadata(path)["extra"]``.

        Returns
        -------
        str
            The path written.
        """
        from ._io import save_model

        return save_model(self, path, overwrite=overwrite, extra_metadata=metadata)

    @classmethod
    def load(cls, path, device="auto"):
        """Load a classifier saved with :meth:`save`; it predicts exactly as the saved one.

        Parameters
        ----------
        path : str or os.PathLike
            A lensclf model file.
        device : {"auto", "cpu", "cuda", ...}, default="auto"
            Where the network goes; ``"auto"`` uses CUDA when available, so a
            model trained on a GPU loads on a CPU-only machine.

        Returns
        -------
        LensClassifier
            The fitted classifier. See :func:`lensclf.load_model`.
        """
        from ._io import load_model

        return load_model(path, device=device)
