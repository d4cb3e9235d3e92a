"""Tests of the built-in lens simulator: physics, determinism, options, files."""

import csv
import os

import numpy as np
import pytest
from scipy import special
from sklearn.metrics import roc_auc_score

from lensclf import _lensing, make_lenses, write_lens_dir
from lensclf.simulate import DIFFICULTIES, NONLENS_KINDS

# ------------------------------------------------------------------------------ physics


def _finite_difference_jacobian(x, y, deflection, h=1e-5):
    ax_px, ay_px = deflection(x + h, y)
    ax_mx, ay_mx = deflection(x - h, y)
    ax_py, ay_py = deflection(x, y + h)
    ax_my, ay_my = deflection(x, y - h)
    return ((ax_px - ax_mx) / (2 * h), (ax_py - ax_my) / (2 * h),
            (ay_px - ay_mx) / (2 * h), (ay_py - ay_my) / (2 * h))


@pytest.mark.parametrize("q", [0.3, 0.6, 0.9, 1.0])
def test_sie_convergence_is_half_the_divergence_of_the_deflection(q):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-3, 3, 500), rng.uniform(-3, 3, 500)
    x0, y0, theta_e, pa = 0.2, -0.1, 1.4, 0.7
    keep = np.hypot(x - x0, y - y0) > 0.05  # away from the singular centre
    x, y = x[keep], y[keep]

    def deflection(xx, yy):
        return _lensing.sie_deflection(xx, yy, x0, y0, theta_e, q, pa)

    dxx, dxy, dyx, dyy = _finite_difference_jacobian(x, y, deflection)
    kappa = _lensing.sie_convergence(x, y, x0, y0, theta_e, min(q, 1 - 1e-6), pa)
    np.testing.assert_allclose(0.5 * (dxx + dyy), kappa, rtol=1e-4)
    np.testing.assert_allclose(dxy, dyx, atol=1e-4)  # a potential flow: curl-free


def test_sie_circular_limit_is_the_singular_isothermal_sphere():
    x, y = np.array([0.5, -1.0, 2.0, 0.3]), np.array([0.0, 1.5, -0.7, -2.2])
    ax, ay = _lensing.sie_deflection(x, y, 0.0, 0.0, 1.2, 1.0, 0.4)
    r = np.hypot(x, y)
    np.testing.assert_allclose(ax, 1.2 * x / r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ay, 1.2 * y / r, rtol=1e-5, atol=1e-5)


def test_tangential_critical_curve_of_a_circular_lens_lies_at_the_einstein_radius():
    theta_e = 1.3
    radii = np.linspace(0.5, 2.5, 2001)
    phi = 0.8
    x, y = radii * np.cos(phi), radii * np.sin(phi)

    def deflection(xx, yy):
        return _lensing.sie_deflection(xx, yy, 0.0, 0.0, theta_e, 1.0, 0.0)

    dxx, dxy, dyx, dyy = _finite_difference_jacobian(x, y, deflection)
    det = (1 - dxx) * (1 - dyy) - dxy * dyx
    crossing = radii[np.flatnonzero(np.diff(np.sign(det)))]
    assert crossing.size == 1
    assert abs(crossing[0] - theta_e) < 2e-3


def test_point_source_at_the_origin_maps_to_an_einstein_ring():
    theta_e = 1.1
    x, y = _lensing.pixel_grid(200, 0.02, dtype=np.float64)
    bx, by = _lensing.ray_trace(x, y, 0.0, 0.0, theta_e, 1.0, 0.0, 0.0, 0.0)
    on_source = np.hypot(bx, by) < 0.01
    radii = np.hypot(x, y)[on_source]
    assert on_source.sum() > 100
    np.testing.assert_allclose(radii, theta_e, atol=0.012)
    # and the ring goes all the way round
    angles = np.arctan2(y, x)[on_source]
    assert np.histogram(angles, bins=12, range=(-np.pi, np.pi))[0].min() > 0


def test_psf_kernels_are_normalised_and_convolution_preserves_flux():
    kernels = _lensing.psf_kernels(np.array([[3.0, 4.5, 6.0]]), np.array([[2.5, 3.0, 4.5]]), 31)
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, rtol=1e-12)
    gauss = _lensing.psf_kernels(np.array([4.0]), np.array([3.0]), 31, profile="gaussian")
    # FWHM: the half-maximum contour of the sampled Gaussian is ~4 pixels wide
    centre_row = gauss[0, 15]
    assert 3.5 < (centre_row >= centre_row.max() / 2).sum() <= 5
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, size=(2, 3, 40, 40))
    full = _lensing.convolve_with_psf(image, kernels, mode="full")
    np.testing.assert_allclose(full.sum(axis=(-2, -1)), image.sum(axis=(-2, -1)), rtol=1e-10)
    # 'valid' on a padded canvas: a compact source in the middle keeps all its flux
    canvas = np.zeros((1, 3, 70, 70))
    canvas[..., 34:37, 33:36] = 5.0
    valid = _lensing.convolve_with_psf(canvas, kernels, mode="valid")
    assert valid.shape == (1, 3, 40, 40)
    np.testing.assert_allclose(valid.sum(axis=(-2, -1)), canvas.sum(axis=(-2, -1)), rtol=1e-3)


def test_sersic_profile_is_unit_flux_normalised():
    x, y = _lensing.pixel_grid(800, 0.01, dtype=np.float64)
    r = np.hypot(x, y)
    for n in (1.0, 4.0):
        img = _lensing.sersic_profile(x, y, 0.0, 0.0, 0.6, n, 1.0, 0.0) * 0.01**2
        assert abs(img[r < 0.6].sum() - 0.5) < 0.01  # half the light inside r_eff
        # enclosed flux inside 3.5" against the analytic curve of growth
        expected = special.gammainc(2 * n, _lensing.sersic_b(n) * (3.5 / 0.6) ** (1 / n))
        assert abs(img[r < 3.5].sum() - expected) < 0.005


def test_lensed_sources_are_magnified():
    X, y, meta = make_lenses(24, 0, "medium", random_state=3, return_metadata=True, shuffle=False)
    assert np.all(meta["magnification"] > 1.0)
    # direct check for one circular lens: lensed flux of a unit-flux source exceeds 1
    x, y = _lensing.pixel_grid(400, 0.02, dtype=np.float64)
    bx, by = _lensing.ray_trace(x, y, 0.0, 0.0, 1.2, 0.8, 0.3, 0.03, -0.02)
    lensed = _lensing.sersic_profile(bx, by, 0.3, 0.1, 0.2, 1.0, 0.7, 0.0).sum() * 0.02**2
    assert lensed > 2.0


# ----------------------------------------------------------------------------- make_lenses


def test_shapes_dtypes_labels_and_minmax_scaling():
    X, y, meta = make_lenses(6, 10, random_state=0, return_metadata=True)
    assert X.shape == (16, 3, 64, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (16,) and set(np.unique(y)) == {0, 1} and y.sum() == 6
    assert np.all(X.min(axis=(2, 3)) == 0.0) and np.all(X.max(axis=(2, 3)) == 1.0)
    assert len(meta) == 16
    np.testing.assert_array_equal(meta["label"], y)
    assert np.all((meta["kind"] == "lens") == (y == 1))
    assert set(meta["kind"][y == 0]) <= set(NONLENS_KINDS)
    lens_rows, non = meta[y == 1], meta[y == 0]
    assert np.all(np.isfinite(lens_rows["einstein_radius"])) and np.all(np.isnan(non["einstein_radius"]))
    assert np.all((lens_rows["einstein_radius"] >= 0.8) & (lens_rows["einstein_radius"] <= 2.5))


def test_same_seed_same_arrays_and_different_seed_different_arrays():
    a = make_lenses(5, 5, random_state=42)
    b = make_lenses(5, 5, random_state=42)
    c = make_lenses(5, 5, random_state=43)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # a Generator works as a seed too and is reproducible
    g1 = make_lenses(2, 2, random_state=np.random.default_rng(5))[0]
    g2 = make_lenses(2, 2, random_state=np.random.default_rng(5))[0]
    np.testing.assert_array_equal(g1, g2)


def test_output_does_not_depend_on_n_jobs():
    kwargs = dict(random_state=7, chunk_size=4, return_metadata=True)
    X1, y1, m1 = make_lenses(6, 7, n_jobs=1, **kwargs)
    X2, y2, m2 = make_lenses(6, 7, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    for name in m1.dtype.names:
        np.testing.assert_array_equal(m1[name], m2[name])


def test_objects_depend_only_on_seed_class_and_index():
    small = make_lenses(3, 2, random_state=11, shuffle=False, normalize="none", chunk_size=1)[0]
    large = make_lenses(5, 4, random_state=11, shuffle=False, normalize="none", chunk_size=1)[0]
    np.testing.assert_array_equal(small[:3], large[:3])
    np.testing.assert_array_equal(small[3:], large[5:7])


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_every_preset_runs(difficulty):
    X, y, meta = make_lenses(3, 5, difficulty, random_state=1, return_metadata=True, negative_mix=1.0)
    assert X.shape == (8, 3, 64, 64) and np.all(np.isfinite(X))
    assert not np.any(meta["kind"][y == 0] == "plain")


@pytest.mark.parametrize(
    "options",
    [
        dict(normalize="none", psf_profile="gaussian"),
        dict(normalize=None, supersample=1),
        dict(supersample=3, image_size=48, pixel_scale=0.2, einstein_radius_range=(0.8, 1.5)),
        dict(snr_range=(5, 10), seeing_range=(0.9, 1.2), noise_scale=2.0, shear_range=(0.0, 0.0)),
        dict(source_offset_range=(0.0, 0.2), source_radius_range=(0.05, 0.1), lens_axis_ratio_range=(0.9, 1.0)),
        dict(field_density=0.0, star_density=0.0, bright_neighbour_probability=1.0, lens_mag_scatter=0.0),
        dict(hard_negative_weights={"ring": 1.0}, negative_mix=1.0, tangential_fraction=1.0),
    ],
)
def test_every_option_runs(options):
    X, y, meta = make_lenses(3, 3, random_state=2, return_metadata=True, **options)
    size = options.get("image_size", 64)
    assert X.shape == (6, 3, size, size) and X.dtype == np.float32 and np.all(np.isfinite(X))
    if options.get("normalize", "minmax") is None or options.get("normalize") == "none":
        assert X.max() > 1.5  # fluxes in counts, not scaled
    if "hard_negative_weights" in options:
        assert set(meta["kind"][y == 0]) == {"ring"}
    if options.get("bright_neighbour_probability") == 1.0:
        assert np.all(meta["bright_neighbour"] == 1) and np.all(meta["n_field_galaxies"] == 0)


def test_components_add_up_to_the_image_and_isolate_the_lensed_source():
    X, y, meta, comps = make_lenses(4, 6, random_state=9, normalize="none", return_metadata=True,
                                    return_components=True, negative_mix=0.0)
    total = comps["galaxy"] + comps["feature"] + comps["environment"] + comps["noise"]
    np.testing.assert_allclose(X, total, rtol=1e-5, atol=1e-4)
    feature_flux = comps["feature"].sum(axis=(1, 2, 3))
    assert np.all(feature_flux[y == 1] > 0) and np.all(feature_flux[y == 0] == 0)  # plain non-lenses
    # the lensed-source flux matches the metadata magnitude
    i_flux = comps["feature"][y == 1, 2].sum(axis=(1, 2))
    np.testing.assert_allclose(27 - 2.5 * np.log10(i_flux), meta["feature_mag_i"][y == 1], atol=1e-3)
    # and the drawn S/N holds: matched filter against the sky noise, over g, r, i
    sky = np.stack([meta["sky_sigma_g"], meta["sky_sigma_r"], meta["sky_sigma_i"]], axis=1)[y == 1]
    snr = np.sqrt(((comps["feature"][y == 1] / sky[:, :, None, None]) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(snr, meta["feature_snr"][y == 1], rtol=1e-3)


def test_no_brightness_or_colour_shortcut():
    X, y, comps = make_lenses(120, 120, random_state=4, normalize="none", return_components=True)
    total = X.sum(axis=(2, 3))
    logf = np.log10(np.clip(total, 1e-3, None))
    for score in (logf[:, 0], logf[:, 1], logf[:, 2], logf[:, 0] - logf[:, 1], logf[:, 1] - logf[:, 2]):
        assert 0.3 < roc_auc_score(y, score) < 0.7


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(difficulty="extreme"), ValueError),
        (dict(snr=(1, 2)), TypeError),
        (dict(snr_range=(10, 5)), ValueError),
        (dict(snr_range=5), ValueError),
        (dict(einstein_radius_range=(0.5, 3.9)), ValueError),
        (dict(einstein_radius_range=(0.1, 1.0)), ValueError),
        (dict(negative_mix=1.5), ValueError),
        (dict(noise_scale=0), ValueError),
        (dict(normalize="zscore"), ValueError),
        (dict(random_state="seed"), TypeError),
        (dict(random_state=-1), ValueError),
        (dict(hard_negative_weights={"unicorn": 1.0}), ValueError),
        (dict(psf_profile="airy"), ValueError),
        (dict(image_size=8), ValueError),
        (dict(n_jobs=0), ValueError),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, error):
    with pytest.raises(error):
        make_lenses(2, 2, **kwargs)


def test_bad_counts_get_clear_errors():
    for args in [(-1, 2), (2.5, 2), (0, 0), (True, 2)]:
        with pytest.raises(ValueError):
            make_lenses(*args)


# --------------------------------------------------------------------------- write_lens_dir


def test_write_lens_dir_layout_reads_back_and_matches_make_lenses(tmp_path):
    root = tmp_path / "sim"
    counts = dict(n_train_lenses=3, n_train_nonlenses=4, n_test_lenses=2, n_test_nonlenses=3)
    out = write_lens_dir(root, **counts, random_state=5, chunk_size=2)
    assert out == root
    expected = {"train_lenses": 3, "train_nonlenses": 4, "test_lenses": 2, "test_nonlenses": 3}
    assert sorted(os.listdir(root)) == sorted(list(expected) + ["metadata.csv"])
    for folder, n in expected.items():
        assert sorted(os.listdir(root / folder)) == sorted(f"{k}.npy" for k in range(1, n + 1))
        for k in range(1, n + 1):
            a = np.load(root / folder / f"{k}.npy")
            assert a.shape == (3, 64, 64) and a.dtype == np.dtype("<f4") and a.flags.c_contiguous
            assert a.min() == 0.0 and a.max() == 1.0
    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert {(r["folder"], r["file"]) for r in rows} == {(f, f"{k}.npy") for f, n in expected.items()
                                                         for k in range(1, n + 1)}
    assert all((r["label"] == "1") == r["folder"].endswith("_lenses") for r in rows)
    # the train split is make_lenses(shuffle=False) with the same seed
    X, y = make_lenses(3, 4, random_state=5, shuffle=False)
    np.testing.assert_array_equal(np.load(root / "train_lenses" / "2.npy"), X[1])
    np.testing.assert_array_equal(np.load(root / "train_nonlenses" / "4.npy"), X[6])
    # nothing left behind next to the output
    assert sorted(os.listdir(tmp_path)) == ["sim"]


def test_write_lens_dir_refuses_non_empty_folder_unless_overwrite(tmp_path):
    root = tmp_path / "sim"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_lens_dir(root, 1, 1, 1, 1, random_state=0)
    write_lens_dir(root, 2, 2, 1, 1, random_state=0, overwrite=True)
    assert len(os.listdir(root / "train_lenses")) == 2
    # a smaller set replaces the old folders completely (no stale files) and keeps other files
    write_lens_dir(root, 1, 1, 1, 1, random_state=0, overwrite=True, n_jobs=2, progress=True)
    assert os.listdir(root / "train_lenses") == ["1.npy"]
    assert (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]
    with pytest.raises(FileExistsError):
        write_lens_dir(root / "notes.txt", 1, 1, 1, 1)
    with pytest.raises(ValueError):
        write_lens_dir(tmp_path / "other", 0, 0, 0, 0)
