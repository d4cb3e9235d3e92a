"""Dask: scores of ``dask.array`` inputs block by block, and torch threads that fit a dask worker.

Optional (``pip install "lensclf[dask]"``): nothing here imports dask until a
dask array or a cluster is used.

- :func:`dask_scores` is what ``LensClassifier.predict_proba`` /
  ``decision_function`` / ``predict`` return for a dask array: a lazy dask
  array, one block of scores per block of rows (the dask-ml ``ParallelPostFit``
  convention). The fitted classifier is pickled once into a single graph key
  that every block depends on, so a worker receives it once, and each worker
  process unpickles it once (:func:`cached_model`, keyed by its SHA-256).
- :func:`worker_settings` gives torch the share of the machine's cores that
  fits the worker it runs in: ``cores // threads of all workers on that host``
  (one torch thread per dask thread when the workers fill the machine), and
  keeps freed memory in the worker's heap while the task runs
  (:func:`lensclf._cpu.retained_heap`, unless ``cpu_fast_paths=False``). A
  dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``
  (``distributed.nanny.pre-spawn-environ``), which turns off glibc's dynamic
  ``mmap`` threshold: every activation buffer is then mapped and zero-filled
  again for every batch: 4-5 times the page faults per image of a plain
  process and 0.5-0.65 of its images/s (``docs/scale.md``). Fits (``GridSearchCV`` under
  ``joblib.parallel_backend("dask")``) and scoring tasks use it; outside a
  dask worker it changes nothing.
"""

import contextlib
import hashlib
import os
import pickle
import threading
from urllib.parse import urlparse

import numpy as np
import torch

from ._cpu import retained_heap

__all__ = ["cached_model", "dask_scores", "host_threads", "is_dask_array", "model_blob", "worker_settings"]

_MODELS = {}
_MODELS_LOCK = threading.Lock()
_MODELS_MAX = 4


def _require(name):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        raise ImportError(f"dask arrays and clusters need dask and distributed: pip install 'lensclf[dask]' "
                          f"({name} is missing)") from None


def is_dask_array(X):
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "map_blocks") and hasattr(X, "chunks")


def model_blob(clf):
    """``(bytes, sha256)`` of the pickled fitted classifier."""
    blob = pickle.dumps(clf, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, hashlib.sha256(blob).hexdigest()


def cached_model(blob, digest):
    """The classifier pickled in ``blob``, unpickled once per process (keyed by ``digest``)."""
    with _MODELS_LOCK:
        clf = _MODELS.get(digest)
        if clf is None:
            if len(_MODELS) >= _MODELS_MAX:
                _MODELS.clear()
            clf = _MODELS[digest] = pickle.loads(blob)  # noqa: S301 - made by model_blob in this run
        return clf


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def host_threads(client=None):
    """``{host: dask threads of all its workers}`` of ``client`` (default: the current one); ``{}`` without one."""
    if client is None:
        try:
            from distributed import get_client
            client = get_client()
        except (ImportError, ValueError, RuntimeError, OSError):
            return {}
    try:
        workers = client.scheduler_info()["workers"]
    except (ValueError, RuntimeError, OSError):
        return {}
    threads = {}
    for address, info in workers.items():
        host = urlparse(address).hostname
        threads[host] = threads.get(host, 0) + int(info.get("nthreads", 1))
    return threads


def _budget(threads_by_host=None):
    """Torch threads for a task in the current dask worker, or None outside one."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return None
    if not threads_by_host:
        threads_by_host = _worker_host_threads()
    total = threads_by_host.get(urlparse(worker.address).hostname) or worker.state.nthreads
    return max(1, _cpu_count() // max(1, total))


_HOST_THREADS = {}


def _worker_host_threads():
    """:func:`host_threads` as seen from this worker process, asked once."""
    if "table" not in _HOST_THREADS:
        _HOST_THREADS["table"] = host_threads()
    return _HOST_THREADS["table"]


_SET_THREADS = threading.Lock()


@contextlib.contextmanager
def worker_settings(threads_by_host=None, heap=True):
    """Inside a dask worker: torch uses the worker's share of the host's cores, and with ``heap`` freed
    memory stays in the worker's heap until the block ends (see the module notes).

    The thread setting is per process and left in place (every task of the worker wants the same), so
    tasks running at once in one worker never undo each other's setting; the heap setting is shared by
    the tasks running at once and put back by the last to end. Outside a worker: nothing changes.
    """
    budget = _budget(threads_by_host)
    if budget is None:
        yield
        return
    if budget != torch.get_num_threads():
        with _SET_THREADS:
            torch.set_num_threads(budget)
    with retained_heap(heap):
        yield


def _score_block(block, blob, digest, kind, threads_by_host):
    block = np.asarray(block)
    if block.shape[0] == 0:
        shape = (0, 2) if kind == "proba" else (0,)
        return np.zeros(shape, dtype=np.float64 if kind != "predict" else object)
    clf = cached_model(blob, digest)
    with worker_settings(threads_by_host, heap=bool(clf.cpu_fast_paths)):
        if kind == "decision":
            return clf.decision_function(block)
        if kind == "proba":
            return clf.predict_proba(block)
        return clf.predict(block)


def dask_scores(clf, X, kind):
    """A lazy dask array of ``clf``'s scores of the dask array ``X`` (N, bands, H, W), block by block.

    ``kind``: ``"decision"`` (N,), ``"proba"`` (N, 2) or ``"predict"`` (N,).
    """
    dask = _require("dask")
    _require("dask.array")
    if X.ndim != 4:
        raise ValueError(f"X must be a 4-D dask array (n_samples, bands, height, width); got shape {X.shape}")
    if tuple(X.shape[1:]) != tuple(clf.input_shape_):
        raise ValueError(f"X has images of shape {tuple(X.shape[1:])}, but this model was trained on "
                         f"{tuple(clf.input_shape_)}.")
    X = X.rechunk({1: -1, 2: -1, 3: -1})  # one block per run of rows
    blob, digest = model_blob(clf)
    model = dask.delayed(blob, name=f"lensclf-model-{digest[:16]}")  # one key: sent to each worker once
    table = host_threads()
    if kind == "proba":
        return X.map_blocks(_score_block, model, digest, kind, table, dtype=np.float64, drop_axis=[2, 3],
                            chunks=(X.chunks[0], (2,)), meta=np.empty((0, 2), dtype=np.float64))
    dtype = np.asarray(clf.classes_).dtype if kind == "predict" else np.float64
    return X.map_blocks(_score_block, model, digest, kind, table, dtype=dtype, drop_axis=[1, 2, 3],
                        chunks=(X.chunks[0],), meta=np.empty((0,), dtype=dtype))
