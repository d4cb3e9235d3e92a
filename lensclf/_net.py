"""The one place that builds the skorch network of a :class:`~lensclf.LensClassifier`.

``fit`` calls :func:`build_training_net` (data, sampler, augmentation, callbacks);
loading a model file calls :func:`build_inference_net` around the module it
read. Both take their settings from the estimator's parameters through
:func:`net_kwargs`, so a loaded model is configured exactly like a trained one.
"""

import copy
import functools
import os
import sys

import torch
from skorch import NeuralNetBinaryClassifier
from skorch.callbacks import EarlyStopping, EpochScoring, LRScheduler, PrintLog, ProgressBar
from skorch.helper import predefined_split
from skorch.utils import noop

from ._averaging import WeightAveraging, ema_decay
from ._checkpoint import TrainingCheckpoint, _callback
from ._dataset import LensDataset, batch_as_is
from ._models import LensNet, resolve_input_size, resolve_scaling, resolve_weights
from ._sampling import balanced_sampler, positive_weight
from ._transforms import BatchAugmenter
from ._validation import as_images, check_optimizer

__all__ = ["CPU_PREDICT_BATCH_SIZE", "GPU_PREDICT_BATCH_SIZE", "KeptWeights", "LensNeuralNet", "build_inference_net",
           "build_training_net", "inference_batch_size", "module_kwargs", "net_kwargs", "strip_training_state"]


@functools.lru_cache(maxsize=None)
def _fused_supported(optimizer, device):
    """Whether ``optimizer(..., fused=True)`` works on ``device`` with this torch (CPU: torch >= 2.4)."""
    try:
        optimizer([torch.zeros(1, device=device, requires_grad=True)], lr=0.1, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def colour_wanted(stream=None):
    """Colour in the epoch table only on a terminal, and never with ``NO_COLOR`` set (no-color.org)."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class EpochTable(PrintLog):
    """skorch's epoch table, with the best values coloured only where :func:`colour_wanted` says so."""

    def format_row(self, row, key, color):
        if key + "_best" in row and not colour_wanted():
            row = {name: value for name, value in row.items() if name != key + "_best"}
        return super().format_row(row, key, color)


class KeptWeights(EarlyStopping):
    """skorch's early stopping on the validation AUC, keeping the weights of the best epoch or of the last one.

    ``keep="best"`` is :class:`~skorch.callbacks.EarlyStopping` with ``load_best``;
    ``keep="last"`` stops (with ``patience``) on the same AUC but keeps the weights
    of the last completed epoch, which ``on_train_end`` restores after an
    interruption. ``best_epoch_`` is the epoch whose weights are kept.
    """

    def __init__(self, keep="best", **kwargs):
        super().__init__(load_best=True, **kwargs)
        self.keep = keep

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        finally:  # also when it stops training (by raising KeyboardInterrupt)
            if self.keep == "last":
                self.best_epoch_ = net.history[-1, "epoch"]
                self.best_model_weights_ = copy.deepcopy(net.module_.state_dict())


class LensNeuralNet(NeuralNetBinaryClassifier):
    """skorch's binary classifier, reading images as :class:`~lensclf.LensClassifier` does.

    ``net_.predict_proba(X)`` therefore takes the same inputs (arrays, memory
    maps, file lists) and gives the same probabilities as the estimator.
    """

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.utils.data.Dataset):
            return X
        return LensDataset(as_images(X), y, check_finite=y is None)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        averaging = None if training else _callback(self, WeightAveraging)
        if averaging is not None:  # validate the averaged weights (they stay in until the next epoch begins)
            averaging.swap_in(self)
        return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)


def optimizer_kwargs(estimator, device):
    """skorch's ``optimizer*`` arguments for the estimator's ``optimizer`` and ``weight_decay``."""
    optimizer = check_optimizer(estimator.optimizer)
    kwargs = {"optimizer": optimizer, "optimizer__weight_decay": estimator.weight_decay}
    if isinstance(estimator.optimizer, str):
        if optimizer is torch.optim.SGD:
            kwargs["optimizer__momentum"] = 0.9
        if _fused_supported(optimizer, device):
            kwargs["optimizer__fused"] = True
    return kwargs


def module_kwargs(estimator, image_shape, channel_mean, channel_std, device):
    """:class:`~lensclf._models.LensNet` arguments from the estimator's parameters.

    ``image_shape`` is ``(n_channels, height, width)`` of the training images.
    """
    weights = resolve_weights(estimator.weights, estimator.arch, estimator.stem)
    in_channels, height, width = image_shape
    return dict(arch=estimator.arch, weights=weights, in_channels=int(in_channels),
                stem=estimator.stem, input_size=resolve_input_size(estimator.input_size, max(height, width)),
                scaling=resolve_scaling(estimator.scaling, weights),
                channel_mean=[float(v) for v in channel_mean], channel_std=[float(v) for v in channel_std],
                fast_paths=bool(estimator.cpu_fast_paths) and torch.device(device).type == "cpu")


#: Inference batch size on the CPU when ``predict_batch_size`` is None: activation maps of 16 MiB at
#: 64 x 64 pixels, under glibc's largest dynamic ``mmap`` threshold (32 MiB), so they are reused (no page faults).
CPU_PREDICT_BATCH_SIZE = 64
#: ... and on a GPU.
GPU_PREDICT_BATCH_SIZE = 256


def inference_batch_size(predict_batch_size, device):
    """The inference batch size: ``predict_batch_size``, or when it is None the default for ``device``."""
    if predict_batch_size is not None:
        return int(predict_batch_size)
    return CPU_PREDICT_BATCH_SIZE if torch.device(device).type == "cpu" else GPU_PREDICT_BATCH_SIZE


def net_kwargs(estimator, device):
    """The skorch arguments shared by training and inference nets."""
    kwargs = dict(
        criterion=torch.nn.BCEWithLogitsLoss,
        lr=estimator.lr,
        max_epochs=estimator.max_epochs,
        batch_size=estimator.batch_size,
        device=device,
        iterator_valid__collate_fn=batch_as_is,
        iterator_valid__batch_size=inference_batch_size(estimator.predict_batch_size, device),
        callbacks__print_log=EpochTable(),
        verbose=int(estimator.verbose),
        **optimizer_kwargs(estimator, device),
    )
    if torch.device(device).type == "cuda":
        kwargs["iterator_train__pin_memory"] = True
        kwargs["iterator_valid__pin_memory"] = True
    return kwargs


def _callbacks(estimator, has_valid, checkpoint, steps_per_epoch):
    callbacks = [("train_auc", EpochScoring("roc_auc", lower_is_better=False, on_train=True, name="train_auc"))]
    if estimator.ema_epochs is not None:
        # before the scorers and early stopping: they see (and keep) the averaged weights
        callbacks.append(("weight_averaging", WeightAveraging(ema_decay(estimator.ema_epochs, steps_per_epoch))))
    if has_valid:
        callbacks.append(("valid_auc", EpochScoring("roc_auc", lower_is_better=False, name="valid_auc")))
    if estimator.lr_schedule == "cosine":  # one cosine decay over the planned epochs
        scheduler = LRScheduler(policy="CosineAnnealingLR", T_max=estimator.max_epochs,
                                eta_min=0.01 * estimator.lr, event_name="lr")
    else:  # cut by 10 when the (validation) loss stops falling, or with "plateau_auc" the AUC stops rising
        score, mode = ("auc", "max") if estimator.lr_schedule == "plateau_auc" else ("loss", "min")
        scheduler = LRScheduler(policy="ReduceLROnPlateau", monitor=f"{'valid' if has_valid else 'train'}_{score}",
                                mode=mode, patience=estimator.lr_patience, factor=0.1, event_name="lr")
    callbacks.append(("lr_scheduler", scheduler))
    if has_valid:
        patience = estimator.early_stopping if estimator.early_stopping is not None else estimator.max_epochs + 1
        callbacks.append(("best_weights", KeptWeights(
            keep=estimator.keep, monitor="valid_auc", lower_is_better=False, patience=patience, threshold=0.0,
            sink=print if estimator.verbose else noop)))
    if estimator.verbose:
        callbacks.append(("progress_bar", ProgressBar(postfix_keys=["train_loss"])))
    for index, callback in enumerate(estimator.callbacks or []):  # the user's, after lensclf's own
        name = callback[0] if isinstance(callback, tuple) else f"user_{index}_{type(callback).__name__}"
        callbacks.append(callback if isinstance(callback, tuple) else (name, callback))
    if checkpoint is not None:
        # last: it restores a resumed state after the scheduler and early stopping set themselves up
        callbacks.append(("checkpoint", checkpoint))
    return callbacks


def build_training_net(estimator, X, y, train_idx, valid_idx, seed, checkpoint=None):
    """The skorch net that ``fit`` trains, and its training dataset.

    The training subset is drawn by a balanced sampler (or shuffled), and
    augmented batch by batch; the validation subset scores every epoch (the
    moving average of the weights, with ``ema_epochs``).
    """
    has_valid = valid_idx is not None
    drop_last = len(train_idx) > estimator.batch_size
    steps_per_epoch = len(train_idx) // estimator.batch_size if drop_last else 1
    kwargs = net_kwargs(estimator, estimator.device_)
    kwargs.update(
        module=LensNet,
        **{f"module__{name}": value for name, value in module_kwargs(
            estimator, X.shape[1:], estimator.channel_mean_, estimator.channel_std_, estimator.device_).items()},
        train_split=predefined_split(LensDataset(X, y, valid_idx)) if has_valid else None,
        callbacks=_callbacks(estimator, has_valid, checkpoint, steps_per_epoch),
        callbacks__valid_acc=None,
        iterator_train__collate_fn=BatchAugmenter(seed=seed + 1) if estimator.augment else batch_as_is,
        iterator_train__drop_last=drop_last,
    )
    y_train = y[train_idx]
    if estimator.balance == "sampler":
        kwargs["iterator_train__sampler"] = balanced_sampler(y_train, seed + 2)
    else:
        kwargs["iterator_train__shuffle"] = True
        kwargs["iterator_train__generator"] = torch.Generator().manual_seed(seed + 2)
        if estimator.balance == "pos_weight":
            kwargs["criterion__pos_weight"] = torch.tensor(positive_weight(y_train))
    return LensNeuralNet(**kwargs), LensDataset(X, y, train_idx)


def build_inference_net(estimator, module, device):
    """A skorch net around an already built (e.g. loaded) module, ready to predict."""
    kwargs = net_kwargs(estimator, device)
    kwargs.update(module=module, train_split=None, verbose=0)
    net = LensNeuralNet(**kwargs)
    net.initialize()
    net.module_.eval()
    return net


def strip_training_state(net):
    """Forget what only training needs, so fitted models stay small and hold no data.

    The validation data, the sampler, the optimizer's moment estimates, the
    weight average and the best-weights copy would otherwise be pickled with the estimator.
    """
    for _, callback in net.callbacks_:
        if isinstance(callback, EarlyStopping):
            callback.best_model_weights_ = None
        if isinstance(callback, LRScheduler):
            callback.lr_scheduler_ = None  # refers to the optimizer, pickled apart from the net
        if isinstance(callback, (TrainingCheckpoint, WeightAveraging)):
            callback.release()
    net.optimizer_.state.clear()
    # (skorch keeps these as plain attributes; set_params would re-initialise the net.)
    net.train_split = None
    if hasattr(net, "iterator_train__sampler"):
        net.iterator_train__sampler = None
