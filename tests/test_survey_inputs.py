"""Survey inputs on the command line: --classes, --bands and --id-pattern, and folders of band folders.

Class folders with other names (``SL/ field/``), band folders in a given order, object IDs read by a given
pattern, and unlabelled folders whose entries are band folders (``survey/Band1/ survey/Band2/ ...``), through
``lensclf train``, ``evaluate``, ``pack`` and ``predict``. The files are written here (2-D FITS, 16 x 16) or
copied from the real Challenge-1 files (tests/data/lens_challenge1_fits); one tiny model is trained once.
"""

import json
import os
import shutil
import types

import numpy as np
import pytest
from astropy.io import fits

import lensclf
from lensclf import LensClassifier, LensZarrArray, workflows
from lensclf._inputs import input_kind

from conftest import REAL_SAMPLE
from test_cli import error_lines, read_csv, run_cli
from test_fits import FAST, GROUND, SPACE

CLASSES, BANDS, ID_PATTERN = "SL=1,field=0", "r,g", r"cut(\d+)_"
OPTIONS = ["--classes", CLASSES, "--bands", BANDS, "--id-pattern", ID_PATTERN]
GROUND_BANDS = ["Band1", "Band2", "Band3", "Band4"]


def _write_band_folders(folder, ids, rng):
    """``folder/g/cut{ID}_v2.fits`` and ``folder/r/...`` (the default ID, the last number, is 2 for all);
    returns the cutouts (n, 2, 16, 16) with bands (r, g), in the order of ``ids``."""
    cutouts = []
    for object_id in ids:
        bands = {"g": rng.normal(0, 1, (16, 16)), "r": rng.normal(5, 1, (16, 16))}  # r is brighter: a swap shows
        for band, image in bands.items():
            os.makedirs(folder / band, exist_ok=True)
            fits.PrimaryHDU(image.astype(">f4")).writeto(folder / band / f"cut{object_id}_v2.fits")
        cutouts.append([bands["r"], bands["g"]])
    return np.asarray(cutouts, dtype=np.float32)


def _ground_band_file(band, object_id):
    """The real Challenge-1 file of ``band`` (Band1..Band4) of an object, in its lens/ or nolens/ folder."""
    letter = "RIGU"[GROUND_BANDS.index(band)]
    for cls in ("lens", "nolens"):
        path = os.path.join(GROUND, cls, band, f"imageSDSS_{letter}-{object_id}.fits")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(path)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Class folders SL/ (4 lenses) and field/ (4 non-lenses) with band folders g/ r/, a model trained on them
    with --classes, --bands r,g and --id-pattern (its checkpoint folder kept, as after an interruption), and the
    cutouts with bands (r, g)."""
    base = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(0)
    root = base / "labelled"
    X = np.concatenate([_write_band_folders(root / "SL", [1, 2, 3, 10], rng),
                        _write_band_folders(root / "field", [4, 5, 6, 11], rng)])
    run = base / "run"
    with pytest.MonkeyPatch.context() as patch:  # the checkpoint folder stays, for --resume
        patch.setattr(workflows, "shutil", types.SimpleNamespace(rmtree=lambda *args, **kwargs: None))
        code, _, err = run_cli(["train", root, "--out", run, "--valid-size", "none", *OPTIONS, *FAST])
    assert code == 0, err
    return types.SimpleNamespace(root=root, run=run, model=run / "model.safetensors", X=X,
                                 y=np.array([1] * 4 + [0] * 4), ids=["1", "2", "3", "10", "4", "5", "6", "11"])


# --------------------------------------------------------------------------- train, evaluate, pack, resume


def test_train_reads_the_renamed_class_folders_and_records_the_options(survey):
    clf = LensClassifier.load(survey.model, device="cpu")
    assert clf.input_shape_ == (2, 16, 16)
    data = lensclf.read_model_metadata(survey.model)["training_data"]
    assert data["layout"] == "class_folders" and data["bands"] == ["r", "g"]
    assert data["classes"] == {"SL": 1, "field": 0} and data["id_pattern"] == ID_PATTERN
    assert data["n_lenses"] == 4 and data["n_nonlenses"] == 4
    saved = json.loads((survey.run / "checkpoint" / "params.json").read_text())
    assert saved["layout"] == {"classes": {"SL": 1, "field": 0}, "bands": ["r", "g"], "id_pattern": ID_PATTERN}
    # without the options the folders are no class layout, and without --id-pattern every file is object 2
    code, _, err = run_cli(["train", survey.root, "--out", survey.run.parent / "no", *FAST])
    assert code == 1 and "does not hold the DeepLense folder layout" in err
    code, _, err = run_cli(["train", survey.root, "--out", survey.run.parent / "no", "--classes", CLASSES, *FAST])
    assert code == 1 and "has the same object ID 2" in err


def test_evaluate_uses_the_options_and_the_band_order(survey, tmp_path):
    clf = LensClassifier.load(survey.model, device="cpu")
    code, _, err = run_cli(["evaluate", survey.model, survey.root, "--out", tmp_path / "rg", *OPTIONS, "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "rg" / "scores.csv")
    assert [r["name"] for r in rows] == [f"{cls}/r/cut{i}_v2.fits + {cls}/g/cut{i}_v2.fits"
                                         for cls, i in zip(["SL"] * 4 + ["field"] * 4, survey.ids)]
    assert [int(r["label"]) for r in rows] == survey.y.tolist()
    expected = clf.predict_proba(survey.X)[:, 1]
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-5)
    swapped = ["--classes", CLASSES, "--bands", "g,r", "--id-pattern", ID_PATTERN]
    code, _, err = run_cli(["evaluate", survey.model, survey.root, "--out", tmp_path / "gr", *swapped, "--quiet"])
    assert code == 0, err
    scores = [float(r["score"]) for r in read_csv(tmp_path / "gr" / "scores.csv")]
    np.testing.assert_allclose(scores, clf.predict_proba(survey.X[:, ::-1])[:, 1], rtol=1e-5)
    assert not np.allclose(scores, expected)


def test_pack_labels_the_renamed_classes_and_honours_the_band_order(survey, tmp_path):
    code, _, err = run_cli(["pack", survey.root, "--out", tmp_path / "rg.zarr", *OPTIONS, "--quiet"])
    assert code == 0, err
    store = LensZarrArray(tmp_path / "rg.zarr")
    np.testing.assert_array_equal(store[:], survey.X)
    assert store.labels.tolist() == survey.y.tolist()
    assert list(store.meta("id", range(len(store)))) == survey.ids
    code, _, err = run_cli(["pack", survey.root, "--out", tmp_path / "gr.zarr", "--classes", "field=0,SL=1",
                            "--bands", "g,r", "--id-pattern", ID_PATTERN, "--quiet"])
    assert code == 0, err
    store = LensZarrArray(tmp_path / "gr.zarr")  # the classes in the order given, the bands swapped
    np.testing.assert_array_equal(store[:], np.concatenate([survey.X[4:], survey.X[:4]])[:, ::-1])
    assert store.labels.tolist() == [0] * 4 + [1] * 4


def test_resume_continues_with_the_options_the_run_started_with(survey, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(survey.run, run)
    code, _, err = run_cli(["train", survey.root, "--out", run, "--resume", "--bands", "g,r", "--quiet"])
    assert code == 1 and "started with --classes SL=1,field=0 --bands r,g" in err and "--resume" in err
    code, _, err = run_cli(["train", survey.root, "--out", run, "--resume", "--quiet"])  # no options: the saved ones
    assert code == 0, err
    assert not (run / "checkpoint").exists()
    assert lensclf.read_model_metadata(run / "model.safetensors")["training_data"]["bands"] == ["r", "g"]


# --------------------------------------------------------------------------- bad values and other layouts


@pytest.mark.parametrize("option, value, words", [
    ("--classes", "SL=2,field=0", ["label 1 (lens) or 0 (non-lens)", "'SL=2'"]),
    ("--classes", "SL,field=0", ["NAME=LABEL", "'SL'"]),
    ("--classes", "SL=1,other=1", ["a non-lens class (label 0)"]),
    ("--classes", "SL=1,SL=0", ["'SL' is given twice"]),
    ("--bands", "Band1,,Band2", ["band folder names separated by commas"]),
    ("--bands", "Band1,Band1", ["'Band1' is given twice"]),
    ("--id-pattern", r"cut(\d+", ["not a valid regular expression", "missing )"]),
    ("--id-pattern", r"\d+", ["a group that captures the object ID"]),
])
@pytest.mark.parametrize("command", [["train", "data", "--out", "run"], ["evaluate", "m", "data", "--out", "r"],
                                     ["pack", "data", "--out", "s.zarr"], ["predict", "m", "data", "--out", "p.csv"]])
def test_bad_option_values_are_one_line_usage_errors(command, option, value, words):
    code, _, err = run_cli([*command, option, value])
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and f"argument {option}:" in lines[0], err
    assert all(word in lines[0] for word in words), lines[0]


def test_the_options_are_refused_for_deeplense_layouts_stores_and_files(survey, tmp_path):
    code, _, err = run_cli(["train", REAL_SAMPLE, "--out", tmp_path / "run", "--bands", "Band1", *FAST])
    assert code == 1 and "is a DeepLense layout" in err and "--bands applies only to class folders" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()
    code, _, err = run_cli(["evaluate", survey.model, REAL_SAMPLE, "--out", tmp_path / "rep", "--classes", CLASSES])
    assert code == 1 and "is a DeepLense layout" in err and "--classes applies only" in err
    code, _, err = run_cli(["pack", REAL_SAMPLE, "--out", tmp_path / "s.zarr", "--id-pattern", ID_PATTERN])
    assert code == 1 and "is a DeepLense layout" in err and not (tmp_path / "s.zarr").exists()
    code, _, err = run_cli(["pack", survey.root, "--out", tmp_path / "s.zarr", *OPTIONS, "--quiet"])
    assert code == 0, err
    for extra in (["--bands", "r,g"], ["--scheduler", "local:1", "--bands", "r,g"]):
        code, _, err = run_cli(["predict", survey.model, tmp_path / "s.zarr", "--out", tmp_path / "p.csv", *extra])
        assert code == 1 and "is a zarr store; --bands applies only" in err, err
    one = os.path.join(SPACE, "lens", min(os.listdir(os.path.join(SPACE, "lens"))))
    code, _, err = run_cli(["pack", one, "--out", tmp_path / "t.zarr", "--bands", "Band1"])
    assert code == 1 and "is a file" in err
    # class folders of cutout files have no band folders to order
    code, _, err = run_cli(["pack", SPACE, "--out", tmp_path / "t.zarr", "--bands", "Band1"])
    assert code == 1 and "hold cutout files, not band folders" in err
    # a folder of band folders has no classes
    code, _, err = run_cli(["pack", GROUND + "/lens", "--out", tmp_path / "t.zarr", "--classes", CLASSES])
    assert code == 1 and "has no class folder SL/" in err
    code, _, err = run_cli(["train", GROUND + "/lens", "--out", tmp_path / "run", *FAST])
    assert code == 1 and "holds band folders but no class folders" in err
    code, _, err = run_cli(["predict", survey.model, "--catalog", tmp_path / "cat.csv", "--out", tmp_path / "p.csv",
                            "--bands", "r,g"])
    assert code == 1 and "not to the files of --catalog" in err


def test_bands_for_class_folders_of_cutout_files_is_an_error_not_ignored(tmp_path):
    with pytest.raises(ValueError, match="hold cutout files, not band folders") as excinfo:
        lensclf.load_class_folders(SPACE, bands=["Band1"])
    assert SPACE in str(excinfo.value)
    code, _, err = run_cli(["train", SPACE, "--out", tmp_path / "run", "--bands", "Band1", *FAST])
    assert code == 1 and "hold cutout files, not band folders" in err and not (tmp_path / "run").exists()
    *_, bands = lensclf.load_class_folders(GROUND, bands=GROUND_BANDS[::-1], return_bands=True)
    assert bands == GROUND_BANDS[::-1]
    *_, bands = lensclf.load_class_folders(SPACE, return_bands=True)
    assert bands is None


def test_what_each_input_is_taken_for(tmp_path):
    renamed = tmp_path / "renamed"
    shutil.copytree(SPACE, renamed)
    os.rename(renamed / "lens", renamed / "SL")
    os.rename(renamed / "nolens", renamed / "field")
    assert input_kind(REAL_SAMPLE) == "deeplense" and input_kind(GROUND) == "class_folders"
    assert input_kind(os.path.join(GROUND, "lens")) == "band_folders"
    assert input_kind(os.path.join(SPACE, "lens")) == "folder"
    assert input_kind(renamed, {"SL": 1, "field": 0}) == "class_folders"
    assert input_kind(tmp_path / "nothing") == "missing"
    deeplense_fits = tmp_path / "deeplense"  # FITS files in train_lenses/...: not band folders
    shutil.copytree(os.path.join(SPACE, "lens"), deeplense_fits / "train_lenses")
    assert input_kind(deeplense_fits) == "deeplense"


# --------------------------------------------------------------------------- folders of band folders


@pytest.fixture()
def ground_survey(tmp_path):
    """The 6 real ground-based objects as one unlabelled folder of band folders, survey/Band1 ... Band4."""
    root = tmp_path / "survey"
    for cls in ("lens", "nolens"):
        for band in GROUND_BANDS:
            os.makedirs(root / band, exist_ok=True)
            for name in os.listdir(os.path.join(GROUND, cls, band)):
                shutil.copy(os.path.join(GROUND, cls, band, name), root / band / name)
    return root


def test_pack_a_folder_of_band_folders_matches_the_objects_by_id_in_band_order(ground_survey, tmp_path):
    code, _, err = run_cli(["pack", ground_survey, "--out", tmp_path / "s.zarr", "--quiet"])
    assert code == 0, err
    store = LensZarrArray(tmp_path / "s.zarr")
    ids = ["100002", "100003", "100004", "100008", "100010", "100014"]
    assert list(store.meta("id", range(len(store)))) == ids and store.labels.tolist() == [-1] * 6
    letters = dict(zip(GROUND_BANDS, "RIGU"))
    assert list(store.sources) == [" + ".join(str(ground_survey / b / f"imageSDSS_{letters[b]}-{i}.fits")
                                              for b in GROUND_BANDS) for i in ids]
    for row, object_id in enumerate(ids):
        for band, name in enumerate(GROUND_BANDS):
            np.testing.assert_array_equal(store[row][band], fits.getdata(_ground_band_file(name, object_id)))
    code, _, err = run_cli(["pack", ground_survey, "--out", tmp_path / "swapped.zarr", "--bands",
                            "Band2,Band1,Band3,Band4", "--quiet"])
    assert code == 0, err
    swapped = LensZarrArray(tmp_path / "swapped.zarr")
    np.testing.assert_array_equal(swapped[:], store[:][:, [1, 0, 2, 3]])
    first, first_swapped = str(store.sources[0]).split(" + "), str(swapped.sources[0]).split(" + ")
    assert first_swapped == [first[1], first[0], *first[2:]]


def test_a_missing_band_file_of_a_folder_of_band_folders_is_named_or_skipped(ground_survey, tmp_path):
    os.remove(ground_survey / "Band3" / "imageSDSS_G-100008.fits")
    code, _, err = run_cli(["pack", ground_survey, "--out", tmp_path / "s.zarr", "--quiet"])
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1 and "ID 100008: has no file for band(s) Band3" in lines[0]
    assert "--errors skip" in lines[0] and not (tmp_path / "s.zarr").exists()
    code, _, err = run_cli(["pack", ground_survey, "--out", tmp_path / "s.zarr", "--errors", "skip", "--quiet"])
    assert code == 0 and "skipped" in err and "ID 100008" in err
    store = LensZarrArray(tmp_path / "s.zarr")
    assert list(store.meta("id", range(len(store)))) == ["100002", "100003", "100004", "100010", "100014"]


def test_predict_a_folder_of_band_folders_one_row_per_object(survey, tmp_path):
    clf = LensClassifier.load(survey.model, device="cpu")
    root = tmp_path / "field7"
    X = _write_band_folders(root, [3, 1, 12, 2], np.random.default_rng(1))  # IDs in natural order: 1 2 3 12
    order = [1, 3, 0, 2]
    options = ["--bands", BANDS, "--id-pattern", ID_PATTERN]
    code, _, err = run_cli(["predict", survey.model, root, "--out", tmp_path / "p.csv", *options, "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert [r["source"] for r in rows] == [f"{root}/r/cut{i}_v2.fits + {root}/g/cut{i}_v2.fits" for i in (1, 2, 3, 12)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X[order])[:, 1], rtol=1e-5)
    # natural band order by default (g, r): the other order of the same files
    code, _, err = run_cli(["predict", survey.model, root, "--out", tmp_path / "gr.csv", "--id-pattern", ID_PATTERN,
                            "--quiet"])
    assert code == 0, err
    rows = read_csv(tmp_path / "gr.csv")
    assert rows[0]["source"] == f"{root}/g/cut1_v2.fits + {root}/r/cut1_v2.fits"
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X[order][:, ::-1])[:, 1],
                               rtol=1e-5)
    os.remove(root / "g" / "cut3_v2.fits")
    code, _, err = run_cli(["predict", survey.model, root, "--out", tmp_path / "m.csv", *options])
    assert code == 1 and "ID 3: has no file for band(s) g" in err and not (tmp_path / "m.csv").exists()
    code, out, err = run_cli(["predict", survey.model, root, "--out", tmp_path / "m.csv", *options, "--errors", "skip"])
    assert code == 0 and "skipped" in err and "ID 3: has no file for band(s) g" in err
    assert "scored 3 cutout(s); skipped 1" in out
    rows = read_csv(tmp_path / "m.csv")
    assert [r["source"].split(" + ")[0] for r in rows] == [f"{root}/r/cut{i}_v2.fits" for i in (1, 2, 12)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], clf.predict_proba(X[[1, 3, 2]])[:, 1], rtol=1e-5)
