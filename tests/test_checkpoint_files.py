"""One checkpoint file per fit with ``checkpoint_dir`` (issue 14, item 2), and the lock that guards it.

Parallel fits (the clones of ``GridSearchCV(n_jobs=2)`` and ``cross_val_score``) each write their own
``checkpoint-<key>.pt``, keyed by the training parameters and the data, and a later ``fit(..., resume=True)``
with the same parameters and data finds its own file.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from lensclf import LensClassifier
from lensclf._checkpoint import read_checkpoint

from conftest import make_ring_images

FAST = dict(max_epochs=1, batch_size=16, verbose=0, random_state=0, device="cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data():
    return make_ring_images(64, size=16, seed=5)


def _checkpoints(folder):
    return sorted(glob.glob(os.path.join(folder, "checkpoint-*.pt")))


def _fits_in(files):
    """(lr, data digest) of the fit that wrote each checkpoint file."""
    return [(json.loads(read_checkpoint(f)["params"])["lr"], read_checkpoint(f)["data"]["sha256"]) for f in files]


def test_grid_search_with_two_jobs_writes_one_file_per_fit_and_each_resumes_its_own(data, tmp_path):
    X, y = data
    folder = str(tmp_path / "checkpoints")
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    lrs = [1e-4, 1e-2]
    search = GridSearchCV(LensClassifier(checkpoint_dir=folder, **FAST), {"lr": lrs}, scoring="roc_auc", cv=cv,
                          n_jobs=2).fit(X, y)
    files = _checkpoints(folder)
    # 2 learning rates x 2 folds, and the refit on all of X: five fits, five files, nothing shared, no lock left.
    assert len(files) == 5, os.listdir(folder)
    assert len(set(_fits_in(files))) == 5
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(f) for f in files)
    assert search.best_estimator_.checkpoint_path_ in files
    # Resuming a fold's fit with the same parameters finds that fit's file (and nothing is left to train).
    for lr in lrs:
        for train, _ in cv.split(X, y):
            clf = LensClassifier(checkpoint_dir=folder, lr=lr, **FAST).fit(X[train], y[train], resume=True)
            assert clf.checkpoint_path_ in files
            state = read_checkpoint(clf.checkpoint_path_)
            assert json.loads(state["params"])["lr"] == lr
            assert state["data"]["n_samples"] == len(train)
            assert len(clf.history_) == 1
    # The refit's file gives back the refit model.
    resumed = LensClassifier(checkpoint_dir=folder, **{**FAST, **search.best_params_}).fit(X, y, resume=True)
    assert resumed.checkpoint_path_ == search.best_estimator_.checkpoint_path_
    np.testing.assert_array_equal(resumed.predict_proba(X), search.best_estimator_.predict_proba(X))
    assert _checkpoints(folder) == files


def test_cross_val_score_writes_one_file_per_fold_and_each_resumes_its_own(data, tmp_path):
    X, y = data
    folder = str(tmp_path / "checkpoints")
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    scores = cross_val_score(LensClassifier(checkpoint_dir=folder, **FAST), X, y, cv=cv, scoring="roc_auc")
    assert scores.shape == (3,)
    files = _checkpoints(folder)
    assert len(files) == 3 and len({digest for _, digest in _fits_in(files)}) == 3
    found = set()
    for train, test in cv.split(X, y):
        clf = LensClassifier(checkpoint_dir=folder, **FAST).fit(X[train], y[train], resume=True)
        found.add(clf.checkpoint_path_)
        assert read_checkpoint(clf.checkpoint_path_)["data"]["n_samples"] == len(train)
    assert found == set(files)


def test_a_resumed_fit_with_other_parameters_is_refused_not_continued(data, tmp_path):
    X, y = data
    folder = str(tmp_path / "checkpoints")
    LensClassifier(checkpoint_dir=folder, lr=1e-4, **FAST).fit(X, y)
    with pytest.raises(ValueError, match=r"other parameters: lr=0\.0001 \(now 0\.01\)"):
        LensClassifier(checkpoint_dir=folder, lr=1e-2, **FAST).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="other data"):
        LensClassifier(checkpoint_dir=folder, lr=1e-4, **FAST).fit(X[:40], y[:40], resume=True)
    assert len(_checkpoints(folder)) == 1


_HOLD_LOCK = textwrap.dedent("""
    import sys
    from lensclf._checkpoint import FitLock

    with FitLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until killed or told to go
""")


def test_a_live_lock_refuses_a_second_fit_and_a_stale_one_is_taken_over(data, tmp_path):
    X, y = data
    folder = str(tmp_path / "checkpoints")
    first = LensClassifier(checkpoint_dir=folder, **FAST).fit(X, y)
    path = first.checkpoint_path_
    before = open(path, "rb").read()
    # Another process, alive, holds this fit's lock (as a fit of the same parameters and data would).
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert os.path.exists(path + ".lock")
        with pytest.raises(RuntimeError, match=rf"another fit .*process {holder.pid}.*same parameters"):
            LensClassifier(checkpoint_dir=folder, **FAST).fit(X, y)
        assert open(path, "rb").read() == before  # the refused fit wrote nothing
        # Other parameters: another file, another lock; not refused.
        other = LensClassifier(checkpoint_dir=folder, **{**FAST, "lr": 1e-2}).fit(X, y)
        assert other.checkpoint_path_ != path
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait()
    assert os.path.exists(path + ".lock")
    again = LensClassifier(checkpoint_dir=folder, **FAST).fit(X, y)
    assert again.checkpoint_path_ == path
    assert not os.path.exists(path + ".lock")  # taken over, then released
    assert not glob.glob(os.path.join(folder, "*.lock"))
