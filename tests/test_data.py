"""Tests of the data loader: read_lens_file and open_lens_stack (lensclf._npy), load_lens_dir (lensclf._layout),
LensFileArray (lensclf._filearray)."""

import hashlib
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib import format as npy_format

import lensclf._npy as npy_module
from lensclf import (
    LensDataError,
    LensDataWarning,
    LensFileArray,
    load_lens_dir,
    open_lens_stack,
    read_lens_file,
)
from lensclf._checks import majority_shape
from lensclf._inputs import expand_inputs, plan_inputs, read_input_files
from lensclf._layout import CLASS_FOLDERS as LAYOUT_FOLDERS
from lensclf._layout import class_folders, count_cutouts, natural_key
from lensclf._npy import npy_shape

SAMPLE = Path(__file__).parent / "data" / "deeplense_test2_sample"
CLASS_FOLDERS = ("train_lenses", "train_nonlenses", "test_lenses", "test_nonlenses")


def random_cutout(rng, shape=(3, 64, 64)):
    """A cutout min-max scaled per band to [0, 1], like the DeepLense files."""
    image = rng.random(shape).astype(np.float32)
    low = image.min(axis=(1, 2), keepdims=True)
    high = image.max(axis=(1, 2), keepdims=True)
    return (image - low) / (high - low)


def make_layout(root, n_per_folder=4, shape=(3, 64, 64), seed=0, folders=CLASS_FOLDERS):
    """Write a DeepLense-layout folder; return {path: array} of what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    for folder in folders:
        (Path(root) / folder).mkdir(parents=True, exist_ok=True)
        for k in range(1, n_per_folder + 1):
            path = Path(root) / folder / f"{k}.npy"
            written[str(path)] = random_cutout(rng, shape)
            np.save(path, written[str(path)])
    return written


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def save_header_only(path, shape, descr="<f4", extra=b"\0" * 16):
    """A .npy file whose header claims ``shape`` but which holds only ``extra`` bytes of data."""
    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(extra)


# --------------------------------------------------------------------------- the real sample


def test_real_sample_train_split_loads_with_labels_and_values():
    X, y, paths = load_lens_dir(SAMPLE, "train", return_paths=True)
    assert X.shape == (20, 3, 64, 64)
    assert X.dtype == np.float32 and X.flags.c_contiguous
    assert y.dtype == np.int64
    names = [Path(p).parent.name for p in paths]
    assert names == ["train_lenses"] * 10 + ["train_nonlenses"] * 10
    np.testing.assert_array_equal(y, [1] * 10 + [0] * 10)
    # natural order: 1, 2, ..., 10
    assert [Path(p).stem for p in paths[:10]] == [str(k) for k in range(1, 11)]
    # every band min-max scaled to exactly [0, 1]
    np.testing.assert_array_equal(X.min(axis=(2, 3)), 0)
    np.testing.assert_array_equal(X.max(axis=(2, 3)), 1)
    first = X[paths.index(str(SAMPLE / "train_lenses" / "1.npy"))]
    np.testing.assert_allclose(first.mean(axis=(1, 2)), [0.2044, 0.0695, 0.0227], atol=5e-5)
    for row, path in zip(X, paths):
        np.testing.assert_array_equal(row, np.load(path))


def test_real_sample_test_split_and_degenerate_band():
    X, y, paths = load_lens_dir(SAMPLE, "test", return_paths=True)
    assert X.shape == (20, 3, 64, 64)
    np.testing.assert_array_equal(y, [1] * 10 + [0] * 10)
    six = X[paths.index(str(SAMPLE / "test_lenses" / "6.npy"))]
    assert set(np.unique(six[2]).tolist()) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(read_lens_file(SAMPLE / "test_lenses" / "6.npy"), six)


def test_loading_does_not_modify_the_input_folder(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "copy")
    before = tree_digest(tmp_path / "copy")
    load_lens_dir(tmp_path / "copy", "train")
    load_lens_dir(tmp_path / "copy", "test", errors="skip")
    assert tree_digest(tmp_path / "copy") == before


# --------------------------------------------------------------------------- one file: rejected


def _write_zero_byte(path):
    path.write_bytes(b"")


def _write_truncated(path):
    np.save(path, random_cutout(np.random.default_rng(1)))
    path.write_bytes(path.read_bytes()[:-100])


def _write_text(path):
    path.write_text("this is not an array\n")


def _write_npz(path):
    with open(path, "wb") as f:
        np.savez(f, a=np.ones(3))


def _write_object(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _write_complex(path):
    np.save(path, np.ones((3, 8, 8), dtype=np.complex64))


def _write_bool(path):
    np.save(path, np.ones((3, 8, 8), dtype=bool))


def _write_structured(path):
    np.save(path, np.zeros((3, 8), dtype=[("g", "<f4"), ("r", "<f4")]))


def _write_text_array(path):
    np.save(path, np.array([["a", "b"], ["c", "d"]]))


def _write_2d(path):
    np.save(path, np.random.default_rng(0).random((64, 64), dtype=np.float32))


def _write_4d(path):
    np.save(path, np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32))


def _write_channels_last(path):
    np.save(path, np.random.default_rng(0).random((64, 64, 3), dtype=np.float32))


def _write_nan(path):
    image = random_cutout(np.random.default_rng(2))
    image[0, 0, :3] = np.nan
    np.save(path, image)


def _write_inf(path):
    image = random_cutout(np.random.default_rng(2))
    image[1, 5, 5] = np.inf
    image[2, 5, 5] = -np.inf
    np.save(path, image)


def _write_float64_overflow(path):
    image = random_cutout(np.random.default_rng(2)).astype(np.float64)
    image[0, 0, 0] = 1e300
    np.save(path, image)


def _write_blank(path):
    image = np.zeros((3, 64, 64), dtype=np.float32)
    image[1] = 0.5
    np.save(path, image)


def _write_folder(path):
    path.mkdir()


def _write_broken_link(path):
    os.symlink(path.parent / "nowhere.npy", path)


def _write_huge_header(path):
    save_header_only(path, (1_000_000, 3, 1_000_000))


def _write_bad_version(path):
    path.write_bytes(b"\x93NUMPY\x09\x00" + b"\0" * 64)


def _write_corrupt_header(path):
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 64, 64 }"
    header += b" " * (117 - len(header)) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)


REJECTED = [
    (_write_zero_byte, ["empty", "0 bytes"]),
    (_write_truncated, ["truncated", "49,152 bytes", "only 49,052 bytes follow"]),
    (_write_text, ["not a .npy file"]),
    (_write_npz, ["zip", ".npz"]),
    (_write_object, ["object", "allow_pickle", "unpickl"]),
    (_write_complex, ["complex"]),
    (_write_bool, ["boolean"]),
    (_write_structured, ["structured"]),
    (_write_text_array, ["text"]),
    (_write_2d, ["2-D", "(64, 64)", "single band", "(bands, height, width)"]),
    (_write_4d, ["4-D", "(2, 3, 8, 8)", "open_lens_stack"]),
    (_write_channels_last, ["(64, 64, 3)", "channels last", "np.moveaxis"]),
    (_write_nan, ["3 NaN", "12,288"]),
    (_write_inf, ["2 infinite"]),
    (_write_float64_overflow, ["1 infinite", "float32"]),
    (_write_blank, ["blank", "every band is constant"]),
    (_write_folder, ["is a folder"]),
    (_write_broken_link, ["broken symbolic link", "nowhere.npy"]),
    (_write_huge_header, ["truncated", "12.0 TB of pixel data", "only 16 bytes follow"]),
    (_write_bad_version, ["version 9.0"]),
    (_write_corrupt_header, ["corrupt .npy header"]),
]


@pytest.mark.parametrize("write, words", REJECTED, ids=[w.__name__[7:] for w, _ in REJECTED])
def test_read_lens_file_rejects_bad_file_naming_it_and_the_problem(tmp_path, write, words):
    path = tmp_path / "bad.npy"
    write(path)
    with pytest.raises(LensDataError) as info:
        read_lens_file(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    for word in words:
        assert word in message
    assert info.value.problems == [(str(path), message[len(str(path)) + 2 :])]


def test_read_lens_file_missing_file(tmp_path):
    with pytest.raises(LensDataError, match="does not exist"):
        read_lens_file(tmp_path / "gone.npy")


def test_read_lens_file_expected_shape(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, random_cutout(np.random.default_rng(0), (3, 32, 32)))
    assert read_lens_file(path, expected_shape=(3, 32, 32)).shape == (3, 32, 32)
    with pytest.raises(LensDataError, match=r"shape \(3, 32, 32\); expected \(3, 64, 64\)"):
        read_lens_file(path, expected_shape=(3, 64, 64))
    with pytest.raises(ValueError, match="3 entries"):
        read_lens_file(path, expected_shape=(64, 64))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_read_lens_file_unreadable_file(tmp_path):
    path = tmp_path / "locked.npy"
    np.save(path, random_cutout(np.random.default_rng(0)))
    path.chmod(0)
    try:
        with pytest.raises(LensDataError, match="permission denied"):
            read_lens_file(path)
    finally:
        path.chmod(0o644)


def test_permission_error_from_the_os_is_reported(tmp_path, monkeypatch):
    # Tests run as root here, where chmod 000 does not block reading; make the OS
    # call itself fail the way it does for a normal user.
    path = tmp_path / "locked.npy"
    np.save(path, random_cutout(np.random.default_rng(0)))

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(npy_module, "open", denied, raising=False)
    with pytest.raises(LensDataError, match=r"locked\.npy: cannot be read: permission denied"):
        read_lens_file(path)


# --------------------------------------------------------------------------- one file: accepted


@pytest.mark.parametrize("dtype", ["<f2", "<f4", ">f4", "<f8", ">f8", "<i2", "<u1", ">i4", "<i8", "<u4"])
def test_read_lens_file_converts_real_dtypes_to_native_float32(tmp_path, dtype):
    rng = np.random.default_rng(3)
    source = (rng.random((3, 16, 16)) * 200).astype(dtype)
    path = tmp_path / "a.npy"
    np.save(path, source)
    image = read_lens_file(path)
    assert image.dtype == np.float32 and image.dtype.isnative and image.flags.c_contiguous
    np.testing.assert_array_equal(image, source.astype(np.float32))


def test_read_lens_file_fortran_order(tmp_path):
    source = np.asfortranarray(random_cutout(np.random.default_rng(4), (3, 16, 20)))
    path = tmp_path / "f.npy"
    np.save(path, source)
    image = read_lens_file(path)
    assert image.flags.c_contiguous
    np.testing.assert_array_equal(image, source)


def test_file_with_one_constant_band_is_not_blank(tmp_path):
    image = random_cutout(np.random.default_rng(5))
    image[0] = 0.0
    np.save(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(read_lens_file(tmp_path / "a.npy"), image)


# --------------------------------------------------------------------------- property-based


def _check_outcome(path):
    """read_lens_file either returns valid float32 data or raises LensDataError."""
    try:
        image = read_lens_file(path)
    except LensDataError as exc:
        assert str(exc).startswith(str(path) + ": ")
        return None
    assert isinstance(image, np.ndarray)
    assert image.dtype == np.float32 and image.ndim == 3 and image.flags.c_contiguous
    assert np.isfinite(image).all()
    flat = image.reshape(image.shape[0], -1)
    assert not np.array_equal(flat.min(axis=1), flat.max(axis=1))
    return image


_dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(),
    hnp.array_dtypes(allow_subarrays=True),
)


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    array=hnp.arrays(dtype=_dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)),
    fortran=st.booleans(),
)
def test_property_random_arrays(array, fortran):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "a.npy")
        np.save(path, np.asfortranarray(array) if fortran else array)
        image = _check_outcome(path)
        if image is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                expected = np.load(path, allow_pickle=False).astype(np.float32)
            np.testing.assert_array_equal(image, expected)


_valid_bytes = (SAMPLE / "train_lenses" / "1.npy").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=400).map(lambda b: b"\x93NUMPY\x01\x00" + b),
        st.binary(max_size=400).map(lambda b: b"\x93NUMPY\x02\x00" + b),
        st.integers(0, len(_valid_bytes)).map(lambda n: _valid_bytes[:n]),
        st.tuples(st.integers(0, 200), st.integers(0, 255)).map(
            lambda t: _valid_bytes[: t[0]] + bytes([t[1]]) + _valid_bytes[t[0] + 1 :]
        ),
    )
)
def test_property_random_bytes(content):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "a.npy")
        with open(path, "wb") as f:
            f.write(content)
        _check_outcome(path)


# --------------------------------------------------------------------------- folders


def test_natural_order_and_values(tmp_path):
    rng = np.random.default_rng(6)
    written = {}
    for folder in ("train_lenses", "train_nonlenses"):
        (tmp_path / folder).mkdir()
        for name in ("10.npy", "2.npy", "1.npy", "img_3.npy", "img_20.npy"):
            written[str(tmp_path / folder / name)] = random_cutout(rng)
            np.save(tmp_path / folder / name, written[str(tmp_path / folder / name)])
    X, y, paths = load_lens_dir(tmp_path, return_paths=True)
    assert [Path(p).name for p in paths[:5]] == ["1.npy", "2.npy", "10.npy", "img_3.npy", "img_20.npy"]
    np.testing.assert_array_equal(y, [1] * 5 + [0] * 5)
    for row, path in zip(X, paths):
        np.testing.assert_array_equal(row, written[path])


def test_any_band_count_and_size_when_all_files_agree(tmp_path):
    written = make_layout(tmp_path, n_per_folder=3, shape=(5, 16, 24))
    X, y, paths = load_lens_dir(tmp_path, "test", return_paths=True)
    assert X.shape == (6, 5, 16, 24)
    for row, path in zip(X, paths):
        np.testing.assert_array_equal(row, written[path])


def test_threads_do_not_change_the_result(tmp_path):
    make_layout(tmp_path, n_per_folder=300, shape=(2, 8, 8), folders=("train_lenses", "train_nonlenses"))
    X1, y1 = load_lens_dir(tmp_path, n_threads=1)
    X4, y4 = load_lens_dir(tmp_path, n_threads=4)
    np.testing.assert_array_equal(X1, X4)
    np.testing.assert_array_equal(y1, y4)
    with pytest.raises(ValueError, match="n_threads"):
        load_lens_dir(tmp_path, n_threads=0)


def _break_three_files(root):
    (root / "train_lenses" / "2.npy").write_bytes(b"")
    image = random_cutout(np.random.default_rng(9))
    image[0, :2, :2] = np.nan
    np.save(root / "train_nonlenses" / "1.npy", image)
    np.save(root / "train_nonlenses" / "3.npy", random_cutout(np.random.default_rng(9), (3, 32, 32)))


def test_errors_raise_scans_all_then_raises_once(tmp_path):
    make_layout(tmp_path)
    _break_three_files(tmp_path)
    with pytest.raises(LensDataError) as info:
        load_lens_dir(tmp_path)
    message = str(info.value)
    first = str(tmp_path / "train_lenses" / "2.npy")
    assert message.startswith(first + ": is empty")
    assert "2 other file(s) also have problems" in message
    assert "errors='skip'" in message
    problems = dict(info.value.problems)
    assert list(problems) == [
        first,
        str(tmp_path / "train_nonlenses" / "1.npy"),
        str(tmp_path / "train_nonlenses" / "3.npy"),
    ]
    assert "4 NaN" in problems[str(tmp_path / "train_nonlenses" / "1.npy")]
    assert "(3, 32, 32)" in problems[str(tmp_path / "train_nonlenses" / "3.npy")]
    assert "(3, 64, 64)" in problems[str(tmp_path / "train_nonlenses" / "3.npy")]


def test_errors_skip_leaves_bad_files_out_with_one_warning(tmp_path):
    written = make_layout(tmp_path)
    _break_three_files(tmp_path)
    with pytest.warns(LensDataWarning) as record:
        X, y, paths, skipped = load_lens_dir(tmp_path, errors="skip", return_paths=True, return_skipped=True)
    assert len(record) == 1
    assert "skipped 3 of 8 files" in str(record[0].message)
    assert "is empty" in str(record[0].message)
    assert X.shape == (5, 3, 64, 64) and X.flags.c_contiguous
    np.testing.assert_array_equal(y, [1, 1, 1, 0, 0])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == [
        "train_lenses/1.npy",
        "train_lenses/3.npy",
        "train_lenses/4.npy",
        "train_nonlenses/2.npy",
        "train_nonlenses/4.npy",
    ]
    for row, path in zip(X, paths):
        np.testing.assert_array_equal(row, written[path])
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in skipped] == [
        "train_lenses/2.npy",
        "train_nonlenses/1.npy",
        "train_nonlenses/3.npy",
    ]


def test_errors_skip_with_nothing_usable_raises(tmp_path):
    make_layout(tmp_path, n_per_folder=2, folders=("train_lenses", "train_nonlenses"))
    for path in tmp_path.rglob("*.npy"):
        path.write_text("junk")
    with pytest.raises(LensDataError, match="no usable cutouts.*all 4 files have problems"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_lens_dir(tmp_path, errors="skip")


def test_majority_shape_wins_even_when_the_first_file_is_odd(tmp_path):
    written = make_layout(tmp_path, folders=("train_lenses", "train_nonlenses"))
    odd = tmp_path / "train_lenses" / "1.npy"
    np.save(odd, random_cutout(np.random.default_rng(1), (4, 64, 64)))
    with pytest.raises(LensDataError) as info:
        load_lens_dir(tmp_path)
    assert info.value.problems[0][0] == str(odd)
    assert "(4, 64, 64) but 7 of the 8 files have shape (3, 64, 64)" in str(info.value)
    with pytest.warns(LensDataWarning):
        X, y, paths = load_lens_dir(tmp_path, errors="skip", return_paths=True)
    assert X.shape == (7, 3, 64, 64)
    for row, path in zip(X, paths):
        np.testing.assert_array_equal(row, written[path])


def test_empty_class_folder_is_an_error(tmp_path):
    make_layout(tmp_path, folders=("train_lenses",))
    (tmp_path / "train_nonlenses").mkdir()
    with pytest.raises(LensDataError, match=r"train_nonlenses: class folder holds no cutout files \(.*\) \(it is empty\)"):
        load_lens_dir(tmp_path)
    (tmp_path / "train_nonlenses" / "README.txt").write_text("hello")
    with pytest.raises(LensDataError, match=r"holds only: README\.txt"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_lens_dir(tmp_path)


def test_stray_files_are_ignored_but_reported(tmp_path):
    written = make_layout(tmp_path, n_per_folder=2, folders=("train_lenses", "train_nonlenses"))
    lenses = tmp_path / "train_lenses"
    (lenses / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (lenses / "Thumbs.db").write_bytes(b"\0")
    (lenses / "._1.npy").write_bytes(b"\0\5\26\7")  # macOS resource fork: junk despite .npy
    (lenses / "README").write_text("notes")
    (tmp_path / "train_nonlenses" / "notes.txt").write_text("notes")
    (tmp_path / "train_nonlenses" / "extra").mkdir()
    with pytest.warns(LensDataWarning) as record:
        X, y, paths, skipped = load_lens_dir(tmp_path, return_paths=True, return_skipped=True)
    assert len(record) == 1
    message = str(record[0].message)
    assert "ignored 3 entries" in message
    assert "README" in message and "notes.txt" in message and "extra" in message
    assert ".DS_Store" not in message and "Thumbs.db" not in message
    assert paths == list(written)
    skipped_names = sorted(Path(p).name for p, _ in skipped)
    assert skipped_names == sorted(["._1.npy", ".DS_Store", "README", "Thumbs.db", "extra", "notes.txt"])
    assert all("ignored" in reason for _, reason in skipped)


def test_missing_root(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'.*nope' does not exist.*holds the folders: data"):
        load_lens_dir(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        load_lens_dir(tmp_path / "x.npy")


def test_missing_class_folder_is_listed(tmp_path):
    make_layout(tmp_path, folders=("train_lenses",))
    with pytest.raises(FileNotFoundError) as info:
        load_lens_dir(tmp_path)
    message = str(info.value)
    assert "missing train_nonlenses/" in message
    assert "train_lenses/," not in message


@pytest.mark.parametrize("extra_levels", [("lens-finding-test",), ("dataset", "train")])
def test_folders_one_or_two_levels_down_are_pointed_out(tmp_path, extra_levels):
    real_root = tmp_path.joinpath(*extra_levels)
    make_layout(real_root, n_per_folder=1)
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_lens_dir(tmp_path)
    message = str(info.value)
    assert "missing train_lenses/, train_nonlenses/" in message
    assert f"pass root='{real_root}' instead" in message
    X, _ = load_lens_dir(real_root)  # the suggestion works
    assert len(X) == 2


def test_class_folder_passed_as_root(tmp_path):
    make_layout(tmp_path, n_per_folder=1)
    with pytest.raises(FileNotFoundError, match=f"is itself a class folder: pass its parent root='{tmp_path}'"):
        load_lens_dir(tmp_path / "train_lenses")


def test_other_split_present_is_mentioned(tmp_path):
    make_layout(tmp_path, n_per_folder=1, folders=("train_lenses", "train_nonlenses"))
    with pytest.raises(FileNotFoundError, match="missing test_lenses/, test_nonlenses/.*split='train'"):
        load_lens_dir(tmp_path, "test")


def test_bad_arguments(tmp_path):
    make_layout(tmp_path, n_per_folder=1)
    with pytest.raises(ValueError, match="split"):
        load_lens_dir(tmp_path, "val")
    with pytest.raises(ValueError, match="errors"):
        load_lens_dir(tmp_path, errors="ignore")
    with pytest.raises(TypeError, match="cache"):
        load_lens_dir(tmp_path, cache=3)


# --------------------------------------------------------------------------- cache


def test_cache_second_load_is_a_memory_map_and_changes_invalidate_it(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    written = make_layout(data, folders=("train_lenses", "train_nonlenses"))
    X1, y1, p1 = load_lens_dir(data, cache=cache, return_paths=True)
    assert not isinstance(X1, np.memmap)
    assert sorted(f.suffix for f in cache.iterdir()) == [".json", ".npy"]  # no temporary leftovers

    X2, y2, p2 = load_lens_dir(data, cache=cache, return_paths=True)
    assert isinstance(X2, np.memmap)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert p1 == p2

    # writing to the returned array does not change the cache (copy-on-write)
    X2[0] = -1
    X3, _ = load_lens_dir(data, cache=cache)
    np.testing.assert_array_equal(X3, X1)

    # changing a file invalidates the cache
    changed = data / "train_nonlenses" / "2.npy"
    new_image = random_cutout(np.random.default_rng(42))
    np.save(changed, new_image)
    os.utime(changed, ns=(10**18, 10**18))
    X4, _, p4 = load_lens_dir(data, cache=cache, return_paths=True)
    assert not isinstance(X4, np.memmap)
    np.testing.assert_array_equal(X4[p4.index(str(changed))], new_image)
    X5, _ = load_lens_dir(data, cache=cache)
    assert isinstance(X5, np.memmap)
    np.testing.assert_array_equal(X5, X4)
    assert sorted(f.suffix for f in cache.iterdir()) == [".json", ".npy"]  # old data removed

    # adding a file invalidates it too
    np.save(data / "train_lenses" / "5.npy", random_cutout(np.random.default_rng(43)))
    X6, _ = load_lens_dir(data, cache=cache)
    assert len(X6) == 9 and not isinstance(X6, np.memmap)
    np.testing.assert_array_equal(X6[0], written[str(data / "train_lenses" / "1.npy")])


def test_cache_remembers_skipped_files_and_still_raises(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    make_layout(data)
    _break_three_files(data)
    with pytest.warns(LensDataWarning):
        X1, y1, skipped1 = load_lens_dir(data, errors="skip", cache=cache, return_skipped=True)
    with pytest.warns(LensDataWarning, match="skipped 3 of 8"):
        X2, y2, skipped2 = load_lens_dir(data, errors="skip", cache=cache, return_skipped=True)
    assert isinstance(X2, np.memmap)
    np.testing.assert_array_equal(X1, X2)
    assert skipped1 == skipped2
    with pytest.raises(LensDataError, match="2 other file"):
        load_lens_dir(data, cache=cache)


def test_cache_true_uses_the_environment_folder(tmp_path, monkeypatch):
    make_layout(tmp_path / "data", n_per_folder=1)
    monkeypatch.setenv("LENSCLF_CACHE_DIR", str(tmp_path / "envcache"))
    load_lens_dir(tmp_path / "data", "test", cache=True)
    X, _ = load_lens_dir(tmp_path / "data", "test", cache=True)
    assert isinstance(X, np.memmap)
    assert len(list((tmp_path / "envcache").glob("test-*.json"))) == 1


# --------------------------------------------------------------------------- LensFileArray


@pytest.fixture(scope="module")
def sample_train():
    return load_lens_dir(SAMPLE, "train", return_paths=True)


def test_lens_file_array_matches_load_lens_dir(sample_train):
    X, y, paths = sample_train
    array = LensFileArray(paths)
    assert len(array) == 20 and array.shape == (20, 3, 64, 64)
    assert array.dtype == np.float32 and array.ndim == 4
    np.testing.assert_array_equal(array[3], X[3])
    np.testing.assert_array_equal(array[-1], X[-1])
    np.testing.assert_array_equal(array[np.int64(7)], X[7])
    np.testing.assert_array_equal(array[2:15:4], X[2:15:4])
    np.testing.assert_array_equal(array[[5, 1, 5, 19]], X[[5, 1, 5, 19]])
    np.testing.assert_array_equal(array[np.array([], dtype=int)], X[:0])
    np.testing.assert_array_equal(array[y == 1], X[y == 1])
    np.testing.assert_array_equal(array[4, 1], X[4, 1])
    np.testing.assert_array_equal(np.asarray(array), X)
    assert array[[3]].dtype == np.float32 and array[[3]].flags.c_contiguous
    with pytest.raises(IndexError):
        array[20]
    with pytest.raises(IndexError):
        array[np.ones(3, dtype=bool)]


def test_lens_file_array_pickles_and_works_with_sklearn_indexing(sample_train):
    from sklearn.utils import _safe_indexing

    X, y, paths = sample_train
    subset = _safe_indexing(paths, np.array([2, 0, 11]))
    array = pickle.loads(pickle.dumps(LensFileArray(subset)))
    np.testing.assert_array_equal(array[:], X[[2, 0, 11]])
    np.testing.assert_array_equal(_safe_indexing(LensFileArray(paths), np.array([4, 9])), X[[4, 9]])


def test_lens_file_array_bad_files(tmp_path, sample_train):
    X, y, paths = sample_train
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    odd = tmp_path / "odd.npy"
    np.save(odd, random_cutout(np.random.default_rng(0), (3, 32, 32)))
    with pytest.raises(LensDataError, match="empty.npy: is empty.*1 other file") as info:
        LensFileArray(paths[:3] + [str(empty), str(odd)])
    assert [p for p, _ in info.value.problems] == [str(empty), str(odd)]
    with pytest.warns(LensDataWarning, match="skipped 2 of 5"):
        array = LensFileArray(paths[:3] + [str(empty), str(odd)], errors="skip")
    assert array.shape == (3, 3, 64, 64)
    assert [p for p, _ in array.skipped] == [str(empty), str(odd)]
    np.testing.assert_array_equal(array[:], X[:3])

    # pixel problems are found when the row is read
    nan = tmp_path / "nan.npy"
    image = random_cutout(np.random.default_rng(1))
    image[0, 0, 0] = np.nan
    np.save(nan, image)
    array = LensFileArray([paths[0], str(nan)])
    np.testing.assert_array_equal(array[0], X[0])
    with pytest.raises(LensDataError, match="nan.npy: has 1 NaN"):
        array[1]
    with pytest.raises(LensDataError, match="nan.npy"):
        np.asarray(array)

    # scan=False: files are only checked when read
    lazy = LensFileArray([paths[0], str(empty)], scan=False)
    assert lazy.shape == (2, 3, 64, 64)
    with pytest.raises(LensDataError, match="empty.npy: is empty"):
        lazy[1]
    with pytest.raises(ValueError, match="scan=True"):
        LensFileArray(paths, errors="skip", scan=False)
    with pytest.raises(ValueError, match="at least one"):
        LensFileArray([])
    with pytest.raises(TypeError, match="sequence"):
        LensFileArray(paths[0])


# --------------------------------------------------------------------------- open_lens_stack


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "<i2"])
def test_open_lens_stack_memory_maps(tmp_path, dtype):
    stack = (np.random.default_rng(0).random((5, 3, 8, 8)) * 100).astype(dtype)
    np.save(tmp_path / "stack.npy", stack)
    mapped = open_lens_stack(tmp_path / "stack.npy")
    assert isinstance(mapped, np.memmap)
    assert not mapped.flags.writeable
    assert mapped.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(mapped, stack)


def _stack_3d(path):
    np.save(path, np.zeros((3, 8, 8), np.float32))


def _stack_object(path):
    np.save(path, np.array([None, 1], dtype=object), allow_pickle=True)


def _stack_truncated(path):
    save_header_only(path, (100_000, 3, 64, 64))


def _stack_text(path):
    path.write_text("hello")


def _stack_empty(path):
    np.save(path, np.zeros((0, 3, 8, 8), np.float32))


def _stack_complex(path):
    np.save(path, np.zeros((2, 3, 8, 8), np.complex128))


@pytest.mark.parametrize(
    "write, words",
    [
        (_stack_3d, ["3-D", "read_lens_file"]),
        (_stack_object, ["object", "allow_pickle"]),
        (_stack_truncated, ["truncated", "4.9 GB"]),
        (_stack_text, ["not a .npy file"]),
        (_stack_empty, ["no cutouts"]),
        (_stack_complex, ["complex"]),
    ],
)
def test_open_lens_stack_rejects(tmp_path, write, words):
    path = tmp_path / "stack.npy"
    write(path)
    with pytest.raises(LensDataError) as info:
        open_lens_stack(path)
    assert str(info.value).startswith(str(path) + ": ")
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- shared pieces


def test_natural_key_and_class_folders():
    names = ["10.npy", "img_20.npy", "2.npy", "Img_3.npy", "1.npy"]
    assert sorted(names, key=natural_key) == ["1.npy", "2.npy", "10.npy", "Img_3.npy", "img_20.npy"]
    assert [folder.name for folder in LAYOUT_FOLDERS] == list(CLASS_FOLDERS)
    assert [(folder.name, folder.label) for folder in class_folders("test")] == [("test_lenses", 1), ("test_nonlenses", 0)]


def test_count_cutouts_and_npy_shape(tmp_path):
    make_layout(tmp_path, n_per_folder=3, shape=(2, 8, 8), folders=("test_lenses",))
    (tmp_path / "test_lenses" / ".hidden.npy").write_bytes(b"")
    (tmp_path / "test_lenses" / "notes.txt").write_text("x")
    assert count_cutouts(tmp_path / "test_lenses") == 3
    assert count_cutouts(tmp_path / "missing") is None
    assert npy_shape(tmp_path / "test_lenses" / "1.npy") == (2, 8, 8)
    np.save(tmp_path / "stack.npy", np.zeros((4, 2, 8, 8), np.complex64))
    assert npy_shape(tmp_path / "stack.npy") == (4, 2, 8, 8)  # the header only: any dtype
    for unreadable in (tmp_path / "test_lenses" / "notes.txt", tmp_path / "test_lenses", tmp_path / "gone.npy"):
        assert npy_shape(unreadable) is None


def test_majority_shape_vote():
    a, b, c = (3, 8, 8), (4, 8, 8), (5, 8, 8)
    assert majority_shape([a, None, b, b]) == (b, 2)
    assert majority_shape([a, b, None]) == (a, 1)  # a tie goes to the first shape
    assert majority_shape([c, a, b, b, c], prefer=b) == (b, 2)
    assert majority_shape([c, a, b, b, c]) == (c, 2)
    assert majority_shape([None, None]) == (None, 0)


# --------------------------------------------------------------------------- prediction inputs


def test_expand_and_plan_inputs(tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("10.npy", "2.npy", "odd.npy"):
        np.save(folder / name, random_cutout(rng, (4, 8, 8) if name == "odd.npy" else (3, 8, 8)))
    (folder / "notes.txt").write_text("x")
    np.save(tmp_path / "stack.npy", np.stack([random_cutout(rng, (3, 8, 8)) for _ in range(5)]))
    np.save(tmp_path / "empty_stack.npy", np.zeros((0, 3, 8, 8), np.float32))
    (tmp_path / "junk.npy").write_text("junk")

    inputs = [folder, tmp_path / "stack.npy", tmp_path / "junk.npy", tmp_path / "empty_stack.npy"]
    files = expand_inputs(inputs)
    assert [Path(f).name for f in files] == ["2.npy", "10.npy", "odd.npy", "stack.npy", "junk.npy", "empty_stack.npy"]

    plan, skipped = plan_inputs(files, (3, 8, 8), "skip")
    assert plan == [
        ("files", [str(folder / "2.npy"), str(folder / "10.npy")], (3, 8, 8), None),
        ("stack", str(tmp_path / "stack.npy"), [0, 1, 2, 3, 4], (3, 8, 8), None),
        ("files", [str(tmp_path / "junk.npy")], None, None),  # unreadable header: reported when read
    ]
    assert skipped == [
        (str(folder / "odd.npy"), "has 4 band(s); the model was trained on 3 (shape (3, 8, 8)); "
                                  "the band count cannot be changed"),
        (str(tmp_path / "empty_stack.npy"), "is a stack that holds no cutouts"),
    ]
    with pytest.raises(LensDataError, match=r"odd\.npy: has 4 band\(s\); the model was trained on 3"):
        plan_inputs(files, [3, 8, 8], "raise")
    with pytest.raises(LensDataError, match=r"is a stack; each cutout is 8 x 8 pixels \(shape \(3, 8, 8\)\); the model takes 16 x 16"):
        plan_inputs([str(tmp_path / "stack.npy")], (3, 16, 16), "raise")

    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        expand_inputs([tmp_path / "nope"])
    (tmp_path / "none").mkdir()
    with pytest.raises(LensDataError, match="folder holds no cutout files"):
        expand_inputs([tmp_path / "none"])


def test_read_input_files(tmp_path):
    rng = np.random.default_rng(1)
    good = [tmp_path / f"{k}.npy" for k in range(3)]
    written = [random_cutout(rng, (3, 8, 8)) for _ in good]
    for path, image in zip(good, written):
        np.save(path, image)
    empty, nan = tmp_path / "empty.npy", tmp_path / "nan.npy"
    empty.write_bytes(b"")
    image = random_cutout(rng, (3, 8, 8))
    image[0, 0, 0] = np.nan
    np.save(nan, image)
    paths = [str(good[0]), str(empty), str(good[1]), str(nan), str(good[2])]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the problems are returned
        X, kept, skipped = read_input_files(paths, "skip")
    assert kept == [0, 2, 4]
    np.testing.assert_array_equal(X, np.stack(written))
    assert [p for p, _ in skipped] == [str(empty), str(nan)]
    with pytest.raises(LensDataError, match="empty.npy: is empty"):
        read_input_files(paths, "raise")
    assert read_input_files([str(empty)], "skip")[:2] == (None, [])
