"""Every example in ``examples/`` runs to the end (LENSCLF_EXAMPLE_FAST=1: tiny data, one epoch)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REAL_SAMPLE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
NUMBER = r"[01]\.\d{3}"


def run_example(name, *args, cwd):
    env = dict(os.environ, LENSCLF_EXAMPLE_FAST="1", MPLBACKEND="Agg",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_quickstart(tmp_path):
    out = run_example("quickstart.py", cwd=tmp_path)
    assert "training set: 48 cutouts of shape (3, 64, 64), 16 lenses" in out
    assert re.search(rf"test ROC AUC: {NUMBER} \(95% CI {NUMBER} - {NUMBER}\)", out)


def test_cross_validation(tmp_path):
    out = run_example("cross_validation.py", cwd=tmp_path)
    folds = re.findall(rf"fold \d: ROC AUC ({NUMBER})", out)
    assert len(folds) == 2
    mean = re.search(rf"ROC AUC over 2 folds: mean ({NUMBER}), standard deviation (\d\.\d{{3}})", out)
    assert mean and abs(float(mean.group(1)) - sum(map(float, folds)) / 2) <= 1e-3


def test_grid_search(tmp_path):
    out = run_example("grid_search.py", cwd=tmp_path)
    table = re.findall(rf"^\s+1e-03\s+(0e\+00|1e-04)\s+{NUMBER}\s+{NUMBER}$", out, flags=re.M)
    assert sorted(table) == ["0e+00", "1e-04"]
    assert re.search(r"best setting: \{'lr': 0\.001, 'weight_decay': (0\.0|0\.0001)\}", out)
    assert re.search(rf"held-out TPR at FPR 1%: {NUMBER}", out)


def _check_deeplense_outputs(out, out_dir, n_test, shown_out_dir):
    assert re.search(rf"test ROC AUC: {NUMBER} \(95% CI {NUMBER} - {NUMBER}\)", out)
    for name in ("history.png", "roc_confusion.png", "model.safetensors"):
        assert (out_dir / name).is_file(), name
    for name in ("metrics.json", "scores.csv", "roc.png", "confusion_matrix.png", "errors_gallery.png", "history.png"):
        assert (out_dir / "report" / name).is_file(), name
    assert json.loads((out_dir / "report" / "metrics.json").read_text())["n"] == n_test
    assert f"report written to {os.path.join(shown_out_dir, 'report')}" in out


def test_deeplense_test2_on_the_real_sample(tmp_path):
    out_dir = tmp_path / "run"
    out = run_example("deeplense_test2.py", REAL_SAMPLE, "--out", out_dir, cwd=tmp_path)
    assert "train: 10 lenses, 10 non-lenses; test: 10 lenses, 10 non-lenses; cutouts of shape (3, 64, 64)" in out
    _check_deeplense_outputs(out, out_dir, 20, str(out_dir))


def test_deeplense_test2_on_simulated_data(tmp_path):
    out = run_example("deeplense_test2.py", cwd=tmp_path)
    assert "no DATA_DIR given: simulating 72 cutouts" in out
    assert "train: 16 lenses, 32 non-lenses; test: 8 lenses, 16 non-lenses" in out
    _check_deeplense_outputs(out, tmp_path / "deeplense_test2_output", 24, "deeplense_test2_output")


@pytest.mark.parametrize("name", ["quickstart.py", "cross_validation.py", "grid_search.py", "deeplense_test2.py"])
def test_examples_use_only_the_public_api(name):
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as handle:
        source = handle.read()
    assert "lensclf._" not in source and "from lensclf import" in source
