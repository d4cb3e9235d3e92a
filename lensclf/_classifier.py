"""``LensClassifier``: a scikit-learn estimator that trains a ResNet with skorch."""

import contextlib
import math
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ._checkpoint import (
    FitLock,
    TrainingCheckpoint,
    checkpoint_path,
    data_fingerprint,
    history_from_checkpoint,
    resume_state,
    training_params,
)
from ._cpu import retained_heap
from ._dask import dask_scores, is_dask_array, worker_settings
from ._dataset import LensDataset
from ._device import resolve_device
from ._modelfile import read_model, write_model
from ._net import build_inference_net, build_training_net, inference_batch_size, strip_training_state
from ._models import LensNet
from ._pixels import scan_images
from ._validation import PARAMETER_CONSTRAINTS, as_images, check_labels, check_optimizer, check_prediction_params, seed_from

__all__ = ["LensClassifier", "load_model", "save_model"]


class LensClassifier(ClassifierMixin, BaseEstimator):
    """A ResNet lens finder with the scikit-learn estimator interface.

    ``fit`` builds and trains a skorch :class:`~skorch.NeuralNetBinaryClassifier`
    around a torchvision ResNet (kept as ``net_``), so the estimator works with
    ``clone``, ``Pipeline``, ``cross_val_score``, ``GridSearchCV``, pickle and
    joblib. Labels: the larger of the two classes in ``np.unique(y)`` is the
    lens (with ``y`` in {0, 1}: 1 = lens); ``predict_proba(X)[:, 1]`` is the lens
    probability. ``net_.predict_proba(X)`` gives the same, with ``tta`` and
    ``prior`` applied.

    Parameters
    ----------
    arch : {"resnet18", "resnet34", "resnet50"}, default="resnet18"
        torchvision architecture.
    weights : "auto", None, "lens", "imagenet" or path, default="auto"
        Initial weights. ``"auto"``: ``"lens"`` where it exists (ResNet18 with
        the standard stem), else random. ``None``: random (works offline).
        ``"lens"``: the ResNet18 pretrained on simulated lenses that ships with
        lensclf (offline; docs/pretrained.md; its one-logit head is kept). Or torchvision's ImageNet
        weights (needs the network once or the file in torchvision's cache),
        or a local state dict (a torchvision ResNet checkpoint or a
        lensclf-trained network).
    input_size : "auto", int or None, default="auto"
        Images are resized (bilinear) to ``input_size`` x ``input_size`` inside
        the network; ``None`` keeps the native size. ``"auto"``: cutouts larger
        than 64 px (e.g. 101 x 101) are resized to 64, the size the lens
        backbone was pretrained at, and smaller ones keep theirs: on 101 px
        cutouts this costs a third of the CPU time for a test AUC within 0.02
        (docs/benchmarks.md). The fitted size is ``net_.module_.input_size``.
        The notebook recipe used 224.
    stem : {"standard", "small"}, default="standard"
        ResNet input stem; ``"small"`` is a 3x3 stride-1 first convolution
        without max-pool.
    scaling : {"auto", "dataset", "image", "robust"}, default="auto"
        Input scaling inside the network: each band standardised with the
        training set's statistics (``channel_mean_``, ``channel_std_``), or
        each band of each image standardised on its own (the same input for
        min-max scaled and raw cutouts). ``"robust"``: each band of each
        image in units of its sky noise (median and median absolute
        deviation, which bright stars and neighbours do not move),
        arcsinh-stretched, then standardised. ``"auto"``: ``"robust"`` with
        ``weights="lens"`` (the scaling of the weights' last pretraining
        phase, and the best worst-family test AUC), else ``"dataset"``.
    lr : float, default=3e-4
        Learning rate (fine-tuning the lens-pretrained weights; from scratch,
        1e-3 was the former default).
    optimizer : {"adam", "adamw", "sgd"} or torch optimizer class, default="adam"
        Optimizer; ``"sgd"`` uses momentum 0.9. The named ones use torch's
        fused implementation where available (same update, fewer kernels).
    weight_decay : float, default=1e-4
        L2 penalty (decoupled for AdamW).
    batch_size : int, default=64
        Training batch size.
    max_epochs : int, default=10
        Number of passes; with ``balance="sampler"`` one epoch draws as many
        images as the training part holds. On the development family at
        12,000 images, 15 epochs scored 0.006 more test AUC than 10 for 50 %
        more time (about 22-26 min on 2 CPU cores): raise it when time allows
        (docs/benchmarks.md).
    balance : {"sampler", "pos_weight", None}, default="sampler"
        Class-imbalance correction: a balanced ``WeightedRandomSampler`` built
        from this fit's training labels, a positive-class weight in the loss,
        or nothing. Never both.
    augment : bool, default=True
        Random flips, 90-degree rotations and small affine jitter of the
        training batches (never of validation or test data).
    valid_size : float or None, default=0.2
        Fraction of the training data held out (stratified) to score each
        epoch (the history, the plateau schedule, ``early_stopping`` and
        ``keep="best"``); ``None`` trains on everything and keeps the last
        epoch's weights.
    lr_patience : int, default=2
        Epochs without improvement of the validation loss before the learning
        rate is divided by 10 (``ReduceLROnPlateau``).
    lr_schedule : {"plateau", "plateau_auc", "cosine"}, default="plateau"
        ``"plateau"``: ``ReduceLROnPlateau`` as above; ``"plateau_auc"``: the
        same cut when the validation AUC (rank-based, so not moved by the
        validation split's imbalance) has not risen for ``lr_patience``
        epochs (the training AUC without a validation split); ``"cosine"``: one cosine
        decay from ``lr`` to ``lr / 100`` over ``max_epochs`` (no dependence on
        the noisy validation loss; ``lr_patience`` unused).
    early_stopping : int or None, default=None
        Stop after this many epochs without improvement of the validation AUC.
    ema_epochs : float or None, default=1.0
        Weight averaging: keep an exponential moving average of the weights
        (batch-norm statistics included) over about this many epochs, updated
        after every training step (torch's ``AveragedModel``, decay
        ``1 - 1 / (ema_epochs * steps per epoch)``). The average is what each
        epoch validates, what best-epoch selection keeps and what ``fit``
        returns; training itself goes on from the trained weights (a plateau
        ``lr_schedule`` follows the average's validation scores). ``None``:
        no averaging. The default (with ``keep="last"``) was chosen on the
        development family; on the worst held-out family it is within 0.003
        of no averaging at 1,000 images and 0.040 above it at 12,000
        (docs/benchmarks.md).
    keep : {"best", "last"}, default="last"
        Which epoch's (validated) weights ``fit`` returns: the one with the
        best validation AUC, or the last one. Ctrl-C keeps the one this rule
        picks among the completed epochs. Without a validation split, the
        last. Choosing the best epoch on a small validation split (a dozen
        lenses) picks noise; the moving average already smooths the last one.
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
    predict_batch_size : int or None, default=None
        Batch size for inference (and for the validation split while fitting).
        ``None``: 64 on the CPU, 256 on a GPU. On the CPU, batches of 64 keep
        each activation map (16 MiB) under glibc's largest ``mmap`` threshold,
        so its memory is reused instead of mapped and zero-filled again for
        every batch: the same images/s as 256, no page faults and a smaller
        peak memory (``benchmarks/bench_worker_heap.py``, ``docs/scale.md``).
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
        Folder where ``fit`` writes, atomically after every epoch, the whole
        training state (network, optimizer, scheduler, best weights, history,
        random generators, split and preprocessing) to a file of its own,
        ``checkpoint-<key>.pt``, keyed by the training parameters and the data
        (``checkpoint_path_``), so parallel fits (``GridSearchCV(n_jobs=2)``,
        ``cross_val_score``) never share one. ``fit(X, y)`` starts afresh
        (replacing that file); ``fit(X, y, resume=True)`` continues from it
        and, on CPU, ends with the same weights as an uninterrupted fit
        (``max_epochs`` may be raised to train longer; the other training
        parameters and the data must be the same). ``None`` writes nothing.
    callbacks : list or None, default=None
        Extra skorch callbacks (instances or ``(name, callback)`` pairs),
        run after lensclf's own: TensorBoard, MLflow, W&B or your own.
    cpu_fast_paths : bool or "retain_heap", default=True
        On CPU, compute the ResNet with a faster memory layout, stem order and
        tap-wise convolutions on small maps (the same function up to float
        rounding; the saved network is a plain torchvision ResNet).
        ``"retain_heap"`` also keeps freed memory in glibc's heap during
        ``fit`` (process-wide malloc settings, restored afterwards where
        glibc lets them be known). ``False``: torchvision's forward pass.

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
        Epoch whose weights were kept (``keep``: best validation AUC, or the last).
    checkpoint_path_ : str
        The checkpoint file this fit wrote (only with ``checkpoint_dir``).
    """

    _parameter_constraints = PARAMETER_CONSTRAINTS

    def __init__(self, arch="resnet18", weights="auto", input_size="auto", stem="standard", scaling="auto",
                 lr=3e-4, optimizer="adam", weight_decay=1e-4, batch_size=64, max_epochs=10,
                 balance="sampler", augment=True, valid_size=0.2, lr_patience=2, lr_schedule="plateau",
                 early_stopping=None, ema_epochs=1.0, keep="last", tta=False, prior=None, threshold=0.5,
                 predict_batch_size=None, device="auto", random_state=None, verbose=1,
                 checkpoint_dir=None, callbacks=None, cpu_fast_paths=True):
        self.arch = arch
        self.weights = weights
        self.input_size = input_size
        self.stem = stem
        self.scaling = scaling
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.balance = balance
        self.augment = augment
        self.valid_size = valid_size
        self.lr_patience = lr_patience
        self.lr_schedule = lr_schedule
        self.early_stopping = early_stopping
        self.ema_epochs = ema_epochs
        self.keep = keep
        self.tta = tta
        self.prior = prior
        self.threshold = threshold
        self.predict_batch_size = predict_batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = callbacks
        self.cpu_fast_paths = cpu_fast_paths

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = False
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = self.random_state is None
        return tags

    def _check_params(self):
        self._validate_params()
        check_optimizer(self.optimizer)

    # --------------------------------------------------------------- training
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

    def fit(self, X, y, resume=False):
        """Train the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels, height, width), or list of .npy paths
            Images (float or integer pixels), or file paths read lazily in batches.
        y : array-like of shape (n_samples,)
            Two-class labels; the larger label is the lens class.
        resume : bool, default=False
            Continue from this fit's checkpoint in ``checkpoint_dir`` (written
            by an earlier, interrupted ``fit`` on the same data with the same
            parameters) instead of starting afresh. A :class:`ValueError`
            says when there is none or when the folder's checkpoint belongs to
            other data or parameters.

        Returns
        -------
        self

        Notes
        -----
        A :class:`KeyboardInterrupt` (Ctrl-C) during training ends it after
        the epochs completed so far, keeping the weights ``keep`` picks among them;
        before the first epoch has ended, it is raised again.
        """
        self._check_params()
        X = as_images(X)
        self.classes_, y_encoded = check_labels(y, X)
        fingerprint = params = path = restore = None
        if self.checkpoint_dir is not None:
            fingerprint, params = data_fingerprint(X, y_encoded), training_params(self)
            path = checkpoint_path(self.checkpoint_dir, params, fingerprint)
        elif resume:
            raise ValueError("fit(..., resume=True) needs checkpoint_dir: the folder of the checkpoint to resume.")
        if resume:
            restore, path = resume_state(self.checkpoint_dir, params, fingerprint)
            planned = (restore.get("lr_scheduler") or {}).get("T_max")
            if self.lr_schedule == "cosine" and planned is not None and planned != self.max_epochs:
                raise ValueError(f"{path}: this fit's cosine learning-rate schedule was planned over {planned} "
                                 f"epochs; resume it with max_epochs={planned} (got {self.max_epochs}).")
            seed = int(restore["seed"])
            train_idx = restore["train_idx"].numpy()
            valid_idx = None if restore["valid_idx"] is None else restore["valid_idx"].numpy()
        else:
            seed = seed_from(self.random_state)
            train_idx, valid_idx = self._split(y_encoded, seed)
        mean, std = scan_images(X, train_idx)  # also checks every pixel, so it runs on resume too
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        if restore is None:
            self.channel_mean_, self.channel_std_ = mean, std
        else:
            self.channel_mean_ = restore["channel_mean"].numpy()
            self.channel_std_ = restore["channel_std"].numpy()
        self.device_ = resolve_device(self.device)
        self.train_prior_ = 0.5 if self.balance is not None else float(y_encoded[train_idx].mean())
        checkpoint = None
        if path is not None:
            self.checkpoint_path_ = path
            checkpoint = TrainingCheckpoint(path, restore=restore, extra={
                "seed": seed,
                "train_idx": torch.as_tensor(np.asarray(train_idx, dtype=np.int64)),
                "valid_idx": None if valid_idx is None else torch.as_tensor(np.asarray(valid_idx, dtype=np.int64)),
                "channel_mean": torch.as_tensor(self.channel_mean_),
                "channel_std": torch.as_tensor(self.channel_std_),
                "data": fingerprint,
                "params": params,
            })
        with torch.random.fork_rng(devices=[]), retained_heap(self.cpu_fast_paths == "retain_heap"), \
                (FitLock(path) if path is not None else contextlib.nullcontext()), \
                worker_settings(heap=bool(self.cpu_fast_paths)):
            torch.manual_seed(seed)
            net, train_set = build_training_net(self, X, y_encoded, train_idx, valid_idx, seed, checkpoint)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*epoch parameter in `scheduler.step\\(\\)`.*")
                if restore is None:
                    net.fit(train_set, None)
                else:
                    net.initialize()
                    # the optimizer's state first: a scheduler resumed past epoch 0 (cosine) needs its initial_lr
                    net.optimizer_.load_state_dict(restore["optimizer"])
                    net.history = history_from_checkpoint(restore)
                    net.partial_fit(train_set, None, epochs=max(self.max_epochs - int(restore["epoch"]), 0))
        _drop_unfinished_epoch(net, valid_idx is not None)
        self.net_ = net
        self.history_ = net.history
        stopper = dict(net.callbacks_).get("best_weights")
        self.best_epoch_ = int(stopper.best_epoch_) if stopper is not None else len(net.history)
        strip_training_state(net)
        self._apply_prediction_settings()
        return self

    # ------------------------------------------------------------- prediction
    def _apply_prediction_settings(self):
        """Give ``net_`` this estimator's ``cpu_fast_paths``, ``tta``, ``prior`` and ``predict_batch_size``."""
        module = self.net_.module_
        module.fast_paths = bool(self.cpu_fast_paths) and torch.device(self.device_).type == "cpu"
        module.tta = bool(self.tta)
        module.logit_shift = 0.0 if self.prior is None else (
            math.log(self.prior / (1 - self.prior)) - math.log(self.train_prior_ / (1 - self.train_prior_)))
        self.net_.iterator_valid__batch_size = inference_batch_size(self.predict_batch_size, self.device_)

    def _prepared_net(self, X):
        """The fitted net with this estimator's prediction settings, and ``X`` checked."""
        check_is_fitted(self, "net_")
        check_prediction_params(self)
        X = as_images(X)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has images of shape {tuple(X.shape[1:])} (channels, height, width), but this "
                f"model was trained on {self.input_shape_}. Resample or select bands to match."
            )
        self._apply_prediction_settings()
        return self.net_, LensDataset(X, check_finite=True)

    def decision_function(self, X):
        """Lens logits (log-odds under the training prior, or ``prior`` if set).

        For a ``dask.array`` ``X``: a lazy dask array of logits, block by block (also in
        :meth:`predict_proba` and :meth:`predict`).
        """
        if is_dask_array(X):
            return dask_scores(self, X, "decision")
        net, dataset = self._prepared_net(X)
        with torch.inference_mode():
            logits = torch.cat([out.float().cpu() for out in net.forward_iter(dataset, training=False)])
        return logits.numpy().astype(np.float64)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, 2); column 1 is the lens probability.

        The probabilities refer to the lens prior ``prior`` when it is set, else
        to the prior the model was trained under (``train_prior_``, 0.5 with
        a balanced sampler or ``pos_weight``).
        """
        if is_dask_array(X):
            return dask_scores(self, X, "proba")
        p_lens = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p_lens, p_lens])

    def predict(self, X):
        """Predicted class labels: lens where the lens probability is at least ``threshold``."""
        if is_dask_array(X):
            return dask_scores(self, X, "predict")
        p_lens = self.predict_proba(X)[:, 1]
        return self.classes_[(p_lens >= self.threshold).astype(int)]

    # ------------------------------------------------------------ persistence
    def save(self, path, overwrite=False, metadata=None, training_data=None):
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
        training_data : dict or None, default=None
            A JSON-serialisable summary of the training data, read back under
            ``"training_data"``.

        Returns
        -------
        str
            The path written.
        """
        check_is_fitted(self, "net_")
        fitted = {
            "classes": self.classes_, "input_shape": self.input_shape_, "channel_mean": self.channel_mean_,
            "channel_std": self.channel_std_, "train_prior": self.train_prior_, "best_epoch": self.best_epoch_,
            "device": self.device_,
        }
        return write_model(path, type(self).__name__, self.get_params(deep=False), fitted, self.net_.module_,
                           self.history_, overwrite=overwrite, extra=metadata, training_data=training_data)

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
        saved = read_model(path, known_params=cls().get_params(deep=False))
        clf = cls(**{**saved.params, "device": device})
        try:
            clf._check_params()
        except ValueError as exc:
            raise ValueError(f"{saved.path}: corrupt lensclf model file: invalid saved parameters ({exc}).") from exc
        device_ = resolve_device(device)
        fitted = saved.fitted
        try:
            with torch.device("meta"):  # no memory, no random initialisation: the file's tensors come next
                module = LensNet(**saved.network, channel_mean=fitted["channel_mean"],
                                 channel_std=fitted["channel_std"],
                                 fast_paths=bool(clf.cpu_fast_paths) and torch.device(device_).type == "cpu")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{saved.path}: corrupt lensclf model file: bad network description ({exc}).") from exc
        saved.load_into(module)
        clf.classes_ = fitted["classes"]
        clf.input_shape_ = fitted["input_shape"]
        clf.channel_mean_ = fitted["channel_mean"]
        clf.channel_std_ = fitted["channel_std"]
        clf.train_prior_ = fitted["train_prior"]
        clf.best_epoch_ = fitted["best_epoch"]
        clf.device_ = device_
        clf.net_ = build_inference_net(clf, module, device_)
        clf.net_.history = saved.history
        clf.history_ = clf.net_.history
        clf._apply_prediction_settings()
        return clf


def _drop_unfinished_epoch(net, has_valid):
    """Remove the history row of an epoch cut short by Ctrl-C; re-raise if no epoch ended."""
    needed = {"dur", "train_loss", "train_auc", "lr"} | ({"valid_loss", "valid_auc"} if has_valid else set())
    while len(net.history) and not needed <= set(net.history[-1]):
        net.history.pop()
    if not len(net.history):
        raise KeyboardInterrupt("training was interrupted before its first epoch ended")


def save_model(clf, path, *, overwrite=False, extra_metadata=None, training_data=None):
    """Save a fitted :class:`LensClassifier` to one safetensors file (see :meth:`LensClassifier.save`).

    The file holds the network weights as tensors and, in its header, a JSON
    document with the parameters, fitted state, training history and metadata
    (:mod:`lensclf._modelfile` describes the layout). Loading it never runs
    code; it is written atomically. Recommended name: ``model.safetensors``.

    Raises
    ------
    TypeError
        ``clf`` is not a LensClassifier, or the metadata is not JSON-serialisable.
    sklearn.exceptions.NotFittedError
        ``clf`` is not fitted.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(clf, LensClassifier):
        raise TypeError(f"save_model saves a LensClassifier; got {type(clf).__name__}.")
    return clf.save(path, overwrite=overwrite, metadata=extra_metadata, training_data=training_data)


def load_model(path, device="auto"):
    """Load a :class:`LensClassifier` saved by :func:`save_model` (see :meth:`LensClassifier.load`).

    The classifier is fitted and predicts exactly as the saved one did. Only
    numbers and text are read from the file, so files from others are safe
    to load. ``device="auto"`` picks CUDA when available, else the CPU.
    """
    return LensClassifier.load(path, device=device)
