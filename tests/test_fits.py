"""FITS cutouts (astropy), class folders with band sub-folders, sizes other than the model's, catalogues.

Real files: 30 FITS files of the Bologna Lens Finding Challenge 1 (tests/data/lens_challenge1_fits, written by
another project: big-endian float32, one file per band, 101 x 101). Every error case is a file written here.
"""

import csv
import gzip
import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from lensclf import LensClassifier, LensDataError, LensFileArray, load_class_folders, load_lens_dir
from lensclf._fits import BandFiles

from conftest import HERE
from test_cli import read_csv, run_cli

CHALLENGE = os.path.join(HERE, "data", "lens_challenge1_fits")
GROUND, SPACE = os.path.join(CHALLENGE, "ground_based"), os.path.join(CHALLENGE, "space_based")
FAST = ["--epochs", 1, "--batch-size", 4, "--weights", "none", "--seed", 0, "--device", "cpu", "--quiet"]


def _band_paths(cls, object_id):
    folder = os.path.join(GROUND, cls)
    return [os.path.join(folder, f"Band{b}", f"imageSDSS_{c}-{object_id}.fits") for b, c in zip("1234", "RIGU")]


def _write(path, data, header=None, compressed=False):
    hdus = [fits.PrimaryHDU()]
    if compressed:
        hdus.append(fits.CompImageHDU(data, header=header))
    else:
        hdus = [fits.PrimaryHDU(data, header=header)]
    fits.HDUList(hdus).writeto(path)
    return str(path)


def _tiny_model(tmp_path, X, y):
    """A classifier trained for one epoch from random weights, and its model file."""
    clf = LensClassifier(max_epochs=1, weights=None, batch_size=4, valid_size=None, verbose=0, random_state=0)
    clf.fit(X, y).save(tmp_path / "m.safetensors")
    return clf, tmp_path / "m.safetensors"


# --------------------------------------------------------------------------- real files


def test_real_big_endian_files_are_read_by_value_as_native_float32():
    paths = sorted(os.path.join(SPACE, "lens", n) for n in os.listdir(os.path.join(SPACE, "lens")))
    array = LensFileArray(paths)
    assert array.shape == (3, 1, 101, 101)
    X = array[:]
    assert X.dtype == np.float32 and X.dtype.isnative
    raw = fits.getdata(paths[0])
    assert raw.dtype.byteorder == ">"  # the file really is big-endian
    np.testing.assert_array_equal(X[0, 0], raw.astype(np.float32))


def test_ground_based_band_folders_are_matched_by_id_in_band_order():
    X, y, paths = load_class_folders(GROUND, return_paths=True)
    assert X.shape == (6, 4, 101, 101) and list(y) == [1, 1, 1, 0, 0, 0]
    first_id = paths[0].split("-")[-1].removesuffix(".fits")
    expected = _band_paths("lens", first_id)
    assert paths[0] == " + ".join(expected)  # every band file named, in band order
    for band, path in enumerate(expected):
        np.testing.assert_array_equal(X[0, band], fits.getdata(path).astype(np.float32))
    # an explicit band order (g, r, i from Band3, Band1, Band2) is the order of the cutout's bands
    X_gri = load_class_folders(GROUND, bands=["Band3", "Band1", "Band2"])[0]
    np.testing.assert_array_equal(X_gri, X[:, [2, 0, 1]])


def test_space_based_class_folders_and_a_mapping_of_classes(tmp_path):
    X, y = load_class_folders(SPACE)
    assert X.shape == (6, 1, 101, 101) and y.tolist() == [1, 1, 1, 0, 0, 0]
    root = tmp_path / "renamed"
    shutil.copytree(SPACE, root)
    os.rename(root / "lens", root / "SL")
    os.rename(root / "nolens", root / "field")
    with pytest.raises(FileNotFoundError, match="Pass classes="):
        load_class_folders(root)
    X2, y2 = load_class_folders(root, classes={"SL": 1, "field": 0})
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_deeplense_layout_of_fits_files(tmp_path):
    root = tmp_path / "set"
    for split in ("train", "test"):
        for kind, cls in (("lenses", "lens"), ("nonlenses", "nolens")):
            shutil.copytree(os.path.join(SPACE, cls), root / f"{split}_{kind}")
    X, y = load_lens_dir(root, "test")
    np.testing.assert_array_equal(X, load_class_folders(SPACE)[0])
    assert y.tolist() == [1, 1, 1, 0, 0, 0]


# --------------------------------------------------------------------------- generated error cases


def test_missing_band_file_and_mismatched_band_sizes(tmp_path):
    root = tmp_path / "ground"
    shutil.copytree(GROUND, root)
    victim = sorted(os.listdir(root / "lens" / "Band3"))[0]
    os.remove(root / "lens" / "Band3" / victim)
    object_id = victim.split("-")[-1].removesuffix(".fits")
    with pytest.raises(LensDataError, match=rf"ID {object_id}: has no file for band\(s\) Band3"):
        load_class_folders(root)
    with pytest.warns(Warning, match="skipped 1 object"):
        X, y, skipped = load_class_folders(root, errors="skip", return_skipped=True)
    assert len(X) == 5 and object_id in skipped[0][0]
    code, _, err = run_cli(["pack", root, "--out", tmp_path / "s.zarr", "--quiet"])
    assert code == 1 and f"ID {object_id}" in err and "--errors skip" in err
    code, _, err = run_cli(["pack", root, "--out", tmp_path / "s.zarr", "--quiet", "--errors", "skip"])
    assert code == 0 and f"ID {object_id}" in err
    from lensclf import LensZarrArray

    np.testing.assert_array_equal(LensZarrArray(tmp_path / "s.zarr")[:], X)

    odd = sorted(os.listdir(root / "nolens" / "Band2"))[0]
    os.remove(root / "nolens" / "Band2" / odd)
    _write(root / "nolens" / "Band2" / odd, np.ones((64, 64), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, skipped = load_class_folders(root, errors="skip", return_skipped=True)
    reasons = dict(skipped)
    assert any("band 2" in r and "is 64 x 64 but band 1 is 101 x 101" in r for r in reasons.values()), reasons


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"hello, not fits" * 300), ["not a readable FITS file"]),
    (lambda p: p.write_bytes(b""), ["empty"]),
    (lambda p: p.write_bytes(open(_write(p.with_suffix(".full.fits"), np.ones((3, 8, 8), np.float32)), "rb")
                             .read()[:3000]), ["truncated"]),
    (lambda p: fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.ones(3))])]).writeto(p), ["holds no image"]),
    (lambda p: _write(p, np.full((3, 8, 8), np.nan, np.float32)), ["NaN"]),
    (lambda p: _write(p, np.arange(192, dtype=np.int16).reshape(3, 8, 8), fits.Header([("BLANK", 5)])),
     ["blank pixel", "BLANK = 5"]),
    (lambda p: _write(p, np.ones((2, 3, 8, 8), np.float32)), ["4-D"]),
])
def test_unusable_fits_files_are_named_with_the_problem(tmp_path, make, words):
    good = _write(tmp_path / "good.fits", np.random.default_rng(0).random((3, 8, 8)).astype(">f4"))
    bad = tmp_path / "bad.fits"
    make(bad)
    with pytest.raises(LensDataError) as info:
        LensFileArray([good, str(bad)])[:]
    message = str(info.value)
    assert "bad.fits" in message and all(word in message for word in words), message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = LensFileArray([good, str(bad)], errors="skip")
    if array.paths != [good]:  # the header looked fine: the problem is found when the pixels are read
        with pytest.raises(LensDataError, match="bad.fits"):
            array[:]


def test_cube_in_an_extension_gzip_tile_compression_and_scaling(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.random((3, 16, 16)).astype(np.float32)
    ext = tmp_path / "ext.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube.astype(">f8"))]).writeto(ext)
    gz = tmp_path / "cube.fits.gz"
    with gzip.open(gz, "wb") as handle:
        fits.PrimaryHDU(cube).writeto(handle)
    fz = _write(tmp_path / "cube.fits.fz", cube, compressed=True)
    counts = (cube * 1000).astype(np.int16)
    scaled_hdu = fits.PrimaryHDU(counts)
    scaled_hdu.header["BSCALE"], scaled_hdu.header["BZERO"] = 0.001, 0.0
    scaled_hdu.writeto(tmp_path / "scaled.fits")
    X = LensFileArray([str(ext), str(gz), fz, str(tmp_path / "scaled.fits")])[:]
    np.testing.assert_array_equal(X[0], cube)
    np.testing.assert_array_equal(X[1], cube)
    np.testing.assert_array_equal(X[2], fits.getdata(fz, ext=1))  # tile compression quantises: astropy's values
    np.testing.assert_allclose(X[2], cube, atol=0.05)
    np.testing.assert_allclose(X[3], counts * 0.001, rtol=1e-6)


def test_band_files_pickle_and_name_every_file():
    group = BandFiles(_band_paths("lens", "100002"), "100002")
    import pickle

    again = pickle.loads(pickle.dumps(group))
    assert again == group and again.object_id == "100002" and str(again).count(" + ") == 3


# --------------------------------------------------------------------------- end to end from the command line


@pytest.fixture(scope="module")
def ground_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("fits") / "run"
    code, _, err = run_cli(["train", GROUND, "--out", run, "--valid-size", "none", *FAST])
    assert code == 0, err
    return run / "model.safetensors"


def test_train_and_predict_on_4_band_101_pixel_fits_from_the_cli(ground_model, tmp_path):
    clf = LensClassifier.load(ground_model, device="cpu")
    assert clf.input_shape_ == (4, 101, 101)
    metadata = __import__("lensclf").read_model_metadata(ground_model)
    assert metadata["training_data"]["bands"] == ["Band1", "Band2", "Band3", "Band4"]
    code, _, err = run_cli(["evaluate", ground_model, GROUND, "--out", tmp_path / "report", "--quiet"])
    assert code == 0, err
    X, _, paths = load_class_folders(GROUND, return_paths=True)
    scores = [float(r["score"]) for r in read_csv(tmp_path / "report" / "scores.csv")]
    np.testing.assert_allclose(scores, clf.predict_proba(X)[:, 1], rtol=1e-5)
    code, _, err = run_cli(["predict", ground_model, GROUND, "--out", tmp_path / "p.csv", "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert [r["source"] for r in rows] == paths  # each object's four band files, in band order
    np.testing.assert_allclose([float(r["score"]) for r in rows], scores, rtol=1e-5)


def test_other_sizes_are_refused_unless_cropped_or_resized(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.random((6, 1, 32, 32)).astype(np.float32)
    clf, model = _tiny_model(tmp_path, X, np.array([0, 1] * 3))
    big = [_write(tmp_path / f"big{i}.fits", rng.random((40, 40)).astype(">f4")) for i in range(3)]
    code, _, err = run_cli(["predict", model, *big, "--out", tmp_path / "a.csv"])
    assert code == 1 and "big0.fits" in err and "40 x 40" in err and "--fit-size crop" in err
    assert not (tmp_path / "a.csv").exists()
    code, _, err = run_cli(["predict", model, *big, "--out", tmp_path / "crop.csv", "--fit-size", "crop", "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "crop.csv")
    assert [r["fit_size"] for r in rows] == ["crop 40x40->32x32"] * 3
    cutouts = LensFileArray(big)[:]
    np.testing.assert_allclose([float(r["score"]) for r in rows],
                               clf.predict_proba(cutouts[:, :, 4:36, 4:36])[:, 1], rtol=1e-5)
    code, _, err = run_cli(["predict", model, *big, "--out", tmp_path / "r.csv", "--fit-size", "resize", "--quiet"])
    assert code == 0 and read_csv(tmp_path / "r.csv")[0]["fit_size"] == "resize 40x40->32x32"
    two_bands = _write(tmp_path / "two.fits", rng.random((2, 32, 32)).astype(np.float32))
    code, _, err = run_cli(["predict", model, two_bands, "--out", tmp_path / "b.csv", "--fit-size", "resize"])
    assert code == 1 and "2 band(s)" in err


def test_catalogue_columns_are_copied_and_parquet_equals_csv(tmp_path):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(3)
    X = rng.random((8, 3, 16, 16)).astype(np.float32)
    clf, model = _tiny_model(tmp_path, X, np.array([0, 1] * 4))
    np.save(tmp_path / "stack.npy", X[:5])
    _write(tmp_path / "one.fits", X[5])
    with open(tmp_path / "cat.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["objid", "ra", "path", "row"])
        writer.writerows([["a", "10.5", "stack.npy", 3], ["b", "11.0", "one.fits", ""], ["c", "12.0", "stack.npy", 0],
                          ["d", "13.0", "stack.npy", ""]])  # no row: every row of the stack, each with d's columns
    code, _, err = run_cli(["predict", model, "--catalog", tmp_path / "cat.csv", "--out", tmp_path / "s.csv",
                            "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "s.csv")
    assert [(r["objid"], r["ra"], r["index"]) for r in rows] == [
        ("a", "10.5", "3"), ("b", "11.0", ""), ("c", "12.0", "0")] + [("d", "13.0", str(i)) for i in range(5)]
    np.testing.assert_allclose([float(r["score"]) for r in rows],
                               clf.predict_proba(X[[3, 5, 0, 0, 1, 2, 3, 4]])[:, 1], rtol=1e-5)
    code, _, err = run_cli(["predict", model, "--catalog", tmp_path / "cat.csv", "--out", tmp_path / "s.parquet",
                            "--quiet"])
    assert code == 0, err
    table = pyarrow_parquet.read_table(tmp_path / "s.parquet").to_pydict()
    assert table["objid"] == ["a", "b", "c"] + ["d"] * 5 and table["index"] == [3, None, 0, 0, 1, 2, 3, 4]
    np.testing.assert_allclose(table["score"], [float(r["score"]) for r in rows], rtol=1e-12)
    with open(tmp_path / "bad.csv", "w") as handle:
        handle.write("objid,file,row\na,stack.npy,x\n")
    code, _, err = run_cli(["predict", model, "--catalog", tmp_path / "bad.csv", "--out", tmp_path / "x.csv"])
    assert code == 1 and "line 2" in err and "'x'" in err


def test_skipped_stack_rows_are_named_by_their_row_past_the_first_chunk_and_a_truncated_stack_is_skipped(tmp_path):
    from lensclf.workflows import PREDICT_CHUNK_SIZE

    rng = np.random.default_rng(4)
    X = rng.random((PREDICT_CHUNK_SIZE + 8, 1, 8, 8)).astype(np.float32)
    clf, model = _tiny_model(tmp_path, X[:8], np.array([0, 1] * 4))
    bad_row = PREDICT_CHUNK_SIZE + 3
    X[bad_row, 0, 2, 2] = np.nan
    np.save(tmp_path / "big.npy", X)
    np.save(tmp_path / "cut.npy", X[:10])
    with open(tmp_path / "cut.npy", "r+b") as handle:
        handle.truncate(400)
    code, _, err = run_cli(["predict", model, tmp_path / "big.npy", tmp_path / "cut.npy", "--out",
                            tmp_path / "s.csv", "--errors", "skip", "--quiet"])
    assert code == 0, err
    assert f"big.npy[{bad_row}]" in err and "cut.npy" in err and "truncated" in err
    rows = read_csv(tmp_path / "s.csv")
    kept = [i for i in range(len(X)) if i != bad_row]
    assert [int(r["index"]) for r in rows] == kept
