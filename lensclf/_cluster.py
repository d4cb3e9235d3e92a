"""Scoring a zarr store on a dask cluster: resumable, every row exactly once (``lensclf predict --scheduler``).

The rows of the input store are cut into blocks of whole chunks (about
:data:`BLOCK_ROWS` rows). The pickled classifier is broadcast to every worker
once (``Client.scatter(..., broadcast=True)``); each block is one task that
opens the store on the worker, reads its rows and returns their scores. The
client writes each block's scores into a **scores store** as the tasks finish
and only then marks the block done, so:

- a rerun after a crash or Ctrl-C skips the blocks marked done (a block whose
  scores were written but not marked is scored again and written again, in the
  same place);
- a worker that dies mid-run loses only its running tasks, which the scheduler
  runs again elsewhere; the client takes exactly one result per block, and each
  row has one slot in the output, so no row is lost or written twice.

The scores store (``OUT`` when it ends in ``.zarr``, else ``OUT.partial.zarr``)
holds ``score`` (float64), ``id`` and ``source`` (the input store's) and
``done`` (one flag per block). A ``.csv`` or ``.parquet`` ``OUT`` is written
from it, atomically, once every block is done; the partial store is then removed.
"""

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import sys
from urllib.parse import urlparse

import numpy as np
from tqdm.auto import tqdm

from ._dask import _require, cached_model, host_threads, model_blob, worker_settings
from ._tables import ScoreTable
from ._zarr import LensZarrArray, _zarr

__all__ = ["BLOCK_ROWS", "SCORES_VERSION", "local_cluster", "model_identity", "open_client", "score_store"]

#: Rows scored by one task (rounded up to whole chunks of the input store).
BLOCK_ROWS = 4096
#: Format version in the scores store's ``lensclf_scores`` attribute.
SCORES_VERSION = 1


@contextlib.contextmanager
def local_cluster(n_workers, threads_per_worker=1):
    """A ``distributed.Client`` of a LocalCluster of ``n_workers`` worker processes on loopback, stopped on exit.

    A LocalCluster's nannies put their workers' variables (``OMP_NUM_THREADS=1``,
    ``MALLOC_TRIM_THRESHOLD_=65536``) into this process's ``os.environ`` and leave them there;
    they are put back when the cluster stops, so later subprocesses start as they would have.
    """
    distributed = _require("distributed")
    environment = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            yield client
    finally:
        if dict(os.environ) != environment:
            os.environ.clear()
            os.environ.update(environment)


@contextlib.contextmanager
def open_client(scheduler):
    """A ``distributed.Client``: ``"local:N"`` starts (and stops) a LocalCluster of N worker processes
    on loopback, one thread each (:func:`local_cluster`); anything else is the address of a running scheduler.
    """
    distributed = _require("distributed")
    if scheduler.startswith("local:"):
        try:
            n_workers = int(scheduler.split(":", 1)[1])
            if n_workers < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"--scheduler local:N needs a positive number of workers, got {scheduler!r}") from None
        with local_cluster(n_workers) as client:
            yield client
    else:
        with distributed.Client(scheduler, timeout="30s") as client:
            yield client


def _score_rows(blob, digest, store_path, start, stop, threads_by_host):
    """Scores of rows ``start:stop`` of the store (runs on a worker)."""
    clf = cached_model(blob, digest)
    with worker_settings(threads_by_host, heap=bool(clf.cpu_fast_paths)):
        return clf.predict_proba(LensZarrArray(store_path)[start:stop])[:, 1]


def model_identity(clf):
    """SHA-256 of what decides ``clf``'s scores: its weights and its prediction settings.

    Stable across loads of one model file (a pickle of the estimator is not), so a rerun recognises its run.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(clf.net_.module_.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = (clf.tta, clf.prior, clf.train_prior_, tuple(clf.input_shape_), np.asarray(clf.channel_mean_).tolist(),
                np.asarray(clf.channel_std_).tolist(), clf.scaling)
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def block_bounds(n_rows, block_rows, blocks=None):
    """``(block, start, stop)`` of each block of ``block_rows`` rows (the last one may be shorter).

    ``blocks``: only these block numbers (default: all of them, in order).
    """
    if blocks is None:
        blocks = range(math.ceil(n_rows / block_rows))
    for b in blocks:
        b = int(b)
        yield b, b * block_rows, min((b + 1) * block_rows, n_rows)


def _progress_store(path, attrs, store, block_rows, overwrite):
    """Open the scores store at ``path`` for ``attrs``, creating it (with ids and sources) when needed."""
    zarr = _zarr()
    if os.path.exists(path):
        try:
            group = zarr.open_group(path, mode="r+")
            found = {key: group.attrs.get(key) for key in attrs}
        except (OSError, ValueError, KeyError, TypeError):
            found = None
        if found == attrs:
            return group  # the same model, input store and blocks: resume it (also with --overwrite)
        if not overwrite:
            differs = "it is not a scores store" if found is None else "its " + ", ".join(
                key for key in attrs if found.get(key) != attrs[key]) + " differ(s) from this run's"
            raise FileExistsError(f"{path} exists and {differs}; pass --overwrite to replace it, or another --out")
        shutil.rmtree(path)
    n, n_blocks = attrs["n_rows"], math.ceil(attrs["n_rows"] / block_rows)
    group = zarr.open_group(path, mode="w")
    group.create_array("score", shape=(n,), chunks=(block_rows,), dtype="float64", fill_value=np.nan)
    group.create_array("done", shape=(n_blocks,), chunks=(1,), dtype="bool", fill_value=False)
    for name in ("id", "source"):
        column = group.create_array(name, shape=(n,), chunks=(block_rows,), dtype=str)
        for _, start, stop in block_bounds(n, block_rows):  # a block at a time: the client never holds a column
            column[start:stop] = store.meta(name, np.arange(start, stop)).astype(str)
    group.attrs.update({**attrs, "complete": False})
    return group


def score_store(clf, store_path, out, scheduler, *, block_rows=None, overwrite=False, quiet=False):
    """Score every row of the zarr store ``store_path`` with the fitted ``clf`` on a dask cluster; write ``out``.

    Returns ``(n_rows, n_blocks_skipped)``: the rows in the output and the blocks
    found done by an earlier run.
    """
    store_path, out = os.fspath(store_path), os.fspath(out)
    if os.path.exists(out) and not out.lower().endswith(".zarr") and not overwrite:
        raise FileExistsError(f"Output {out!r} exists; pass --overwrite to replace it.")
    store = LensZarrArray(store_path)
    if tuple(store.shape[1:]) != tuple(clf.input_shape_):
        raise ValueError(f"{store_path}: its cutouts have shape {tuple(store.shape[1:])}; the model takes "
                         f"{tuple(clf.input_shape_)}")
    chunk = store.chunk_rows
    block_rows = chunk * max(1, math.ceil((block_rows or BLOCK_ROWS) / chunk))
    blob, digest = model_blob(clf)
    attrs = {"lensclf_scores": SCORES_VERSION, "model_sha256": model_identity(clf), "input": os.path.abspath(store_path),
             "input_batches": store.input_batches, "n_rows": len(store), "block_rows": block_rows}
    progress_path = out if out.lower().endswith(".zarr") else out + ".partial.zarr"
    group = _progress_store(progress_path, attrs, store, block_rows, overwrite)
    done = group["done"][:]
    pending = np.flatnonzero(~done)
    if len(pending):
        with open_client(scheduler) as client:
            distributed = _require("distributed")
            model = client.scatter(blob, broadcast=True, hash=False)  # to each worker once
            table = host_threads(client)
            run = hashlib.sha256(json.dumps(attrs, sort_keys=True).encode()).hexdigest()[:16]  # this model and store
            futures, blocks = [], {}
            for b, start, stop in block_bounds(len(store), block_rows, pending):
                future = client.submit(_score_rows, model, digest, attrs["input"], start, stop, table,
                                       key=f"lensclf-block-{run}-{b}", retries=2)
                futures.append(future)
                blocks[future.key] = (b, start, stop)
            with tqdm(total=len(done), initial=int(done.sum()), desc="blocks", unit="block", disable=quiet,
                      file=sys.stderr) as bar:
                for future, scores in distributed.as_completed(futures, with_results=True):
                    b, start, stop = blocks[future.key]
                    group["score"][start:stop] = scores
                    group["done"][b] = True  # after the scores: a block is done only once written
                    bar.update(1)
    group.attrs.update({"complete": True})
    if progress_path != out:
        with ScoreTable(out, ["source", "index", "id", "score"]) as table:
            for _, start, stop in block_bounds(len(store), block_rows):
                sources, ids = group["source"][start:stop], group["id"][start:stop]
                table.write([str(s), i, str(k), float(v)] for i, s, k, v in
                            zip(range(start, stop), sources, ids, group["score"][start:stop]))
        shutil.rmtree(progress_path, ignore_errors=True)
    return len(store), int(done.sum())
