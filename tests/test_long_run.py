"""A long run: a few hundred training batches, then a stream of good and bad files through `lensclf predict`.

Every good file must get a score (the same as the estimator gives it) and every bad one must be reported.
"""

import csv

import numpy as np
import pytest

from lensclf import LensClassifier
from lensclf.cli import main

from conftest import make_ring_images


def _bad_files(folder):
    """(name, expected words in the reason) for a mix of broken cutouts."""
    shape = (3, 16, 16)
    bad = {}
    (folder / "empty.npy").write_bytes(b"")
    bad["empty.npy"] = "empty"
    good = np.zeros(shape, np.float32) + 1
    np.save(folder / "truncated.npy", good)
    data = (folder / "truncated.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(data[: len(data) // 2])
    bad["truncated.npy"] = "truncated"
    nan = np.random.default_rng(0).random(shape).astype(np.float32)
    nan[1, 3, 3] = np.nan
    np.save(folder / "nan.npy", nan)
    bad["nan.npy"] = "nan"
    np.save(folder / "blank.npy", np.zeros(shape, np.float32))
    bad["blank.npy"] = "constant"
    np.save(folder / "wrong_size.npy", np.random.default_rng(1).random((3, 20, 20)).astype(np.float32))
    bad["wrong_size.npy"] = "shape"
    np.save(folder / "two_bands.npy", np.random.default_rng(2).random((2, 16, 16)).astype(np.float32))
    bad["two_bands.npy"] = "shape"
    np.save(folder / "complex.npy", np.ones(shape, np.complex64))
    bad["complex.npy"] = "complex"
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bad["objects.npy"] = "pickle"
    (folder / "text.npy").write_text("this is not an array")
    bad["text.npy"] = "npy"
    return bad


@pytest.mark.slow
def test_long_training_then_a_stream_of_good_and_bad_files(tmp_path, capsys):
    X, y = make_ring_images(1000, size=16, seed=11)
    # 800 training images / batch 16 = 50 batches per epoch; 6 epochs = 300 batches.
    clf = LensClassifier(max_epochs=6, batch_size=16, random_state=0, verbose=0).fit(X, y)
    assert len(clf.history_) == 6
    model = tmp_path / "model.safetensors"
    clf.save(model)

    stream = tmp_path / "stream"
    stream.mkdir()
    X_new, _ = make_ring_images(300, size=16, seed=12)
    good = {}
    for i, image in enumerate(X_new):
        name = f"good_{i:03d}.npy"
        np.save(stream / name, image)
        good[name] = image
    bad = _bad_files(stream)
    stack = tmp_path / "stack.npy"
    stacked = X_new[:50].copy()
    stacked[[7, 30]] = np.nan
    np.save(stack, stacked)

    out = tmp_path / "scores.csv"
    code = main(["predict", str(model), str(stream), str(stack), "--out", str(out), "--errors", "skip", "--quiet"])
    assert code == 0
    stderr = capsys.readouterr().err

    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    file_scores = {r["source"].rsplit("/", 1)[-1]: float(r["score"]) for r in rows if r["index"] == ""}
    stack_scores = {int(r["index"]): float(r["score"]) for r in rows if r["index"] != ""}

    # Every good file was scored, with the estimator's own score; no bad file was.
    assert set(file_scores) == set(good)
    names = sorted(good)
    expected = clf.predict_proba(np.stack([good[n] for n in names]))[:, 1]
    np.testing.assert_allclose([file_scores[n] for n in names], expected, rtol=1e-6, atol=1e-7)
    assert sorted(stack_scores) == [i for i in range(50) if i not in (7, 30)]
    np.testing.assert_allclose([stack_scores[i] for i in sorted(stack_scores)],
                               clf.predict_proba(np.delete(stacked, [7, 30], axis=0))[:, 1], rtol=1e-6, atol=1e-7)

    # Every bad file and bad stack row is reported, each with its reason.
    reported = [line for line in stderr.splitlines() if line.startswith("skipped ")]
    assert len(reported) == len(bad) + 2
    for name, words in bad.items():
        line = next((line for line in reported if f"{name}:" in line), None)
        assert line is not None, f"{name} was not reported"
        assert words in line.lower(), line
    assert any("stack.npy[7]" in line for line in reported)
    assert any("stack.npy[30]" in line for line in reported)
