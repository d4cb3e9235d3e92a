"""Epoch checkpoints: save the whole training state after each epoch and resume from it.

:class:`TrainingCheckpoint` is a skorch callback that
:class:`~lensclf.LensClassifier` adds when ``checkpoint_dir`` is set. After
every epoch it writes, atomically, one file per fit,
``checkpoint_dir/checkpoint-<key>.pt``, where the key is a hash of the
training parameters and of the data's fingerprint: the clones that
``cross_val_score`` or ``GridSearchCV(n_jobs=2)`` fit at the same time write
different files, and ``fit(..., resume=True)`` finds its own. A lock file
beside it refuses a second live fit of the very same parameters and data. The
file holds plain tensors, numbers, strings, lists and dicts only (so it reads
back with ``torch.load(weights_only=True)``, which never runs code): the
network (its trained weights), optimizer, learning-rate scheduler, weight
average and best-weights (early stopping) states, the history, the random generators of the sampler, of the augmenter
and of torch, and whatever the classifier adds (seed, split, preprocessing,
fingerprints of the data and parameters).

Resuming restores all of it at the start of the next epoch, so training goes
on with the same batches, augmentations and weights as without the stop.
"""

import hashlib
import json
import numbers
import os
import socket

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.history import History

from ._averaging import WeightAveraging
from ._files import atomic_write
from ._transforms import BatchAugmenter

__all__ = [
    "FitLock",
    "TrainingCheckpoint",
    "checkpoint_path",
    "data_fingerprint",
    "history_from_checkpoint",
    "read_checkpoint",
    "resume_state",
    "training_params",
]

#: Checkpoint file names inside ``checkpoint_dir``: ``checkpoint-<key>.pt``.
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "checkpoint-", ".pt"
#: Parameters that do not change what training does (they only affect prediction or output);
#: max_epochs may change between an interrupted fit and its resumption (to train longer).
NOT_TRAINING_PARAMS = ("verbose", "checkpoint_dir", "device", "tta", "prior", "threshold",
                       "predict_batch_size", "max_epochs", "callbacks")
_FORMAT = 1
#: Parameters added after checkpoints were first written, with the value that means "as before": left out of
#: the key at that value, so checkpoints written before they existed still resume.
ADDED_PARAMS = {"ema_epochs": None, "keep": "best"}
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


def training_params(estimator):
    """The training parameters as a JSON string, to tell whether a checkpoint belongs to them."""
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if name in NOT_TRAINING_PARAMS or (name in ADDED_PARAMS and value == ADDED_PARAMS[name]):
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


def checkpoint_path(directory, params, fingerprint):
    """The checkpoint file of the fit with training parameters ``params`` on data ``fingerprint``."""
    key = hashlib.sha256(json.dumps([params, fingerprint], sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(os.fspath(directory), f"{CHECKPOINT_PREFIX}{key}{CHECKPOINT_SUFFIX}")


def _checkpoints_in(directory):
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.startswith(CHECKPOINT_PREFIX) and n.endswith(CHECKPOINT_SUFFIX)]


def resume_state(directory, params, fingerprint):
    """``(state, path)`` of the checkpoint a resumed fit continues from, or a clear :class:`ValueError`.

    When this fit's own file is missing but the folder holds checkpoints of
    other fits, the message says how the closest one differs (data or
    parameters).
    """
    directory = os.fspath(directory)
    path = checkpoint_path(directory, params, fingerprint)
    if os.path.isfile(path):
        return read_checkpoint(path), path
    others = _checkpoints_in(directory)
    if not others:
        raise ValueError(f"No checkpoint to resume from in {directory!r} (training stopped before its first "
                         "epoch ended, or never ran there).")
    other = max(others, key=os.path.getmtime)
    state = read_checkpoint(other)
    if state["data"] != fingerprint:
        raise ValueError(
            f"{other}: the checkpoint in this folder was written while training on other data "
            f"({state['data']['n_samples']} images of shape {tuple(state['data']['image_shape'])}); "
            f"resume with the same X and y (got {fingerprint['n_samples']} images of shape "
            f"{tuple(fingerprint['image_shape'])}).")
    saved, current = json.loads(state["params"]), json.loads(params)
    changed = sorted(name for name in set(saved) | set(current) if saved.get(name) != current.get(name))
    details = ", ".join(f"{name}={saved.get(name)!r} (now {current.get(name)!r})" for name in changed)
    raise ValueError(f"{other}: the checkpoint in this folder was written with other parameters: {details}; "
                     "resume with the same parameters.")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FitLock:
    """``<checkpoint>.lock`` for the time one fit writes a checkpoint file: a second live fit is refused.

    A lock left by a process that no longer runs (on this host) is taken over.
    """

    def __init__(self, path):
        self.path = f"{path}.lock"
        self._owned = False

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.path, encoding="utf-8") as handle:
                        host, _, pid = handle.read().strip().rpartition(" ")
                    pid = int(pid)
                except (OSError, ValueError):
                    host, pid = None, None
                if host == socket.gethostname() and pid is not None and not _alive(pid):
                    try:
                        os.unlink(self.path)  # stale: its process is gone
                    except FileNotFoundError:
                        pass
                    continue
                raise RuntimeError(
                    f"{self.path}: another fit ({host or 'unknown host'}, process {pid}) is training with the same "
                    "parameters on the same data and writes this checkpoint; wait for it, or give this fit its "
                    "own checkpoint_dir.") from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(me)
            self._owned = True
            return self
        raise RuntimeError(f"{self.path}: could not take the checkpoint lock.")

    def __exit__(self, *exc_info):
        if self._owned:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._owned = False


class TrainingCheckpoint(Callback):
    """Write the full training state after each epoch; optionally restore one first.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (its folder is created if missing).
    extra : dict
        Plain data saved alongside (tensors, numbers, strings, lists, dicts).
    restore : dict or None
        A state read by :func:`read_checkpoint`, loaded into the net at the
        start of training, after the other callbacks have set themselves up
        (so this callback must come after the scheduler and early stopping).
    """

    def __init__(self, path, extra=None, restore=None):
        self.path = os.fspath(path)
        self.extra = extra
        self.restore = restore

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
        averaging = _callback(net, WeightAveraging)
        if averaging is not None:
            averaging.load_state_dict(state["weight_average"])
        scheduler = _callback(net, LRScheduler)
        if scheduler is not None and state.get("lr_scheduler") is not None:
            scheduler.lr_scheduler_.load_state_dict(state["lr_scheduler"])
        stopper = _callback(net, EarlyStopping)
        if stopper is not None and state.get("early_stopping") is not None:
            saved = state["early_stopping"]
            for name in _EARLY_STOPPING_FIELDS:
                setattr(stopper, name, saved[name])
            stopper.best_model_weights_ = saved["best_model_weights"]
        for name, callback in net.callbacks_:  # the scorers' best values so far (skorch's losses keep no history of them)
            if name in state.get("best_scores", {}):
                callback.best_score_ = state["best_scores"][name]
        for role, generator in _generators(net).items():
            generator.set_state(state["generators"][role])
        torch.set_rng_state(state["torch_rng"])

    def on_epoch_end(self, net, **kwargs):
        history = [{k: v for k, v in row.items()} for row in net.history]
        averaging = _callback(net, WeightAveraging)
        state = dict(self.extra or {})
        state.update(
            format=_FORMAT,
            epoch=len(net.history),
            # the trained weights (the network holds the average between validation and the next epoch)
            module=net.module_.state_dict() if averaging is None else averaging.live_state_dict(net),
            weight_average=None if averaging is None else averaging.state_dict(),
            optimizer=net.optimizer_.state_dict(),
            history=json.dumps(_json_safe(history)),
            generators={role: g.get_state() for role, g in _generators(net).items()},
            torch_rng=torch.get_rng_state(),
        )
        state["best_scores"] = {name: _plain(callback.best_score_) for name, callback in net.callbacks_
                                if isinstance(getattr(callback, "best_score_", None), (int, float, np.number))}
        scheduler = _callback(net, LRScheduler)
        state["lr_scheduler"] = (
            scheduler.lr_scheduler_.state_dict() if scheduler is not None and scheduler.lr_scheduler_ is not None
            else None)
        stopper = _callback(net, EarlyStopping)
        if stopper is not None:
            saved = {name: _plain(getattr(stopper, name)) for name in _EARLY_STOPPING_FIELDS}
            saved["best_model_weights"] = stopper.best_model_weights_
            state["early_stopping"] = saved
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
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
