"""Dask: lazy scores of dask arrays, a real LocalCluster (loopback), lost workers, resumed runs, GridSearchCV.

Every cluster here is a real ``distributed.LocalCluster`` of worker processes on 127.0.0.1, started and
stopped by the test, with a timeout on every wait.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import joblib  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from lensclf import LensClassifier, LensZarrArray, pack_cutouts  # noqa: E402
from lensclf._dask import _budget  # noqa: E402

from conftest import make_ring_images  # noqa: E402
from test_cli import read_csv  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fitted():
    X, y = make_ring_images(96, size=32, seed=3)
    clf = LensClassifier(max_epochs=1, batch_size=16, weights=None, verbose=0, random_state=0, device="cpu")
    return clf.fit(X, y), X, y


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield local, client


def _store(tmp_path, X, chunk_rows):
    folder = tmp_path / "files"
    folder.mkdir()
    paths = []
    for i, image in enumerate(X):
        paths.append(str(folder / f"obj{i}.npy"))
        np.save(paths[-1], image)
    pack_cutouts(paths, tmp_path / "s.zarr", chunk_rows=chunk_rows)
    return str(tmp_path / "s.zarr"), paths


def test_block_bounds_cover_every_row_once_in_the_asked_order():
    from lensclf._cluster import block_bounds

    assert list(block_bounds(10, 4)) == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert list(block_bounds(8, 4)) == [(0, 0, 4), (1, 4, 8)]
    assert list(block_bounds(10, 4, np.array([2, 0]))) == [(2, 8, 10), (0, 0, 4)]
    rows = np.concatenate([np.arange(start, stop) for _, start, stop in block_bounds(1001, 64)])
    np.testing.assert_array_equal(rows, np.arange(1001))


def test_dask_arrays_give_lazy_scores_equal_to_the_in_memory_path(fitted):
    clf, X, _ = fitted
    D = da.from_array(X, chunks=(25, 3, 32, 32))
    proba = clf.predict_proba(D)
    assert isinstance(proba, da.Array) and proba.chunks == ((25, 25, 25, 21), (2,))
    graph = dict(proba.__dask_graph__())
    assert sum("lensclf-model" in str(key) for key in graph) == 1  # the network is one key, not one per block
    np.testing.assert_allclose(proba.compute(scheduler="threads"), clf.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(clf.decision_function(D).compute(), clf.decision_function(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(clf.predict(D).compute(), clf.predict(X))


def test_scores_on_a_local_cluster_with_one_torch_thread_per_dask_thread(fitted, cluster):
    clf, X, _ = fitted
    _, client = cluster
    scores = clf.predict_proba(da.from_array(X, chunks=(32, 3, 32, 32))).compute()
    np.testing.assert_allclose(scores, clf.predict_proba(X), rtol=1e-6, atol=1e-9)
    workers = list(client.scheduler_info()["workers"])
    budgets = [client.submit(_budget, workers=[w], pure=False).result(timeout=60) for w in workers]
    assert budgets == [max(1, len(os.sched_getaffinity(0)) // 2)] * 2  # 2 workers x 1 thread share the cores


def _threads_used_by_scoring(clf, X):
    clf.predict_proba(X)
    return torch.get_num_threads()


def test_a_lone_single_threaded_worker_scores_with_every_core(fitted):
    clf, X, _ = fitted
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        before = client.run(torch.get_num_threads)  # the nanny starts workers with OMP_NUM_THREADS=1
        used = client.submit(_threads_used_by_scoring, clf, X[:8], pure=False).result(timeout=120)
    assert list(before.values()) == [1]
    assert used == len(os.sched_getaffinity(0))  # the worker's share: all the cores of its host


def _heap_inside_and_after(fast_paths):
    from lensclf._cpu import heap
    from lensclf._dask import worker_settings

    with worker_settings(heap=fast_paths):
        inside = heap.current_thresholds()
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), inside, heap.current_thresholds()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_worker_tasks_keep_freed_memory_in_the_heap_the_nanny_set_to_trim(cluster):
    from lensclf._cpu import heap

    _, client = cluster
    env, inside, after = client.submit(_heap_inside_and_after, True, pure=False).result(timeout=60)
    assert env == "65536"  # what the nanny starts each worker with: every freed buffer handed back
    assert inside == {heap.M_MMAP_THRESHOLD: 32 << 20, heap.M_TRIM_THRESHOLD: 1 << 30}
    assert after[heap.M_TRIM_THRESHOLD] == 65536  # the nanny's setting is back once the task ends
    _, inside, _ = client.submit(_heap_inside_and_after, False, pure=False).result(timeout=60)
    assert inside[heap.M_TRIM_THRESHOLD] == 65536  # cpu_fast_paths=False: left alone
    before = heap.current_thresholds()
    _, inside, after = _heap_inside_and_after(True)
    assert inside == before == after  # outside a worker: nothing changes


def test_grid_search_on_the_cluster_matches_the_sequential_search(cluster):
    X, y = make_ring_images(64, size=16, seed=5)
    params = dict(max_epochs=1, batch_size=16, weights=None, verbose=0, random_state=0, device="cpu")
    grid = {"lr": [1e-3, 3e-4]}
    scoring = {"auc": "roc_auc", "threads": lambda est, X, y: torch.get_num_threads()}
    with joblib.parallel_backend("dask"):
        on_cluster = GridSearchCV(LensClassifier(**params), grid, cv=2, scoring=scoring, refit="auc",
                                  n_jobs=-1).fit(X, y)
    sequential = GridSearchCV(LensClassifier(**params), grid, cv=2, scoring="roc_auc", n_jobs=1).fit(X, y)
    np.testing.assert_allclose(on_cluster.cv_results_["mean_test_auc"], sequential.cv_results_["mean_test_score"],
                               rtol=1e-6)
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert list(on_cluster.cv_results_["mean_test_threads"]) == [expected] * 2  # each fit's threads limited


def test_a_killed_worker_loses_and_duplicates_no_row(fitted, cluster, tmp_path):
    from lensclf._cluster import score_store

    clf, X, _ = fitted
    X = np.concatenate([X] * 20)  # 1,920 rows, 30 blocks of 64
    store, _ = _store(tmp_path, X, chunk_rows=64)
    local, client = cluster
    pids = client.run(os.getpid)
    out = tmp_path / "scores.zarr"
    killed = []

    def kill_one_worker_mid_run():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                done = zarr.open_group(out, mode="r")["done"][:]
            except Exception:  # noqa: BLE001 - the store is being created
                done = np.zeros(1, bool)
            if 2 <= done.sum() < len(done) - 4:
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed.append(int(done.sum()))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    n_rows, n_done_before = score_store(clf, store, out, local.scheduler_address, block_rows=64, quiet=True)
    killer.join(timeout=130)
    assert killed, "the worker was not killed while blocks were running"
    group = zarr.open_group(out, mode="r")
    assert n_rows == len(X) and n_done_before == 0 and group["done"][:].all() and group.attrs["complete"]
    np.testing.assert_allclose(group["score"][:], clf.predict_proba(X)[:, 1], rtol=1e-5, atol=1e-8)
    assert list(group["id"][:]) == [f"obj{i}" for i in range(len(X))]


def test_a_killed_run_resumes_and_skips_finished_blocks(fitted, tmp_path):
    clf, X, _ = fitted
    X = np.concatenate([X] * 40)  # 3,840 rows, 60 blocks
    store, paths = _store(tmp_path, X, chunk_rows=64)
    model = tmp_path / "m.safetensors"
    clf.save(model)
    out = tmp_path / "scores.csv"
    command = [sys.executable, "-m", "lensclf", "predict", str(model), store, "--out", str(out),
               "--scheduler", "local:1", "--block-rows", "64", "--quiet"]
    env = dict(os.environ, PYTHONPATH=REPO)
    run = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = str(out) + ".partial.zarr"
    deadline, done = time.monotonic() + 180, 0
    while time.monotonic() < deadline and run.poll() is None:
        try:
            done = int(zarr.open_group(partial, mode="r")["done"][:].sum())
        except Exception:  # noqa: BLE001 - not created yet
            done = 0
        if done >= 3:
            break
        time.sleep(0.05)
    assert run.poll() is None and done >= 3, run.communicate(timeout=30)
    os.killpg(run.pid, signal.SIGKILL)  # the command and its cluster die at once
    run.wait(timeout=30)
    assert not out.exists()
    finished = zarr.open_group(partial, mode="r")["done"][:]
    assert 3 <= finished.sum() < len(finished)

    again = subprocess.run(command[:-1], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "block(s) done by an earlier run" in again.stdout
    assert int(again.stdout.split("cluster (")[1].split()[0].replace(",", "")) >= finished.sum()
    rows = read_csv(out)
    assert [int(r["index"]) for r in rows] == list(range(len(X)))  # every row once, in order
    assert [r["source"] for r in rows] == paths
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X)[:, 1], rtol=1e-5, atol=1e-8)
    assert not os.path.exists(partial)


def distributed_nanny_variables():
    import dask

    return [str(name) for name in dask.config.get("distributed.nanny.pre-spawn-environ")]


def test_a_local_cluster_started_for_a_run_leaves_the_environment_as_it_was(fitted, tmp_path, monkeypatch):
    from lensclf._cluster import score_store

    clf, X, _ = fitted
    store, _ = _store(tmp_path, X[:40], chunk_rows=32)
    for name in distributed_nanny_variables():  # left here by the module's own cluster
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    assert score_store(clf, store, tmp_path / "scores.zarr", "local:1", quiet=True) == (40, 0)
    assert dict(os.environ) == before  # not the nanny's OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_


def test_store_scores_lazily_as_a_dask_array_from_zarr(fitted, tmp_path):
    clf, X, _ = fitted
    store, _ = _store(tmp_path, X, chunk_rows=32)
    D = da.from_zarr(os.path.join(store, "images"))
    np.testing.assert_allclose(clf.predict_proba(D).compute(scheduler="threads"),
                               clf.predict_proba(LensZarrArray(store)), rtol=1e-6, atol=1e-9)
