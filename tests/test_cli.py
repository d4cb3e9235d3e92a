"""The ``lensclf`` command line: train, evaluate, predict, simulate, demo and its errors.

Commands run in-process through ``lensclf.cli.main``; two run as real
subprocesses (``python -m lensclf``). Training is kept tiny: one model is
trained once (1 epoch, 20 real cutouts) and shared, plus one ``demo --fast``.
"""

import contextlib
import copy
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lensclf
from lensclf import LensClassifier, LensDataError, load_lens_dir
from lensclf import cli, workflows
from lensclf.cli import main

from conftest import REAL_SAMPLE, SCORE_TOLERANCE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args):
    """``main(args)`` -> (exit code, stdout, stderr); SystemExit codes are returned too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def clone_with(clf, **params):
    """A copy of a fitted classifier with other prediction parameters (the shared one stays as is)."""
    return copy.deepcopy(clf).set_params(**params)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def error_lines(stderr):
    """stderr lines that are not progress bars."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line
            and "img/s]" not in line and "s/it]" not in line and "s/img]" not in line and "%|" not in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``lensclf train`` on the 40 real sample files: (run dir, exit code, stdout, stderr)."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code, out, err = run_cli(["train", REAL_SAMPLE, "--out", run_dir, "--epochs", 1, "--batch-size", 8,
                              "--seed", 0, "--device", "cpu"])
    return run_dir, code, out, err


@pytest.fixture(scope="module")
def model(trained):
    run_dir, code, _, err = trained
    assert code == 0, err
    return run_dir / cli.MODEL_FILE_NAME


@pytest.fixture(scope="module")
def reference(model):
    """The saved model loaded through the public API, and the sample's test split."""
    clf = LensClassifier.load(model, device="cpu")
    X, y, paths = load_lens_dir(REAL_SAMPLE, "test", return_paths=True)
    return clf, X, y, paths


# --------------------------------------------------------------------------- train


def test_train_writes_model_history_and_prints_counts(trained, model):
    run_dir, code, out, err = trained
    assert code == 0, err
    assert sorted(os.listdir(run_dir)) == ["history.csv", "history.json", "history.png", "model.safetensors"]
    assert "train: 10 lenses, 10 non-lenses" in out
    assert "test:  10 lenses, 10 non-lenses (files counted, not loaded)" in out
    assert "device: cpu" in out
    assert "train_loss" in out and "valid_auc" in out  # the epoch table
    rows = read_csv(run_dir / "history.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    history = json.loads((run_dir / "history.json").read_text())
    assert history[0]["train_loss"] == pytest.approx(float(rows[0]["train_loss"]))
    meta = lensclf.read_model_metadata(model)
    assert meta["training_data"]["n_lenses"] == 10 and meta["training_data"]["n_nonlenses"] == 10
    assert meta["params"]["max_epochs"] == 1 and meta["params"]["batch_size"] == 8
    assert LensClassifier.load(model).history_[0]["train_loss"] == pytest.approx(history[0]["train_loss"])


def test_train_refuses_a_non_empty_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    code, out, err = run_cli(["train", REAL_SAMPLE, "--out", run_dir, "--epochs", 1])
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "--overwrite" in lines[0] and str(run_dir) in lines[0]
    assert os.listdir(run_dir) == ["notes.txt"]


def test_input_size_option_takes_auto_none_or_a_side():
    parser = cli.build_parser()
    assert parser.parse_args(["train", "d", "--out", "o"]).input_size == "auto"  # the estimator's default
    assert parser.parse_args(["train", "d", "--out", "o", "--input-size", "none"]).input_size is None
    assert parser.parse_args(["train", "d", "--out", "o", "--input-size", "AUTO"]).input_size == "auto"
    assert parser.parse_args(["train", "d", "--out", "o", "--input-size", "96"]).input_size == 96
    code, out, err = run_cli(["train", REAL_SAMPLE, "--out", "o", "--input-size", "8"])
    assert code == 2 and "--input-size" in err and "at least 16" in err


def test_ema_epochs_and_keep_options():
    parser = cli.build_parser()
    assert parser.parse_args(["train", "d", "--out", "o"]).ema_epochs == LensClassifier().ema_epochs
    assert parser.parse_args(["train", "d", "--out", "o", "--ema-epochs", "NONE"]).ema_epochs is None
    assert parser.parse_args(["train", "d", "--out", "o", "--ema-epochs", "0.5"]).ema_epochs == 0.5
    assert parser.parse_args(["train", "d", "--out", "o"]).keep == LensClassifier().keep
    assert parser.parse_args(["train", "d", "--out", "o", "--keep", "last"]).keep == "last"
    code, out, err = run_cli(["train", REAL_SAMPLE, "--out", "o", "--ema-epochs", "0"])
    assert code == 2 and "--ema-epochs" in err and "positive" in err


def test_a_bad_data_file_gives_a_one_line_error(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REAL_SAMPLE, data)
    bad = data / "train_nonlenses" / "3.npy"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    code, out, err = run_cli(["train", data, "--out", tmp_path / "run", "--epochs", 1])
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("lensclf: error: ") and str(bad) in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(LensDataError, match="truncated"):
        main(["--debug", "train", str(data), "--out", str(tmp_path / "run")])


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    code, _, err = run_cli(["train", tmp_path / "nowhere", "--out", tmp_path / "run"])
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "nowhere" in lines[0]
    with pytest.raises(FileNotFoundError):
        main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--debug"])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_writes_a_report_with_the_models_scores(model, reference, tmp_path):
    clf, X, y, paths = reference
    report = tmp_path / "report"
    code, out, err = run_cli(["evaluate", model, REAL_SAMPLE, "--out", report, "--threshold", 0.3])
    assert code == 0, err
    for name in ("metrics.json", "scores.csv", "roc.png", "errors_gallery.png", "history.png"):
        assert (report / name).is_file(), name
    rows = read_csv(report / "scores.csv")
    assert [row["name"] for row in rows] == [os.path.relpath(p, REAL_SAMPLE) for p in paths]
    assert rows[0]["name"] == os.path.join("test_lenses", "1.npy")
    expected = clf.predict_proba(X)[:, 1]
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected, **SCORE_TOLERANCE)
    assert [int(row["label"]) for row in rows] == y.tolist()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["threshold"] == 0.3
    assert "ROC AUC: " in out and f"{metrics['roc_auc']:.4f}" in out
    assert f"report: {report}" in out


def test_evaluate_with_prior_and_refusal_to_overwrite(model, reference, tmp_path):
    clf, X, _, _ = reference
    report = tmp_path / "report"
    code, _, err = run_cli(["evaluate", model, REAL_SAMPLE, "--out", report, "--prior", 0.01, "--quiet"])
    assert code == 0, err
    scores = [float(row["score"]) for row in read_csv(report / "scores.csv")]
    np.testing.assert_allclose(scores, clone_with(clf, prior=0.01).predict_proba(X)[:, 1], **SCORE_TOLERANCE)
    assert json.loads((report / "metrics.json").read_text())["prior"] == 0.01
    before = (report / "scores.csv").read_bytes()
    code, _, err = run_cli(["evaluate", model, REAL_SAMPLE, "--out", report])
    assert code == 1 and "--overwrite" in err
    assert (report / "scores.csv").read_bytes() == before
    code, _, err = run_cli(["evaluate", model, REAL_SAMPLE, "--out", report, "--overwrite", "--quiet"])
    assert code == 0, err


def test_evaluate_skips_a_bad_file_and_reports_it(model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REAL_SAMPLE, data)
    bad = data / "test_nonlenses" / "4.npy"
    np.save(bad, np.full((3, 64, 64), np.nan, dtype=np.float32))
    code, _, err = run_cli(["evaluate", model, data, "--out", tmp_path / "r1", "--quiet"])
    assert code == 1 and str(bad) in err and "NaN" in err
    code, _, err = run_cli(["evaluate", model, data, "--out", tmp_path / "r2", "--errors", "skip", "--quiet"])
    assert code == 0, err
    assert f"skipped {bad}" in err
    names = [row["name"] for row in read_csv(tmp_path / "r2" / "scores.csv")]
    assert len(names) == 19 and os.path.join("test_nonlenses", "4.npy") not in names


def test_evaluate_rejects_a_file_that_is_not_a_model(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not a model")
    code, _, err = run_cli(["evaluate", fake, REAL_SAMPLE, "--out", tmp_path / "r"])
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and str(fake) in lines[0]


# --------------------------------------------------------------------------- predict


def test_predict_on_a_stack_a_folder_and_single_files(model, reference, tmp_path, monkeypatch):
    clf, X, _, paths = reference
    lens_paths = paths[:10]  # test_lenses/1.npy ... 10.npy, natural order
    stack_images = X[10:18][::-1]  # non-lenses, reversed: the stack order is visibly its own
    stack = tmp_path / "stack.npy"
    np.save(stack, stack_images)
    single = os.path.join(REAL_SAMPLE, "test_nonlenses", "7.npy")
    out_csv = tmp_path / "scores.csv"
    monkeypatch.setattr(workflows, "PREDICT_CHUNK_SIZE", 3)  # several chunks per stack and per file list
    code, out, err = run_cli(["predict", model, stack, os.path.join(REAL_SAMPLE, "test_lenses"), single,
                              "--out", out_csv, "--batch-size", 4])
    assert code == 0, err
    rows = read_csv(out_csv)
    assert [row["source"] for row in rows] == [str(stack)] * 8 + lens_paths + [single]
    assert [row["index"] for row in rows] == [str(i) for i in range(8)] + [""] * 11
    expected = clf.predict_proba(np.concatenate([stack_images, X[:10], lensclf.read_lens_file(single)[None]]))
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected[:, 1], **SCORE_TOLERANCE)
    assert "scored 19 cutout(s); skipped 0" in out

    code, _, err = run_cli(["predict", model, stack, "--out", out_csv])
    assert code == 1 and "--overwrite" in err
    assert len(read_csv(out_csv)) == 19


def test_predict_with_tta_and_prior(model, reference, tmp_path):
    clf, X, _, _ = reference
    stack = tmp_path / "stack.npy"
    np.save(stack, X[[0, 15]])
    out_csv = tmp_path / "scores.csv"
    code, _, err = run_cli(["predict", model, stack, "--out", out_csv, "--tta", "--prior", 0.05, "--quiet"])
    assert code == 0, err
    expected = clone_with(clf, tta=True, prior=0.05).predict_proba(X[[0, 15]])[:, 1]
    np.testing.assert_allclose([float(row["score"]) for row in read_csv(out_csv)], expected, **SCORE_TOLERANCE)


def test_predict_skips_bad_files_with_errors_skip(model, reference, tmp_path):
    clf, X, _, _ = reference
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for i in range(4):
        np.save(folder / f"{i + 1}.npy", X[i])
    nan_image = X[4].copy()
    nan_image[0, 3, 3] = np.nan
    np.save(folder / "5.npy", nan_image)
    (folder / "6.npy").write_text("not numpy")
    np.save(folder / "7.npy", X[5][:, :32, :32])  # wrong size for this model
    out_csv = tmp_path / "scores.csv"

    code, _, err = run_cli(["predict", model, folder, "--out", out_csv])
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("lensclf: error: ")
    assert not out_csv.exists()

    code, out, err = run_cli(["predict", model, folder, "--out", out_csv, "--errors", "skip"])
    assert code == 0, err
    for name in ("5.npy", "6.npy", "7.npy"):
        assert f"skipped {folder / name}: " in err
    assert "the model takes 64 x 64" in err and "--fit-size" in err and "NaN" in err
    assert "skipped 3" in out
    rows = read_csv(out_csv)
    assert [row["source"] for row in rows] == [str(folder / f"{i}.npy") for i in range(1, 5)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X[:4])[:, 1],
                               **SCORE_TOLERANCE)


def test_predict_stack_with_a_nan_row(model, reference, tmp_path):
    clf, X, _, _ = reference
    stack = X[:5].copy()
    stack[2, 1, 0, 0] = np.inf
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    code, _, err = run_cli(["predict", model, path, "--out", tmp_path / "a.csv"])
    assert code == 1 and "row(s) 2" in err and str(path) in err
    code, out, err = run_cli(["predict", model, path, "--out", tmp_path / "b.csv", "--errors", "skip", "--quiet"])
    assert code == 0, err
    assert f"skipped {path}[2]" in err
    rows = read_csv(tmp_path / "b.csv")
    assert [row["index"] for row in rows] == ["0", "1", "3", "4"]
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X[[0, 1, 3, 4]])[:, 1],
                               **SCORE_TOLERANCE)


def test_predict_missing_input_and_empty_folder(model, tmp_path):
    code, _, err = run_cli(["predict", model, tmp_path / "missing.npy", "--out", tmp_path / "s.csv"])
    assert code == 1 and "missing.npy" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["predict", model, tmp_path / "empty", "--out", tmp_path / "s.csv"])
    assert code == 1 and "no cutout files" in err
    assert not (tmp_path / "s.csv").exists()


# --------------------------------------------------------------------------- simulate, demo, usage


def test_simulate_writes_the_layout_and_refuses_to_overwrite(tmp_path):
    out_dir = tmp_path / "sim"
    args = ["simulate", out_dir, "--n-train-lenses", 3, "--n-train-nonlenses", 4, "--n-test-lenses", 2,
            "--n-test-nonlenses", 1, "--seed", 5, "--quiet"]
    assert run_cli(args)[0] == 0
    counts = {name: len(os.listdir(out_dir / name)) for name in
              ("train_lenses", "train_nonlenses", "test_lenses", "test_nonlenses")}
    assert counts == {"train_lenses": 3, "train_nonlenses": 4, "test_lenses": 2, "test_nonlenses": 1}
    X, y = load_lens_dir(out_dir, "train")
    np.testing.assert_array_equal(X, lensclf.make_lenses(3, 4, random_state=5, shuffle=False)[0])
    code, _, err = run_cli(args)
    assert code == 1 and "overwrite" in err
    assert run_cli(args + ["--overwrite"])[0] == 0


def test_demo_fast_end_to_end(tmp_path):
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(["demo", "--out", out_dir, "--fast"])
    assert code == 0, err
    assert (out_dir / cli.MODEL_FILE_NAME).is_file()
    for name in ("metrics.json", "scores.csv", "roc.png", "history.png", "errors_gallery.png"):
        assert (out_dir / "report" / name).is_file(), name
    metrics = json.loads((out_dir / "report" / "metrics.json").read_text())
    sizes = cli.DEMO_FAST_SIZES
    assert metrics["n_lenses"] == sizes["n_test_lenses"] and metrics["n_nonlenses"] == sizes["n_test_nonlenses"]
    ci = metrics["roc_auc_ci"]
    assert f"test ROC AUC: {metrics['roc_auc']:.3f} (95% CI {ci['low']:.3f} - {ci['high']:.3f})" in out
    assert f"model:  {out_dir / cli.MODEL_FILE_NAME}" in out
    # the saved model reproduces the report's scores
    X, _, _ = load_lens_dir(out_dir / "data", "test", return_paths=True)
    scores = [float(row["score"]) for row in read_csv(out_dir / "report" / "scores.csv")]
    np.testing.assert_allclose(scores, LensClassifier.load(out_dir / cli.MODEL_FILE_NAME).predict_proba(X)[:, 1],
                               **SCORE_TOLERANCE)
    code, _, err = run_cli(["demo", "--out", out_dir, "--fast"])
    assert code == 1 and "--overwrite" in err


@pytest.mark.parametrize("args", [
    [],
    ["bogus"],
    ["train"],
    ["train", "data"],  # --out missing
    ["train", "data", "--out", "run", "--epochs", "0"],
    ["train", "data", "--out", "run", "--valid-size", "1.5"],
    ["train", "data", "--out", "run", "--balance", "always"],
    ["evaluate", "model", "data", "--out", "r", "--prior", "2"],
    ["evaluate", "model", "data", "--out", "r", "--threshold", "-0.1"],
    ["predict", "model", "--out", "s.csv"],  # no INPUT
    ["predict", "model", "x.npy", "--out", "s.csv", "--errors", "ignore"],
    ["simulate", "out", "--n-train-lenses", "-1"],
    ["simulate", "out", "--difficulty", "extreme"],
    ["demo", "--unknown"],
])
def test_usage_errors_exit_2_with_one_line(args):
    code, out, err = run_cli(args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0]


def test_help_of_every_command(capsys):
    for command in ("demo", "train", "evaluate", "predict", "pack", "simulate"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert f"usage: lensclf {command}" in capsys.readouterr().out


# --------------------------------------------------------------------------- real subprocesses


def _subprocess(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lensclf", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)


def test_python_m_lensclf_version():
    result = _subprocess("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lensclf {lensclf.__version__}"


def test_python_m_lensclf_data_error_has_no_traceback(model, tmp_path):
    result = _subprocess("evaluate", model, tmp_path / "no_such_data", "--out", tmp_path / "report")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lensclf: error: ") and "no_such_data" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- colour only on a terminal (issue 14.4)


def _env_without_no_color():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NO_COLOR", None)  # colour must be left out because the output is not a terminal, not because of this
    return env


def test_train_output_to_a_pipe_or_file_has_no_colour_codes(tmp_path):
    log = tmp_path / "train.log"
    with open(log, "wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "lensclf", "train", REAL_SAMPLE, "--out", str(tmp_path / "run"), "--epochs", "1",
             "--batch-size", "8", "--seed", "0", "--device", "cpu"],
            stdout=stdout, stderr=subprocess.PIPE, env=_env_without_no_color(), timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    out = log.read_bytes()
    assert b"valid_auc" in out and b"train_loss" in out  # the epoch table, with a best value in every column
    assert b"\x1b[" not in out
    assert b"\x1b[" not in result.stderr  # stderr, a pipe: the progress bars


def test_colour_wanted_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    from lensclf._net import colour_wanted

    monkeypatch.delenv("NO_COLOR", raising=False)
    master, replica = os.openpty()
    read_end, write_end = os.pipe()
    terminal, pipe = os.fdopen(replica, "w"), os.fdopen(write_end, "w")
    try:
        assert terminal.isatty() and not pipe.isatty()
        assert colour_wanted(terminal) is True
        assert colour_wanted(pipe) is False
        assert colour_wanted(io.StringIO()) is False
        monkeypatch.setattr(sys, "stdout", terminal)  # the default stream is sys.stdout at the time of the call
        assert colour_wanted() is True
        monkeypatch.setattr(sys, "stdout", pipe)
        assert colour_wanted() is False
        monkeypatch.setenv("NO_COLOR", "")  # no-color.org: an empty value does not count
        assert colour_wanted(terminal) is True
        for value in ("1", "true", "0"):  # any non-empty value does
            monkeypatch.setenv("NO_COLOR", value)
            assert colour_wanted(terminal) is False
    finally:
        terminal.close()
        pipe.close()
        os.close(master)
        os.close(read_end)


def test_epoch_table_colours_the_best_values_on_a_terminal_only(monkeypatch):
    from lensclf._net import EpochTable

    monkeypatch.delenv("NO_COLOR", raising=False)
    row = {"epoch": 1, "valid_auc": 0.6329, "valid_auc_best": True, "train_loss": 0.7, "train_loss_best": False}
    master, replica = os.openpty()
    terminal = os.fdopen(replica, "w")
    try:
        monkeypatch.setattr(sys, "stdout", terminal)
        coloured = EpochTable().format_row(row, "valid_auc", "\x1b[32m")
        monkeypatch.setenv("NO_COLOR", "1")
        uncoloured = EpochTable().format_row(row, "valid_auc", "\x1b[32m")
    finally:
        terminal.close()
        os.close(master)
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    in_a_file = EpochTable().format_row(row, "valid_auc", "\x1b[32m")
    assert coloured == "\x1b[32m0.6329\x1b[0m"
    assert uncoloured == in_a_file == "0.6329"
