"""Epoch checkpoints: save the whole training state after each epoch and resume from it.

:class:`TrainingCheckpoint` is a skorch callback that
:class:`~lensclf.LensClassifier` adds when ``checkpoint_dir`` is set. After
every epoch it writes, atomically, one file ``checkpoint_dir/checkpoint.pt``
holding plain tensors, numbers, strings, lists and dicts only (so it reads
back with ``torch.load(weights_only=True)``, which never runs code): the
network, optimizer, learning-rate scheduler and best-weights (early stopping)
states, the history, the random generators of the sampler, of the augmenter
and of torch, and whatever the classifier adds (seed, split, preprocessing,
fingerprints of the data and parameters).

Resuming restores all of it at the start of the next epoch, so training goes
on with the same batches, augmentations and weights as without the stop.
"""

import hashlib
import json
import os

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.history import History

from ._transforms import BatchAugmenter

__all__ = [
    "CHECKPOINT_FILE_NAME",
    "TrainingCheckpoint",
    "data_fingerprint",
    "history_from_checkpoint",
    "read_checkpoint",
]

#: Name of the checkpoint file inside ``checkpoint_dir``.
CHECKPOINT_FILE_NAME = "checkpoint.pt"
_FORMAT = 1
_EARLY_STOPPING_FIELDS = ("misses_", "dynamic_threshold_", "best_epoch_")


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)  # json writes NaN and Infinity and reads them back
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _json_safe(np.asarray(value).tolist())
    return repr(value)


def data_fingerprint(X, y):
    """A cheap identity of a training set: size, image shape, labels and a few images.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_channels, height, width)
        Images (an array or a lazily read file array).
    y : array of int
        Encoded labels.

    Returns
    -------
    dict
        ``n_samples``, ``image_shape`` and ``sha256`` (labels plus the first,
        middle and last images).
    """
    n = len(X)
    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(y, dtype=np.int64)).tobytes())
    for index in sorted({0, n // 2, n - 1}):
        digest.update(np.ascontiguousarray(np.asarray(X[index], dtype=np.float32)).tobytes())
    return {"n_samples": int(n), "image_shape": [int(s) for s in X.shape[1:]], "sha256": digest.hexdigest()}


def _generators(net):
    """The random generators of the training data loader, by role."""
    found = {}
    sampler = getattr(net, "iterator_train__sampler", None)
    if getattr(sampler, "generator", None) is not None:
        found["sampler"] = sampler.generator
    if getattr(net, "iterator_train__generator", None) is not None:
        found["shuffle"] = net.iterator_train__generator
    collate = getattr(net, "iterator_train__collate_fn", None)
    if isinstance(collate, BatchAugmenter):
        found["augmenter"] = collate.generator
    return found


def _callback(net, kind):
    for _, callback in net.callbacks_:
        if isinstance(callback, kind):
            return callback
    return None


def read_checkpoint(path):
    """Read a checkpoint file written by :class:`TrainingCheckpoint` (no code is run).

    Raises
    ------
    ValueError
        If the file is not a lensclf checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable lensclf checkpoint ({exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a lensclf checkpoint (format {_FORMAT}).")
    return state


class TrainingCheckpoint(Callback):
    """Write the full training state after each epoch; optionally restore one first.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of ``checkpoint.pt`` (created if missing).
    extra : dict
        Plain data saved alongside (tensors, numbers, strings, lists, dicts).
    restore : dict or None
        A state read by :func:`read_checkpoint`, loaded into the net at the
        start of training, after the other callbacks have set themselves up
        (so this callback must come after the scheduler and early stopping).
    """

    def __init__(self, directory, extra=None, restore=None):
        self.directory = directory
        self.extra = extra
        self.restore = restore

    @property
    def path(self):
        """Path of the checkpoint file."""
        return os.path.join(os.fspath(self.directory), CHECKPOINT_FILE_NAME)

    def release(self):
        """Forget the data kept for saving and restoring (before pickling a fitted model)."""
        self.extra = None
        self.restore = None

    def on_train_begin(self, net, **kwargs):
        state, self.restore = self.restore, None
        if state is None:
            return
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        scheduler = _callback(net, LRScheduler)
        if scheduler is not None and state.get("lr_scheduler") is not None:
            scheduler.lr_scheduler_.load_state_dict(state["lr_scheduler"])
        stopper = _callback(net, EarlyStopping)
        if stopper is not None and state.get("early_stopping") is not None:
            saved = state["early_stopping"]
            for name in _EARLY_STOPPING_FIELDS:
                setattr(stopper, name, saved[name])
            stopper.best_model_weights_ = saved["best_model_weights"]
        for role, generator in _generators(net).items():
            generator.set_state(state["generators"][role])
        torch.set_rng_state(state["torch_rng"])

    def on_epoch_end(self, net, **kwargs):
        history = [{k: v for k, v in row.items()} for row in net.history]
        state = dict(self.extra or {})
        state.update(
            format=_FORMAT,
            epoch=len(net.history),
            module=net.module_.state_dict(),
            optimizer=net.optimizer_.state_dict(),
            history=json.dumps(_json_safe(history)),
            generators={role: g.get_state() for role, g in _generators(net).items()},
            torch_rng=torch.get_rng_state(),
        )
        scheduler = _callback(net, LRScheduler)
        state["lr_scheduler"] = (
            scheduler.lr_scheduler_.state_dict() if scheduler is not None and scheduler.lr_scheduler_ is not None
            else None)
        stopper = _callback(net, EarlyStopping)
        if stopper is not None:
            saved = {name: _plain(getattr(stopper, name)) for name in _EARLY_STOPPING_FIELDS}
            saved["best_model_weights"] = stopper.best_model_weights_
            state["early_stopping"] = saved
        from ._io import atomic_write  # (not at the top: _io imports the classifier, which imports this)

        os.makedirs(self.directory, exist_ok=True)
        with atomic_write(self.path, "wb") as handle:
            torch.save(state, handle)


def _plain(value):
    """A Python number for numpy scalars (``torch.load(weights_only=True)`` refuses numpy)."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def history_from_checkpoint(state):
    """The skorch :class:`~skorch.history.History` saved in a checkpoint."""
    return History(json.loads(state["history"]))
