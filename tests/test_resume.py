"""Checkpoints, interruption and resumption: in-process and with a real ``lensclf train`` subprocess."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REAL_SAMPLE, InterruptInEpoch, make_ring_images
from lensclf import LensClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Exact resumption is a CPU property (on CUDA, max-pool's backward pass is not deterministic).
TINY = dict(batch_size=16, augment=True, balance="sampler", random_state=5, verbose=0, device="cpu")


@pytest.fixture(scope="module")
def tiny_data():
    return make_ring_images(60, size=16, seed=3)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resumed_fit_ends_with_the_weights_of_an_uninterrupted_fit(tiny_data, tmp_path):
    X, y = tiny_data
    full = LensClassifier(max_epochs=3, **TINY).fit(X, y)
    first = LensClassifier(max_epochs=1, checkpoint_dir=tmp_path, **TINY).fit(X, y)
    state = torch.load(first.checkpoint_path_, weights_only=True)  # plain data only
    assert state["epoch"] == 1
    resumed = LensClassifier(max_epochs=3, checkpoint_dir=tmp_path, **TINY).fit(X, y, resume=True)
    assert resumed.checkpoint_path_ == first.checkpoint_path_
    assert torch.load(resumed.checkpoint_path_, weights_only=True)["epoch"] == 3
    for key in ("train_loss", "valid_loss", "train_auc", "valid_auc", "lr", "valid_auc_best", "valid_loss_best"):
        assert resumed.history_[:, key] == full.history_[:, key], key
    assert first.history_[:, "train_loss"] == full.history_[:1, "train_loss"]
    assert resumed.best_epoch_ == full.best_epoch_
    assert_same_weights(full.net_.module_.state_dict(), resumed.net_.module_.state_dict())
    np.testing.assert_array_equal(resumed.predict_proba(X), full.predict_proba(X))
    # the fitted estimator keeps no training data through the checkpoint callback
    callback = dict(resumed.net_.callbacks_)["checkpoint"]
    assert callback.extra is None and callback.restore is None


def test_interrupted_cosine_schedule_resumes_exactly_and_keeps_its_planned_length(tiny_data, tmp_path):
    X, y = tiny_data
    settings = dict(TINY, lr_schedule="cosine", max_epochs=3)
    full = LensClassifier(**settings).fit(X, y)
    LensClassifier(checkpoint_dir=tmp_path, callbacks=[InterruptInEpoch(2)], **settings).fit(X, y)
    with pytest.raises(ValueError, match=r"planned over 3 epochs; resume it with max_epochs=3 \(got 5\)"):
        LensClassifier(checkpoint_dir=tmp_path, **{**settings, "max_epochs": 5}).fit(X, y, resume=True)
    resumed = LensClassifier(checkpoint_dir=tmp_path, **settings).fit(X, y, resume=True)
    for key in ("train_loss", "valid_loss", "lr"):
        assert resumed.history_[:, key] == full.history_[:, key], key
    assert_same_weights(full.net_.module_.state_dict(), resumed.net_.module_.state_dict())


def test_resuming_with_other_data_or_parameters_is_a_clear_error(tiny_data, tmp_path):
    X, y = tiny_data
    LensClassifier(max_epochs=1, checkpoint_dir=tmp_path, **TINY).fit(X, y)
    with pytest.raises(ValueError, match="other data"):
        LensClassifier(max_epochs=2, checkpoint_dir=tmp_path, **TINY).fit(X[:-1], y[:-1], resume=True)
    X_changed = X.copy()
    X_changed[len(X) // 2] += 1
    with pytest.raises(ValueError, match="other data"):
        LensClassifier(max_epochs=2, checkpoint_dir=tmp_path, **TINY).fit(X_changed, y, resume=True)
    with pytest.raises(ValueError, match=r"other parameters: lr=0\.0003 \(now 0\.01\)"):
        LensClassifier(max_epochs=2, checkpoint_dir=tmp_path, **{**TINY, "lr": 0.01}).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="No checkpoint to resume"):
        LensClassifier(max_epochs=2, checkpoint_dir=tmp_path / "empty", **TINY).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        LensClassifier(max_epochs=2, **TINY).fit(X, y, resume=True)


# --------------------------------------------------------------------------- a real subprocess


def train_command(run_dir, *extra):
    return [sys.executable, "-m", "lensclf", "train", REAL_SAMPLE, "--out", str(run_dir), "--epochs", "4",
            "--batch-size", "4", "--seed", "0", "--device", "cpu", "--quiet", *extra]


def run(command):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def default_signal_dispositions():
    """In the child: SIGINT and SIGTERM as a terminal gives them, whatever the test runner inherited.

    A shell starts background jobs (``nohup ... &``, batch schedulers) with SIGINT ignored, and an
    ignored signal stays ignored across exec; ``lensclf train`` rightly keeps it so.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ``lensclf train`` exactly as the command line runs it, with one extra skorch callback that stops in
# the second epoch (after the first epoch's checkpoint is on disk) until a signal comes: the signal
# always arrives mid-training, however fast the machine.
PAUSED_TRAIN = """
import pathlib, sys, time
from skorch.callbacks import Callback
from lensclf import cli, workflows

class PauseInSecondEpoch(Callback):
    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 2:
            pathlib.Path(sys.argv[1]).write_text("paused")
            while True:
                time.sleep(0.05)

train = workflows.train_classifier
workflows.train_classifier = lambda X, y, params, **kw: train(
    X, y, {**params, "callbacks": [PauseInSecondEpoch()]}, **kw)
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume") / "full"
    done = run(train_command(run_dir))
    assert done.returncode == 0, done.stderr
    return load_file(run_dir / "model.safetensors")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_killed_training_saves_the_best_model_and_resumes_to_the_same_weights(signum, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    paused = tmp_path / "paused"
    command = [sys.executable, "-c", PAUSED_TRAIN, str(paused)] + train_command(run_dir)[3:]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=default_signal_dispositions)
    deadline = time.monotonic() + 240
    while not paused.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert paused.exists(), process.communicate(timeout=5)[1] if process.poll() is not None else "no pause"
    assert list((run_dir / "checkpoint").glob("checkpoint-*.pt")), "no checkpoint was written"
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("interrupted after epoch")]
    assert len(message) == 1, err
    assert "of 4; best model saved to" in message[0]
    assert f"resume with: lensclf train {REAL_SAMPLE} --out {run_dir} --resume" in message[0]
    interrupted = LensClassifier.load(run_dir / "model.safetensors", device="cpu")
    assert len(interrupted.history_) == 1
    assert (run_dir / "history.csv").exists()

    resumed = run(train_command(run_dir, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(os.listdir(run_dir)) == ["history.csv", "history.json", "history.png", "model.safetensors"]
    assert len(LensClassifier.load(run_dir / "model.safetensors", device="cpu").history_) == 4
    assert_same_weights(uninterrupted, load_file(run_dir / "model.safetensors"))


def test_resume_needs_an_interrupted_run(tmp_path):
    done = run(train_command(tmp_path / "nothing", "--resume"))
    assert done.returncode == 1
    assert "Nothing to resume" in done.stderr and "Traceback" not in done.stderr
