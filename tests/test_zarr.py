"""Tests of the zarr cutout stores (lensclf._zarr): pack_cutouts, LensZarrArray, is_zarr_store."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
fits = pytest.importorskip("astropy.io.fits")

from lensclf import LensDataError  # noqa: E402
from lensclf._fits import BandFiles  # noqa: E402
from lensclf._zarr import LensZarrArray, default_chunk_rows, is_zarr_store, pack_cutouts  # noqa: E402

SHAPE = (3, 16, 16)


def write_cutouts(folder, n, seed=0, shape=SHAPE, fits_at=(), prefix="c"):
    """``n`` random cutouts as .npy files (FITS at the indices ``fits_at``): (paths, data)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    data = rng.random((n, *shape), dtype=np.float32)
    paths = []
    for i in range(n):
        if i in fits_at:
            path = os.path.join(folder, f"{prefix}{i}.fits")
            fits.PrimaryHDU(data[i].astype(">f4")).writeto(path)
        else:
            path = os.path.join(folder, f"{prefix}{i}.npy")
            np.save(path, data[i])
        paths.append(path)
    return paths, data


def store_state(path):
    """Every file of a store with its bytes, to check that a refused call changed nothing."""
    state = {}
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                state[os.path.relpath(os.path.join(root, name), path)] = handle.read()
    return state


def attributes(path):
    return zarr.open_group(path, mode="r").attrs.asdict()


@pytest.fixture
def cutouts(tmp_path):
    return write_cutouts(tmp_path / "in", 20, fits_at=(3,))


def test_round_trip_values_ids_sources_labels(tmp_path, cutouts):
    paths, data = cutouts
    labels = [1, 0] * 10
    out = str(tmp_path / "s.zarr")
    summary = pack_cutouts(paths, out, labels=labels, chunk_rows=6)
    assert summary["rows_written"] == 20 and summary["rows_skipped"] == 0 and not summary["resumed"]
    store = LensZarrArray(out)
    assert store.shape == (20, *SHAPE) and len(store) == 20 and store.ndim == 4 and store.dtype == np.float32
    values = store[:]
    assert values.dtype == np.float32 and np.array_equal(values, data)  # the FITS row too (big-endian on disk)
    assert np.array_equal(np.asarray(store), data)
    assert list(store.sources) == paths
    assert list(store.ids) == [f"c{i}" for i in range(20)]  # c3.fits -> "c3"
    assert store.labels.dtype == np.int8 and list(store.labels) == labels
    attrs = attributes(out)
    assert attrs["lensclf_store"] == 1 and attrs["complete"] is True
    assert attrs["rows_done"] == 20 and attrs["inputs_done"] == 20 and attrs["shape"] == list(SHAPE)
    assert [b["n_inputs"] for b in attrs["input_batches"]] == [20]
    images = zarr.open_group(out, mode="r")["images"]
    assert images.chunks == (6, *SHAPE) and images.dtype == np.float32
    assert "blosc" in type(images.compressors[0]).__name__.lower()
    assert is_zarr_store(out) and is_zarr_store(tmp_path / "other.zarr") and not is_zarr_store(tmp_path / "in")


def test_default_chunks_and_labels(tmp_path, cutouts):
    assert default_chunk_rows((3, 64, 64)) == 170
    out = tmp_path / "s.zarr"
    pack_cutouts(cutouts[0], out)
    group = zarr.open_group(str(out), mode="r")
    assert group["images"].chunks == (default_chunk_rows(SHAPE), *SHAPE)
    assert list(LensZarrArray(out).labels) == [-1] * 20
    with pytest.raises(ValueError, match="labels"):
        pack_cutouts(cutouts[0], tmp_path / "t.zarr", labels=[2] * 20)
    with pytest.raises(ValueError, match="one entry per input"):
        pack_cutouts(cutouts[0], tmp_path / "t.zarr", ids=["a"])


def test_indexing(tmp_path, cutouts):
    paths, data = cutouts
    out = tmp_path / "s.zarr"
    pack_cutouts(paths, out, chunk_rows=4)
    store = LensZarrArray(out)
    assert np.array_equal(store[5], data[5]) and np.array_equal(store[-1], data[-1])
    assert np.array_equal(store[3:11:2], data[3:11:2])
    assert np.array_equal(store[np.array([17, 2, 2, 9])], data[[17, 2, 2, 9]])
    mask = np.arange(20) % 3 == 0
    assert np.array_equal(store[mask], data[mask])
    assert np.array_equal(store[2:6, 1], data[2:6, 1]) and np.array_equal(store[(7, 0, 3)], data[7, 0, 3])
    assert store[[]].shape == (0, *SHAPE)
    with pytest.raises(IndexError):
        store[20]
    with pytest.raises(IndexError):
        store[np.ones(3, bool)]


def test_reads_only_the_needed_chunks(tmp_path, cutouts):
    paths, data = cutouts
    out = tmp_path / "s.zarr"
    pack_cutouts(paths, out, chunk_rows=4)
    chunk_folder = out / "images" / "c"
    assert sorted(os.listdir(chunk_folder), key=int) == [str(k) for k in range(5)]  # 20 rows / 4
    for k in (0, 2, 3, 4):  # corrupt every chunk but the one of rows 4..7
        (chunk_folder / str(k) / "0" / "0" / "0").write_bytes(b"not a blosc chunk")
    store = LensZarrArray(out)
    assert np.array_equal(store[5], data[5]) and np.array_equal(store[4:8], data[4:8])
    with pytest.raises(LensDataError, match=r"s\.zarr\[8:9\]: cannot be read.*damaged"):
        store[8]  # a corrupt chunk is read: so the reads above did not touch them


def test_pickle_round_trip(tmp_path, cutouts):
    paths, data = cutouts
    out = tmp_path / "s.zarr"
    pack_cutouts(paths, out, labels=[1] * 5 + [0] * 15, chunk_rows=8)
    lenses = LensZarrArray(out, rows=LensZarrArray(out).labels == 1)
    copy = pickle.loads(pickle.dumps(lenses))
    assert copy.shape == (5, *SHAPE) and copy.path == os.fspath(out)
    assert np.array_equal(copy[:], data[:5]) and list(copy.ids) == [f"c{i}" for i in range(5)]
    assert np.array_equal(pickle.loads(pickle.dumps(LensZarrArray(out)))[12], data[12])


def test_interrupted_pack_resumes(tmp_path, cutouts):
    paths, data = cutouts
    good = data[11].copy()
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    np.save(paths[11], bad)
    out = tmp_path / "s.zarr"
    with pytest.raises(LensDataError, match="c11.npy.*NaN"):
        pack_cutouts(paths, out, chunk_rows=4, labels=[0] * 20)
    attrs = attributes(out)
    assert attrs["complete"] is False and attrs["rows_done"] == 8 and attrs["inputs_done"] == 8
    assert is_zarr_store(out)
    with pytest.raises(LensDataError, match=r"incomplete store: packed 8 rows from 8 of 20 .*rerun lensclf pack"):
        LensZarrArray(out)
    # a crash after a block's rows were written but before they were counted: garbage rows past rows_done
    group = zarr.open_group(str(out), mode="r+")
    for name in ("images", "source", "id", "label"):
        group[name].resize((11, *group[name].shape[1:]))
    group["images"][8:11] = 7.0
    group["source"][8:11] = ["junk"] * 3

    np.save(paths[11], good)  # fix the file, rerun with the same inputs
    summary = pack_cutouts(paths, out, labels=[0] * 20)
    assert summary["resumed"] and summary["rows_written"] == 12 and summary["rows_total"] == 20
    store = LensZarrArray(out)
    assert np.array_equal(store[:], data) and list(store.sources) == paths and list(store.labels) == [0] * 20
    attrs = attributes(out)
    assert attrs["complete"] is True and attrs["rows_done"] == attrs["inputs_done"] == 20
    again = pack_cutouts(paths, out)
    assert again["up_to_date"] and again["rows_written"] == 0


def test_incomplete_store_refuses_other_sources(tmp_path, cutouts):
    paths, _ = cutouts
    np.save(paths[9], np.zeros(SHAPE, np.float32))  # blank: stops the pack in the third block
    out = tmp_path / "s.zarr"
    with pytest.raises(LensDataError, match="blank"):
        pack_cutouts(paths, out, chunk_rows=4)
    before = store_state(out)
    with pytest.raises(LensDataError, match="incomplete store.*other inputs"):
        pack_cutouts(paths[:15], out)
    with pytest.raises(LensDataError, match="incomplete store"):
        pack_cutouts(paths[:15], out, append=True)
    assert store_state(out) == before


def test_append_same_shape(tmp_path, cutouts):
    paths, data = cutouts
    more, more_data = write_cutouts(tmp_path / "more", 7, seed=1, prefix="m")
    out = tmp_path / "s.zarr"
    pack_cutouts(paths, out, chunk_rows=6)
    with pytest.raises(LensDataError, match="append=True"):
        pack_cutouts(more, out)
    summary = pack_cutouts(more, out, append=True, labels=[1] * 7)
    assert summary["rows_written"] == 7 and summary["rows_total"] == 27
    store = LensZarrArray(out)
    assert np.array_equal(store[:], np.concatenate([data, more_data]))
    assert list(store.ids[20:]) == [f"m{i}" for i in range(7)] and list(store.labels) == [-1] * 20 + [1] * 7
    attrs = attributes(out)
    assert [b["n_inputs"] for b in attrs["input_batches"]] == [20, 7] and attrs["inputs_done"] == 27
    assert pack_cutouts(more, out, append=True)["up_to_date"]  # the same batch is not added twice


def test_append_other_shape_refused(tmp_path, cutouts):
    paths, _ = cutouts
    out = tmp_path / "s.zarr"
    pack_cutouts(paths, out, chunk_rows=6)
    before = store_state(out)
    wide, _ = write_cutouts(tmp_path / "wide", 4, shape=(3, 20, 20), prefix="w")
    for errors in ("raise", "skip"):
        with pytest.raises(LensDataError, match=r"w0.npy: has shape \(3, 20, 20\).*\(3, 16, 16\)"):
            pack_cutouts(wide, out, append=True, errors=errors)
    mixed = write_cutouts(tmp_path / "mixed", 3, prefix="x")[0] + wide[:1]
    with pytest.raises(LensDataError, match=r"w0.npy: has shape \(3, 20, 20\)"):
        pack_cutouts(mixed, out, append=True)
    assert store_state(out) == before


def test_errors_skip_lists_bad_files(tmp_path, cutouts):
    paths, data = cutouts
    with open(paths[2], "wb") as handle:
        handle.write(b"\x93NUMPY garbage")  # unreadable header
    nan = data[13].copy()
    nan[1, 2, 3] = np.nan
    np.save(paths[13], nan)  # found only when the pixels are read
    out = tmp_path / "s.zarr"
    summary = pack_cutouts(paths, out, errors="skip", chunk_rows=4)
    assert [path for path, _ in summary["skipped"]] == [paths[2], paths[13]]
    assert summary["rows_skipped"] == 2 and summary["rows_written"] == 18
    keep = [i for i in range(20) if i not in (2, 13)]
    store = LensZarrArray(out)
    assert np.array_equal(store[:], data[keep]) and list(store.sources) == [paths[i] for i in keep]
    with pytest.raises(LensDataError, match="c2.npy"):
        pack_cutouts(paths, tmp_path / "t.zarr")
    assert not os.path.exists(tmp_path / "t.zarr")  # header problems are found before anything is written


def test_band_files(tmp_path):
    rng = np.random.default_rng(3)
    cube = rng.random((3, 8, 8), dtype=np.float32)
    bands = []
    for b, name in enumerate("gri"):
        path = str(tmp_path / f"obj7_{name}.fits")
        fits.PrimaryHDU(cube[b].astype(">f4")).writeto(path)
        bands.append(path)
    source = BandFiles(bands, object_id="obj7")
    out = tmp_path / "s.zarr"
    pack_cutouts([source], out)
    store = LensZarrArray(out)
    assert np.array_equal(store[0], cube) and list(store.ids) == ["obj7"] and list(store.sources) == [str(source)]


def test_not_a_store(tmp_path, cutouts):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hello")
    with pytest.raises(LensDataError, match="not a cutout store"):
        LensZarrArray(plain)
    with pytest.raises(LensDataError, match="not a cutout store"):
        pack_cutouts(cutouts[0], plain)
    zarr.create_group(str(tmp_path / "other.zarr"), zarr_format=3)
    with pytest.raises(LensDataError, match="not a lensclf cutout store"):
        LensZarrArray(tmp_path / "other.zarr")
    with pytest.raises(FileNotFoundError):
        LensZarrArray(tmp_path / "missing.zarr")


def test_bad_pixels_in_store_named(tmp_path, cutouts):
    out = tmp_path / "s.zarr"
    pack_cutouts(cutouts[0], out, chunk_rows=4)
    zarr.open_group(str(out), mode="r+")["images"][6, 0, 0, 0] = np.nan
    store = LensZarrArray(out)
    with pytest.raises(LensDataError, match=r"s\.zarr\[6\]: has 1 NaN"):
        store[4:8]
    assert np.array_equal(store[:6], cutouts[1][:6])


def test_missing_zarr_message(tmp_path):
    code = (
        "import sys; sys.modules['zarr'] = None\n"
        "from lensclf._zarr import pack_cutouts\n"
        "try:\n"
        f"    pack_cutouts([{str(tmp_path / 'x.npy')!r}], {str(tmp_path / 's.zarr')!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random(SHAPE, dtype=np.float32))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert "needs zarr: pip install 'lensclf[zarr]'" in result.stdout


# --------------------------------------------------------------------------- the command line and the estimator


def test_pack_train_predict_and_evaluate_from_stores_on_real_files(tmp_path):
    from conftest import REAL_SAMPLE
    from test_cli import read_csv, run_cli

    from lensclf import LensClassifier, load_lens_dir

    for split in ("train", "test"):
        code, _, err = run_cli(["pack", REAL_SAMPLE, "--split", split, "--out", tmp_path / f"{split}.zarr",
                                "--chunk-rows", 6, "--quiet"])
        assert code == 0, err
    X_test, y_test, paths = load_lens_dir(REAL_SAMPLE, "test", return_paths=True)
    store = LensZarrArray(tmp_path / "test.zarr")
    np.testing.assert_array_equal(store[:], X_test)
    assert store.labels.tolist() == y_test.tolist() and list(store.sources) == paths
    assert list(store.ids) == [os.path.basename(p).removesuffix(".npy") for p in paths]

    code, _, err = run_cli(["train", tmp_path / "train.zarr", "--out", tmp_path / "run", "--epochs", 1,
                            "--batch-size", 8, "--weights", "none", "--seed", 0, "--device", "cpu", "--quiet"])
    assert code == 0, err
    model = tmp_path / "run" / "model.safetensors"
    code, _, err = run_cli(["predict", model, tmp_path / "test.zarr", "--out", tmp_path / "p.csv", "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    clf = LensClassifier.load(model, device="cpu")
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X_test)[:, 1], rtol=1e-5)
    assert [r["source"] for r in rows] == paths and [r["index"] for r in rows] == [str(i) for i in range(20)]
    assert [r["id"] for r in rows] == list(store.ids)
    code, _, err = run_cli(["evaluate", model, tmp_path / "test.zarr", "--out", tmp_path / "report", "--quiet"])
    assert code == 0, err
    assert '"n_lenses": 10' in (tmp_path / "report" / "metrics.json").read_text()


def test_the_estimator_trains_on_a_store_lazily_as_on_the_array(tmp_path, cutouts):
    from lensclf import LensClassifier

    paths, data = cutouts
    labels = [i % 2 for i in range(len(paths))]
    pack_cutouts(paths, tmp_path / "s.zarr", labels=labels, chunk_rows=4)
    store = LensZarrArray(tmp_path / "s.zarr")
    params = dict(max_epochs=2, batch_size=4, weights=None, verbose=0, random_state=0, device="cpu")
    lazy = LensClassifier(**params).fit(store, store.labels.astype(int))
    eager = LensClassifier(**params).fit(data, np.array(labels))
    np.testing.assert_allclose(lazy.predict_proba(store), eager.predict_proba(data), rtol=1e-5, atol=1e-7)
