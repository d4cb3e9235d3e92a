"""Built-in strong-lens simulator: HSC-Wide-like g, r, i cutouts of lenses and look-alikes.

Two public functions:

* :func:`make_lenses` returns arrays ``X`` (N, 3, H, W), ``y`` (1 = lens) and, on request,
  a metadata table and the noiseless components of every image;
* :func:`write_lens_dir` writes the DeepLense folder layout (``train_lenses/``,
  ``train_nonlenses/``, ``test_lenses/``, ``test_nonlenses/``, one ``.npy`` per object,
  plus ``metadata.csv``) so the regular loader reads simulated data like the real set.

The physics (light profiles, SIE + shear ray tracing, PSF, noise) lives in
``lensclf._lensing``; this module draws the parameters of every object, assembles the
scenes in vectorised batches, and handles seeding, parallelism and files. See
``docs/simulator.md`` for the model and the measured speed / difficulty.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from . import _lensing
from ._layout import CLASS_FOLDERS

__all__ = ["make_lenses", "write_lens_dir", "DIFFICULTIES", "NONLENS_KINDS"]

#: Names of the difficulty presets.
DIFFICULTIES = ("easy", "medium", "hard")
#: Kinds of non-lenses: ``'plain'`` (the same central galaxy, no feature) and the hard negatives.
NONLENS_KINDS = ("plain", "companion", "spiral", "ring", "merger")

BANDS = ("g", "r", "i")
ZERO_POINT = 27.0  # AB magnitude of 1 count (HSC coadd convention)
# Sky noise per 0.168" pixel for one full-depth HSC-Wide coadd, in counts (ZP 27); this is
# the 5-sigma point-source depth g~26.6, r~26.2, i~26.0 for typical seeing.
SKY_SIGMA = np.array([0.045, 0.065, 0.085])
# Dark-sky surface brightness (mag / arcsec^2); with SKY_SIGMA it fixes the effective gain
# (electrons per count) and hence the Poisson noise of bright objects.
SKY_BRIGHTNESS = np.array([22.1, 21.1, 20.3])

# Split codes in the per-object seed: SeedSequence(entropy=seed, spawn_key=(split, label, index)).
_SPLIT_CODES = {"train": 0, "test": 1}
_SHUFFLE_KEY = (7,)
_MAX_FIELD_GALAXIES = 6
_MAX_STARS = 3
_MAX_CLUMPS = 4
_MAX_TAILS = 2
_STAMP_HALF = 12  # field galaxies are rendered on (25 x 25)-pixel stamps


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Every knob of the simulator (see ``make_lenses`` for their meaning)."""

    einstein_radius_range: tuple = (0.8, 2.5)
    snr_range: tuple = (50.0, 300.0)
    seeing_range: tuple = (0.5, 0.9)
    noise_scale: float = 1.0
    negative_mix: float = 0.5
    hard_negative_weights: tuple = (("companion", 0.3), ("spiral", 0.2), ("ring", 0.25), ("merger", 0.25))
    source_offset_range: tuple = (0.0, 0.75)
    source_radius_range: tuple = (0.1, 0.5)
    shear_range: tuple = (0.0, 0.1)
    lens_axis_ratio_range: tuple = (0.5, 1.0)
    lens_mag_scatter: float = 0.4
    tangential_fraction: float = 0.6
    field_density: float = 1.5
    star_density: float = 0.1
    bright_neighbour_probability: float = 0.15
    image_size: int = 64
    pixel_scale: float = 0.168
    supersample: int = 2
    psf_profile: str = "moffat"


_PRESETS = {
    "easy": dict(
        einstein_radius_range=(1.2, 2.5),
        snr_range=(150.0, 600.0),
        seeing_range=(0.5, 0.7),
        noise_scale=0.8,
        negative_mix=0.3,
        source_offset_range=(0.0, 0.5),
        field_density=1.0,
    ),
    "medium": dict(),
    "hard": dict(
        einstein_radius_range=(0.6, 2.0),
        snr_range=(20.0, 100.0),
        seeing_range=(0.6, 1.1),
        noise_scale=1.3,
        negative_mix=0.7,
        source_offset_range=(0.0, 0.9),
        field_density=2.0,
    ),
}

_KNOBS = tuple(f.name for f in dataclasses.fields(_Settings))


def _check_range(name, value, low, high, *, allow_equal=True):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo > hi or (not allow_equal and lo == hi):
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    if lo < low or hi > high:
        raise ValueError(f"{name} must lie within [{low}, {high}], got {value!r}")
    return (lo, hi)


def _check_number(name, value, low, high, *, integer=False, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value) if integer else float(value)
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value!r}")
    return value


def _resolve_settings(difficulty, overrides):
    """Preset + overrides -> validated ``_Settings``; clear errors for anything wrong."""
    if difficulty not in _PRESETS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    unknown = sorted(set(overrides) - set(_KNOBS))
    if unknown:
        raise TypeError(f"unexpected simulation option(s) {unknown}; valid options: {', '.join(_KNOBS)}")
    values = dict(_PRESETS[difficulty])
    values.update({k: v for k, v in overrides.items() if v is not None})
    s = dataclasses.replace(_Settings(), **values)
    weights = s.hard_negative_weights
    if isinstance(weights, dict):
        weights = tuple(weights.items())
    try:
        weights = tuple((str(k), float(w)) for k, w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"hard_negative_weights must map kinds to weights, got {s.hard_negative_weights!r}") from None
    bad = [k for k, _ in weights if k not in NONLENS_KINDS[1:]]
    if bad or not weights or any(w < 0 or not math.isfinite(w) for _, w in weights) or sum(w for _, w in weights) <= 0:
        raise ValueError(
            f"hard_negative_weights must give non-negative weights (not all zero) to kinds among "
            f"{NONLENS_KINDS[1:]}, got {s.hard_negative_weights!r}"
        )
    checked = dict(
        einstein_radius_range=_check_range("einstein_radius_range", s.einstein_radius_range, 0.2, 4.0),
        snr_range=_check_range("snr_range", s.snr_range, 0.0, 1e5),
        seeing_range=_check_range("seeing_range", s.seeing_range, 0.2, 2.0),
        noise_scale=_check_number("noise_scale", s.noise_scale, 0.0, 100.0, low_open=True),
        negative_mix=_check_number("negative_mix", s.negative_mix, 0.0, 1.0),
        hard_negative_weights=weights,
        source_offset_range=_check_range("source_offset_range", s.source_offset_range, 0.0, 2.0),
        source_radius_range=_check_range("source_radius_range", s.source_radius_range, 0.02, 2.0),
        shear_range=_check_range("shear_range", s.shear_range, 0.0, 0.3),
        lens_axis_ratio_range=_check_range("lens_axis_ratio_range", s.lens_axis_ratio_range, 0.2, 1.0),
        lens_mag_scatter=_check_number("lens_mag_scatter", s.lens_mag_scatter, 0.0, 3.0),
        tangential_fraction=_check_number("tangential_fraction", s.tangential_fraction, 0.0, 1.0),
        field_density=_check_number("field_density", s.field_density, 0.0, float(_MAX_FIELD_GALAXIES)),
        star_density=_check_number("star_density", s.star_density, 0.0, float(_MAX_STARS)),
        bright_neighbour_probability=_check_number(
            "bright_neighbour_probability", s.bright_neighbour_probability, 0.0, 1.0
        ),
        image_size=_check_number("image_size", s.image_size, 16, 512, integer=True),
        pixel_scale=_check_number("pixel_scale", s.pixel_scale, 0.01, 2.0, low_open=True),
        supersample=_check_number("supersample", s.supersample, 1, 8, integer=True),
    )
    if s.psf_profile not in ("moffat", "gaussian"):
        raise ValueError(f"psf_profile must be 'moffat' or 'gaussian', got {s.psf_profile!r}")
    if checked["snr_range"][0] <= 0:
        raise ValueError(f"snr_range must be positive, got {s.snr_range!r}")
    half_width = 0.5 * checked["image_size"] * checked["pixel_scale"]
    outer_image = checked["einstein_radius_range"][1] * (1.0 + checked["source_offset_range"][1]) + 0.5
    if outer_image > half_width:
        raise ValueError(
            f"einstein_radius_range {s.einstein_radius_range} with source_offset_range {s.source_offset_range} "
            f"puts lensed images up to {outer_image:.1f}\" from the centre, beyond the {half_width:.1f}\" "
            f"half-width of a {checked['image_size']}-pixel, {checked['pixel_scale']}\"/pixel image"
        )
    return dataclasses.replace(s, **checked)


def _entropy(random_state):
    """Turn ``random_state`` (None, int, Generator, RandomState) into a SeedSequence entropy."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")
    if isinstance(random_state, numbers.Integral):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state!r}")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")


def _object_rng(entropy, split_code, label, index):
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(split_code, int(label), int(index))))


# ----------------------------------------------------------------------------------------
# Parameter drawing (one object at a time, from its own random stream)
# ----------------------------------------------------------------------------------------

# Column name -> dtype of the metadata table, in order. Floats are NaN where they do not
# apply (e.g. source parameters of a non-lens). Angles are in degrees, positions in arcsec
# relative to the image centre (source-plane positions relative to the lens centre),
# magnitudes are AB (HSC zero point 27), seeing is the PSF FWHM in arcsec.
_COLUMNS = [
    ("label", "i1"),
    ("kind", "U9"),
    ("class_index", "i8"),
    ("seeing_g", "f4"), ("seeing_r", "f4"), ("seeing_i", "f4"), ("psf_beta", "f4"),
    ("sky_sigma_g", "f4"), ("sky_sigma_r", "f4"), ("sky_sigma_i", "f4"),
    ("lens_x", "f4"), ("lens_y", "f4"),
    ("lens_mag_g", "f4"), ("lens_mag_r", "f4"), ("lens_mag_i", "f4"),
    ("lens_r_eff", "f4"), ("lens_sersic_n", "f4"), ("lens_q", "f4"), ("lens_pa", "f4"),
    ("einstein_radius", "f4"), ("mass_q", "f4"), ("mass_pa", "f4"),
    ("shear_gamma", "f4"), ("shear_pa", "f4"),
    ("source_x", "f4"), ("source_y", "f4"), ("source_r_eff", "f4"), ("source_sersic_n", "f4"),
    ("source_q", "f4"), ("source_pa", "f4"), ("source_mag_i", "f4"), ("magnification", "f4"),
    ("n_clumps", "i1"), ("clump_fraction", "f4"),
    *[(f"clump{k}_{p}", "f4") for k in range(_MAX_CLUMPS) for p in ("x", "y", "sigma", "fraction")],
    ("feature_snr", "f4"), ("feature_g_r", "f4"), ("feature_r_i", "f4"),
    ("feature_mag_g", "f4"), ("feature_mag_r", "f4"), ("feature_mag_i", "f4"),
    ("feature_radius", "f4"), ("feature_count", "i1"), ("feature_tangential", "i1"),
    ("n_field_galaxies", "i1"), ("n_stars", "i1"), ("bright_neighbour", "i1"), ("environment_mag_i", "f4"),
]
_COLUMN_NAMES = [name for name, _ in _COLUMNS]


def _mags_to_counts(mag_i, g_r, r_i):
    """(g, r, i) fluxes in counts from the i magnitude and two colours."""
    f_i = 10.0 ** (-0.4 * (mag_i - ZERO_POINT))
    f_r = f_i * 10.0 ** (-0.4 * r_i)
    return np.array([f_r * 10.0 ** (-0.4 * g_r), f_r, f_i])


def _blue_colour(rng):
    """Colours of star-forming features (lensed sources AND hard-negative features alike)."""
    return rng.uniform(0.0, 0.6), rng.uniform(-0.1, 0.35)


def _sersic_row(x, y, r_eff, n, q, pa, fluxes):
    return (x, y, r_eff, n, q, pa, *fluxes)


def _draw_object(rng, label, settings):
    """Draw every parameter of one object. Returns (metadata dict, render dict)."""
    s = settings
    ps = s.pixel_scale
    meta = {name: np.nan for name in _COLUMN_NAMES}
    meta.update(label=int(label), n_clumps=0, feature_count=0, feature_tangential=0)
    render = {}

    # Observing conditions (per object, per band).
    seeing_i = rng.uniform(*s.seeing_range)
    seeing = np.array([seeing_i * rng.uniform(1.08, 1.3), seeing_i * rng.uniform(1.0, 1.12), seeing_i])
    psf_beta = rng.uniform(2.5, 4.5)
    sky_sigma = SKY_SIGMA * s.noise_scale * rng.uniform(0.85, 1.15)  # depth varies across the survey
    meta.update(seeing_g=seeing[0], seeing_r=seeing[1], seeing_i=seeing[2], psf_beta=psf_beta)
    meta.update(sky_sigma_g=sky_sigma[0], sky_sigma_r=sky_sigma[1], sky_sigma_i=sky_sigma[2])
    render.update(seeing=seeing, psf_beta=psf_beta, sky_sigma=sky_sigma)

    # Central (potential lens) galaxy: the same population for both classes. Its Einstein
    # radius (for non-lenses: the one it would have) sets its luminosity (Faber-Jackson:
    # L ~ sigma^4 ~ theta_E^2) and size.
    lo, hi = s.einstein_radius_range
    theta_e = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    lens_x, lens_y = rng.uniform(-0.5, 0.5, size=2) * ps
    mag_i = 19.4 - 5.0 * math.log10(theta_e / 1.1) + rng.normal(0.0, s.lens_mag_scatter)
    g_r, r_i = rng.uniform(1.2, 1.8), rng.uniform(0.4, 0.8)
    r_eff = float(np.clip(0.65 * (theta_e / 1.1) ** 0.7 * math.exp(rng.normal(0.0, 0.25)), 0.25, 2.5))
    n_lens = rng.uniform(2.5, 5.0)
    q_lens = rng.uniform(*s.lens_axis_ratio_range)
    pa_lens = rng.uniform(0.0, math.pi)
    lens_fluxes = _mags_to_counts(mag_i, g_r, r_i)
    meta.update(lens_x=lens_x, lens_y=lens_y, lens_r_eff=r_eff, lens_sersic_n=n_lens, lens_q=q_lens,
                lens_pa=math.degrees(pa_lens))
    meta.update(lens_mag_g=mag_i + r_i + g_r, lens_mag_r=mag_i + r_i, lens_mag_i=mag_i)
    render["lens_light"] = _sersic_row(lens_x, lens_y, r_eff, n_lens, q_lens, pa_lens, lens_fluxes)

    # Kind of object.
    if label == 1:
        kind = "lens"
    elif rng.uniform() < s.negative_mix:
        names = [k for k, _ in s.hard_negative_weights]
        w = np.array([w for _, w in s.hard_negative_weights])
        kind = names[rng.choice(len(names), p=w / w.sum())]
    else:
        kind = "plain"
    meta["kind"] = kind
    render["kind"] = kind

    # The lensed source or the hard-negative feature: blue, brightness set by a drawn S/N
    # from the same distribution in every case.
    snr = math.exp(rng.uniform(*np.log(s.snr_range)))
    f_gr, f_ri = _blue_colour(rng)
    colour = _mags_to_counts(ZERO_POINT, f_gr, f_ri)  # relative fluxes, i = 1
    render["feature_colour"] = colour
    if kind != "plain":
        meta.update(feature_snr=snr, feature_g_r=f_gr, feature_r_i=f_ri)
        render["snr"] = snr

    if kind == "lens":
        q_mass = float(np.clip(q_lens + rng.normal(0.0, 0.1), 0.4, 0.98))
        pa_mass = pa_lens + math.radians(rng.normal(0.0, 10.0))
        gamma = rng.uniform(*s.shear_range)
        pa_shear = rng.uniform(0.0, math.pi)
        off_lo, off_hi = s.source_offset_range
        beta = theta_e * math.sqrt(rng.uniform(off_lo**2, off_hi**2))  # uniform in area
        phi = rng.uniform(0.0, 2.0 * math.pi)
        src_x, src_y = beta * math.cos(phi), beta * math.sin(phi)
        rlo, rhi = s.source_radius_range
        src_re = math.exp(rng.uniform(math.log(rlo), math.log(rhi)))
        src_n = rng.uniform(0.5, 2.0)
        src_q = rng.uniform(0.4, 1.0)
        src_pa = rng.uniform(0.0, math.pi)
        n_clumps = int(rng.integers(1, _MAX_CLUMPS + 1))
        clump_fraction = rng.uniform(0.15, 0.45)
        split = rng.dirichlet(np.ones(n_clumps)) * clump_fraction
        clumps = []
        for k in range(n_clumps):
            rad = src_re * rng.uniform(0.0, 1.2)
            ang = rng.uniform(0.0, 2.0 * math.pi)
            sig = rng.uniform(0.03, 0.08)
            clumps.append((src_x + rad * math.cos(ang), src_y + rad * math.sin(ang), sig, split[k]))
            meta.update({f"clump{k}_x": clumps[-1][0], f"clump{k}_y": clumps[-1][1],
                         f"clump{k}_sigma": sig, f"clump{k}_fraction": split[k]})
        meta.update(einstein_radius=theta_e, mass_q=q_mass, mass_pa=math.degrees(pa_mass), shear_gamma=gamma,
                    shear_pa=math.degrees(pa_shear), source_x=src_x, source_y=src_y, source_r_eff=src_re,
                    source_sersic_n=src_n, source_q=src_q, source_pa=math.degrees(src_pa), n_clumps=n_clumps,
                    clump_fraction=clump_fraction, feature_radius=theta_e, feature_count=n_clumps)
        render["mass"] = (lens_x, lens_y, theta_e, q_mass, pa_mass,
                          gamma * math.cos(2 * pa_shear), gamma * math.sin(2 * pa_shear))
        render["source"] = (src_x, src_y, src_re, src_n, src_q, src_pa, 1.0 - clump_fraction)
        render["clumps"] = clumps
    elif kind == "companion":
        n_comp = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        fractions = rng.dirichlet(np.full(n_comp, 2.0))
        tangential = rng.uniform() < s.tangential_fraction
        comps = []
        for k in range(n_comp):
            rad = theta_e * rng.uniform(0.7, 1.4)
            ang = rng.uniform(0.0, 2.0 * math.pi)
            if tangential:
                pa = ang + math.pi / 2 + math.radians(rng.normal(0.0, 15.0))
                q = rng.uniform(0.25, 0.6)
            else:
                pa = rng.uniform(0.0, math.pi)
                q = rng.uniform(0.4, 1.0)
            comps.append(_sersic_row(lens_x + rad * math.cos(ang), lens_y + rad * math.sin(ang),
                                     rng.uniform(0.12, 0.4), rng.uniform(0.5, 1.5), q, pa, (0.0, 0.0, fractions[k])))
        meta.update(feature_radius=theta_e, feature_count=n_comp, feature_tangential=int(tangential))
        render["feature_sersics"] = comps
    elif kind == "spiral":
        scale = theta_e * rng.uniform(0.55, 0.9)
        render["spiral"] = (lens_x, lens_y, scale, math.radians(rng.uniform(12.0, 30.0)),
                            rng.uniform(0.5, 1.0), rng.uniform(0.0, math.pi), rng.uniform(0.0, 2 * math.pi),
                            rng.uniform(2.0, 6.0))
        meta.update(feature_radius=scale, feature_count=2)
    elif kind == "ring":
        radius = theta_e * rng.uniform(0.8, 1.3)
        render["ring"] = (lens_x + rng.normal(0.0, 0.08 * radius), lens_y + rng.normal(0.0, 0.08 * radius),
                          radius, rng.uniform(0.08, 0.2), rng.uniform(0.55, 1.0), rng.uniform(0.0, math.pi),
                          rng.uniform(0.2, 0.8), float(rng.integers(2, 7)), rng.uniform(0.0, 2 * math.pi))
        meta.update(feature_radius=radius, feature_count=1)
    elif kind == "merger":
        sep = theta_e * rng.uniform(0.8, 1.5)
        ang = rng.uniform(0.0, 2.0 * math.pi)
        x2, y2 = lens_x + sep * math.cos(ang), lens_y + sep * math.sin(ang)
        sec_fraction = rng.uniform(0.5, 0.8)
        render["feature_sersics"] = [_sersic_row(x2, y2, rng.uniform(0.25, 0.7), rng.uniform(1.0, 3.0),
                                                 rng.uniform(0.4, 1.0), rng.uniform(0.0, math.pi),
                                                 (0.0, 0.0, sec_fraction))]
        n_tails = int(rng.integers(1, _MAX_TAILS + 1))
        tails = []
        for _ in range(n_tails):
            radius = rng.uniform(1.0, 2.5)
            phi0 = rng.uniform(0.0, 2.0 * math.pi)
            # the tail's circle passes through the merging pair
            xc = 0.5 * (lens_x + x2) - radius * math.cos(phi0)
            yc = 0.5 * (lens_y + y2) - radius * math.sin(phi0)
            tails.append((xc, yc, radius, rng.uniform(0.1, 0.25), phi0,
                          rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0), (1.0 - sec_fraction) / n_tails))
        render["tails"] = tails
        meta.update(feature_radius=sep, feature_count=1 + n_tails)

    # Environment, shared by both classes: faint field galaxies, stars, a bright neighbour.
    half = 0.5 * s.image_size * ps
    env = []
    n_field = min(int(rng.poisson(s.field_density)), _MAX_FIELD_GALAXIES)
    for _ in range(n_field):
        x, y = rng.uniform(-half, half, size=2)
        fl = _mags_to_counts(rng.uniform(22.0, 25.5), rng.uniform(0.2, 1.5), rng.uniform(0.0, 0.7))
        env.append(_sersic_row(x, y, rng.uniform(0.15, 0.6), rng.uniform(0.7, 3.0), rng.uniform(0.3, 1.0),
                               rng.uniform(0.0, math.pi), fl))
    bright = rng.uniform() < s.bright_neighbour_probability
    neighbour = []
    if bright:
        rad, ang = rng.uniform(0.75, 1.25) * half, rng.uniform(0.0, 2.0 * math.pi)
        fl = _mags_to_counts(rng.uniform(17.5, 20.0), rng.uniform(0.4, 1.7), rng.uniform(0.1, 0.7))
        neighbour.append(_sersic_row(rad * math.cos(ang), rad * math.sin(ang), rng.uniform(0.8, 2.0),
                               rng.uniform(1.0, 4.0), rng.uniform(0.4, 1.0), rng.uniform(0.0, math.pi), fl))
    n_stars = min(int(rng.poisson(s.star_density)), _MAX_STARS)
    stars = []
    for _ in range(n_stars):
        x, y = rng.uniform(-half, half, size=2)
        stars.append((x, y, *_mags_to_counts(rng.uniform(19.0, 24.5), rng.uniform(0.3, 1.4),
                                             rng.uniform(0.1, 0.6))))
    env_flux_i = sum(row[-1] for row in env + neighbour + stars)
    meta.update(n_field_galaxies=n_field, n_stars=n_stars, bright_neighbour=int(bright),
                environment_mag_i=ZERO_POINT - 2.5 * math.log10(env_flux_i) if env_flux_i > 0 else np.nan)
    render["environment"] = env
    render["neighbour"] = neighbour
    render["stars"] = stars
    return meta, render


# ----------------------------------------------------------------------------------------
# Batch rendering
# ----------------------------------------------------------------------------------------


def _stack(rows_per_object, padding):
    """Pad a list (per object) of lists of parameter rows into an array (B, K, width).

    Missing rows are filled with ``padding``: a harmless component of zero flux.
    """
    k_max = max([len(rows) for rows in rows_per_object] + [1])
    out = np.tile(np.asarray(padding, dtype=np.float64), (len(rows_per_object), k_max, 1))
    for b, rows in enumerate(rows_per_object):
        if rows:
            out[b, : len(rows)] = rows
    return out


# Zero-flux padding rows: Sersic (x, y, re, n, q, pa, fg, fr, fi), clump (x, y, sigma,
# fraction), tail (xc, yc, radius, width, phi0, extent, fraction).
_SERSIC_PAD = (0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
_CLUMP_PAD = (0.0, 0.0, 1.0, 0.0)
_TAIL_PAD = (0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0)


def _col(table, j, dtype=np.float32):
    return table[:, :, j, None, None].astype(dtype)


def _sersic_sum(x, y, table):
    """Sum of Sersic components weighted by their i-band flux: (B, H, W).

    ``table`` (B, K, 9): x, y, re, n, q, pa, flux_g, flux_r, flux_i.
    """
    shapes = _lensing.sersic_profile(x, y, _col(table, 0), _col(table, 1), _col(table, 2), table[:, :, 3, None, None],
                                     _col(table, 4), _col(table, 5))
    if table.shape[1] == 1:
        return shapes[:, 0] * _col(table, 8)[:, 0]
    return (shapes * _col(table, 8)).sum(axis=1)


def _sersic_bands(x, y, table):
    """Sum of Sersic components, per band. ``table`` (B, K, 9): x, y, re, n, q, pa, fg, fr, fi."""
    shapes = _lensing.sersic_profile(x, y, _col(table, 0), _col(table, 1), _col(table, 2), table[:, :, 3, None, None],
                                     _col(table, 4), _col(table, 5))
    b, k, h, w = shapes.shape
    fluxes = table[:, :, 6:9].astype(np.float32)  # (B, K, 3)
    return (fluxes.transpose(0, 2, 1) @ shapes.reshape(b, k, h * w)).reshape(b, 3, h, w)


def _render_chunk(renders, settings, rngs, normalize, want_components):
    """Render a batch of drawn objects into images (and components)."""
    s = settings
    n_obj = len(renders)
    size, ps, ss = s.image_size, s.pixel_scale, s.supersample
    max_fwhm_px = s.seeing_range[1] * 1.3 / ps
    pad = int(math.ceil(1.5 * max_fwhm_px))
    ksize = 2 * pad + 1
    canvas_size = size + 2 * pad
    xc, yc = _lensing.pixel_grid(canvas_size, ps)
    xb, yb = _lensing.pixel_grid(size, ps, supersample=ss)
    pix_area = np.float32(ps * ps)
    inner = (slice(None), slice(None), slice(pad, pad + size), slice(pad, pad + size))

    # Central galaxy: natively sampled on the canvas, supersampled inside the field.
    lens_table = np.array([[r["lens_light"]] for r in renders])
    lens_colour = (lens_table[:, 0, 6:9] / lens_table[:, 0, 8:9]).astype(np.float32)[:, :, None, None]
    lens_shape = _sersic_sum(xc, yc, lens_table)
    lens_shape[:, pad:pad + size, pad:pad + size] = _lensing.block_mean(_sersic_sum(xb, yb, lens_table), ss)
    galaxy = lens_shape[:, None] * (lens_colour * pix_area)

    # Features (lensed source or hard-negative feature), supersampled over the field,
    # as i-band unit-flux shapes; each feature has a single colour.
    feat_box = np.zeros((n_obj, size * ss, size * ss), np.float32)
    kinds = np.array([r["kind"] for r in renders])
    lens_idx = np.flatnonzero(kinds == "lens")
    if lens_idx.size:
        m = np.array([renders[i]["mass"] for i in lens_idx])  # x0, y0, theta_e, q, pa, g1, g2
        bx, by = _lensing.ray_trace(xb, yb, *[m[:, j, None, None].astype(np.float32) for j in range(7)])
        src = np.array([[renders[i]["source"]] for i in lens_idx])  # x, y, re, n, q, pa, fraction
        unit = _lensing.sersic_profile(bx, by, *[_col(src, j)[:, 0] for j in range(6)]) * _col(src, 6)[:, 0]
        clumps = _stack([renders[i]["clumps"] for i in lens_idx], _CLUMP_PAD)
        for k in range(clumps.shape[1]):  # the unlensed source (disc + clumps) has unit flux
            c = clumps[:, k, :, None, None].astype(np.float32)
            unit += c[:, 3] * _lensing.gaussian_profile(bx, by, c[:, 0], c[:, 1], c[:, 2])
        feat_box[lens_idx] = unit
    comp_rows = [r.get("feature_sersics", []) for r in renders]
    comp_idx = np.flatnonzero([len(rows) > 0 for rows in comp_rows])
    if comp_idx.size:
        feat_box[comp_idx] += _sersic_sum(xb, yb, _stack([comp_rows[i] for i in comp_idx], _SERSIC_PAD))
    for name, profile in (("spiral", _lensing.spiral_arm_profile), ("ring", _lensing.ring_profile)):
        idx = np.flatnonzero(kinds == name)
        if idx.size:
            t = np.array([renders[i][name] for i in idx])
            shape = profile(xb, yb, *[t[:, j, None, None].astype(np.float32) for j in range(t.shape[1])])
            feat_box[idx] += shape / (shape.sum(axis=(-2, -1), keepdims=True) * (pix_area / ss**2))
    tail_idx = np.flatnonzero([len(r.get("tails", [])) > 0 for r in renders])
    if tail_idx.size:
        t = _stack([renders[i]["tails"] for i in tail_idx], _TAIL_PAD)
        shape = _lensing.tidal_tail_profile(xb, yb, *[_col(t, j) for j in range(6)])
        shape /= shape.sum(axis=(-2, -1), keepdims=True) * (pix_area / ss**2) + 1e-30
        feat_box[tail_idx] += (shape * _col(t, 6)).sum(axis=1)
    feature_colour = np.array([r["feature_colour"] for r in renders], np.float32)[:, :, None, None]
    feature = np.zeros_like(galaxy)
    feature[inner] = _lensing.block_mean(feat_box, ss)[:, None] * (feature_colour * pix_area)
    environment = galaxy if not want_components else np.zeros_like(galaxy)

    # Environment on the native canvas: field galaxies on small stamps, the bright
    # neighbour (large, often off the edge) on the whole canvas, stars as points that
    # the PSF shapes.
    nb_idx = np.flatnonzero([len(r["neighbour"]) > 0 for r in renders])
    if nb_idx.size:
        environment[nb_idx] += _sersic_bands(xc, yc, _stack([renders[i]["neighbour"] for i in nb_idx],
                                                              _SERSIC_PAD)) * pix_area
    owners = [b for b, r in enumerate(renders) for _ in r["environment"]]
    if owners:
        rows = np.array([row for r in renders for row in r["environment"]])
        centre = (canvas_size - 1) / 2.0
        ix = np.rint(rows[:, 0] / ps + centre).astype(int)
        iy = np.rint(rows[:, 1] / ps + centre).astype(int)
        offs = np.arange(-_STAMP_HALF, _STAMP_HALF + 1)
        sx = ((ix[:, None, None] + offs[None, None, :] - centre) * ps).astype(np.float32)
        sy = ((iy[:, None, None] + offs[None, :, None] - centre) * ps).astype(np.float32)
        stamps = _sersic_bands(sx[:, None], sy[:, None], rows[:, None, :]) * pix_area  # (M, 3, S, S)
        for m, b in enumerate(owners):
            i0, j0 = iy[m] - _STAMP_HALF, ix[m] - _STAMP_HALF
            ci0, cj0 = max(i0, 0), max(j0, 0)
            ci1, cj1 = min(i0 + 2 * _STAMP_HALF + 1, canvas_size), min(j0 + 2 * _STAMP_HALF + 1, canvas_size)
            if ci1 > ci0 and cj1 > cj0:
                environment[b, :, ci0:ci1, cj0:cj1] += stamps[m, :, ci0 - i0:ci1 - i0, cj0 - j0:cj1 - j0]
    for b, r in enumerate(renders):
        for x, y, *fl in r["stars"]:
            # bilinear deposit at the sub-pixel position
            px, py = x / ps + (canvas_size - 1) / 2.0, y / ps + (canvas_size - 1) / 2.0
            i0, j0 = int(math.floor(py)), int(math.floor(px))
            fy, fx = py - i0, px - j0
            for di, dj, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                              (1, 1, fy * fx)):
                if 0 <= i0 + di < canvas_size and 0 <= j0 + dj < canvas_size:
                    environment[b, :, i0 + di, j0 + dj] += np.asarray(fl, np.float32) * w

    # PSF convolution, per object and band, FFT over the whole batch at once.
    seeing = np.array([r["seeing"] for r in renders])
    beta = np.array([[r["psf_beta"]] * 3 for r in renders])
    kernels = _lensing.psf_kernels(seeing / ps, beta, ksize, profile=s.psf_profile).astype(np.float32)
    # (without components, the environment was added to the galaxy canvas: one FFT less)
    stack = np.stack([galaxy, feature, environment] if want_components else [galaxy, feature], axis=1)
    conv = _lensing.convolve_with_psf(stack, kernels[:, None], mode="valid").astype(np.float32)
    galaxy_img, feature_img = conv[:, 0], conv[:, 1]
    env_img = conv[:, 2] if want_components else 0.0

    # Set the feature brightness from its drawn S/N (matched filter over g, r, i, sky noise).
    sky_sigma = np.array([r["sky_sigma"] for r in renders], np.float32)
    amplitude = np.zeros(n_obj, np.float32)
    for b, r in enumerate(renders):
        if "snr" in r:
            power = float(((feature_img[b] / sky_sigma[b][:, None, None]) ** 2).sum())
            amplitude[b] = r["snr"] / math.sqrt(power) if power > 0 else 0.0
    feature_img *= amplitude[:, None, None, None]
    model = galaxy_img + feature_img + env_img

    # Noise: sky plus Poisson noise of the objects, from each object's own stream.
    gain = 10.0 ** (-0.4 * (SKY_BRIGHTNESS - ZERO_POINT)) * ps * ps / (SKY_SIGMA * s.noise_scale) ** 2
    noise = np.empty_like(model)
    for b in range(n_obj):
        sigma = _lensing.noise_sigma(model[b], sky_sigma[b][:, None, None], gain[:, None, None].astype(np.float32))
        noise[b] = rngs[b].standard_normal(model[b].shape, dtype=np.float32) * sigma
    images = model + noise

    # Per-object derived quantities for the metadata.
    derived = []
    unit_sums = feat_box.sum(axis=(-2, -1)) * (pix_area / ss**2)  # i-band flux before scaling
    for b, r in enumerate(renders):
        d = {}
        if "snr" in r:
            fl = feature_img[b].sum(axis=(-2, -1))
            d.update({f"feature_mag_{band}": ZERO_POINT - 2.5 * math.log10(max(float(fl[j]), 1e-30))
                      for j, band in enumerate(BANDS)})
            if r["kind"] == "lens":
                mu = float(unit_sums[b])  # lensed flux of the unit-flux source
                d["magnification"] = mu
                d["source_mag_i"] = ZERO_POINT - 2.5 * math.log10(max(float(amplitude[b]), 1e-30))
        derived.append(d)

    images = _normalise(images, normalize)
    components = None
    if want_components:
        components = {"galaxy": galaxy_img, "feature": feature_img, "environment": env_img, "noise": noise}
    return images, derived, components


def _normalise(images, normalize):
    if normalize == "minmax":
        lo = images.min(axis=(-2, -1), keepdims=True)
        span = images.max(axis=(-2, -1), keepdims=True) - lo
        return np.where(span > 0, (images - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
    return images.astype(np.float32)


def _check_normalize(normalize):
    if normalize is None or normalize == "none":
        return "none"
    if normalize == "minmax":
        return "minmax"
    raise ValueError(f"normalize must be 'minmax' or 'none' (or None), got {normalize!r}")


def _simulate_chunk(settings, entropy, split_code, label, start, stop, normalize, want_components):
    """Simulate objects ``start..stop-1`` of one (split, class): the unit of parallel work."""
    rngs, metas, renders = [], [], []
    for index in range(start, stop):
        rng = _object_rng(entropy, split_code, label, index)
        meta, render = _draw_object(rng, label, settings)
        meta["class_index"] = index
        rngs.append(rng)
        metas.append(meta)
        renders.append(render)
    images, derived, components = _render_chunk(renders, settings, rngs, normalize, want_components)
    for meta, d in zip(metas, derived):
        meta.update(d)
    return images, metas, components


def _chunks(n, chunk_size):
    return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_common(n_jobs, chunk_size):
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1 = all cores), got {n_jobs!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _run_tasks(tasks, n_jobs, progress, total, desc):
    """Run ``(function, args, n_objects)`` tasks in order, with an optional tqdm bar."""
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress)
    try:
        if n_jobs == 1:
            for func, args, n in tasks:
                yield func(*args)
                bar.update(n)
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(func)(*args) for func, args, _ in tasks)
            for (_, _, n), result in zip(tasks, results):
                yield result
                bar.update(n)
    finally:
        bar.close()


def _metadata_table(metas):
    table = np.zeros(len(metas), dtype=_COLUMNS)
    for name in _COLUMN_NAMES:
        table[name] = [m[name] for m in metas]
    return table


def make_lenses(
    n_lenses,
    n_nonlenses,
    difficulty="medium",
    random_state=None,
    normalize="minmax",
    return_metadata=False,
    return_components=False,
    *,
    shuffle=True,
    n_jobs=1,
    chunk_size=64,
    progress=False,
    **options,
):
    """Simulate HSC-like g, r, i cutouts of strong lenses and of non-lenses.

    Lenses are red elliptical galaxies (Sersic light, singular isothermal ellipsoid
    mass plus external shear) with a blue, clumpy background source ray-traced into
    arcs, rings and multiple images. Non-lenses are the same galaxy population without
    a lensed source; a fraction ``negative_mix`` of them are hard negatives (blue,
    often tangential companions; blue spiral arms; ring galaxies; mergers with tidal
    tails) whose blue feature has the same S/N and colour distribution as the lensed
    source. Both classes share the environment (field galaxies, stars, bright
    neighbours), per-band Moffat PSFs and sky + Poisson noise.

    Parameters
    ----------
    n_lenses, n_nonlenses : int
        Numbers of lenses (label 1) and non-lenses (label 0).
    difficulty : {'easy', 'medium', 'hard'}, default='medium'
        Preset for the options below; any option passed explicitly overrides it.
    random_state : int, numpy.random.Generator or None
        Seed. Object ``k`` of class ``c`` is drawn from
        ``SeedSequence(seed, spawn_key=(0, c, k))`` (split 0 = 'train'), so the result
        does not depend on ``n_jobs`` and ``write_lens_dir``'s train split with the same
        seed holds the same objects. None draws a fresh seed.
    normalize : {'minmax', 'none'} or None, default='minmax'
        'minmax': each band of each image scaled to [0, 1], like the real DeepLense
        Test II files. 'none' / None: fluxes in counts (AB zero point 27), background
        subtracted, so ``flux = 10 ** (-0.4 * (mag - 27))``.
    return_metadata : bool, default=False
        Also return a numpy structured array with one row per object (in the order of
        ``X``) and every drawn parameter; see Notes.
    return_components : bool, default=False
        Also return a dict of noiseless, PSF-convolved flux images (N, 3, H, W), in
        counts whatever ``normalize`` is: ``'galaxy'`` (the central galaxy),
        ``'feature'`` (the lensed source alone for lenses = the lens-subtracted arcs;
        the hard-negative feature for non-lenses; zero for plain ones),
        ``'environment'`` and ``'noise'``; before normalisation
        ``X = galaxy + feature + environment + noise``.
    shuffle : bool, default=True
        Shuffle the objects (deterministically from the seed); otherwise all lenses come
        first, each class in index order.
    n_jobs : int, default=1
        Parallel workers (joblib; -1 = all cores). Work is split in chunks of
        ``chunk_size`` objects per (class); the output is identical for every ``n_jobs``.
    chunk_size : int, default=64
        Objects rendered together in one vectorised batch.
    progress : bool, default=False
        Show a tqdm progress bar.
    **options
        Overrides of the preset (all keyword-only):

        ``einstein_radius_range`` (arcsec, log-uniform; medium (0.8, 2.5)),
        ``snr_range`` (matched-filter S/N of the lensed source / hard-negative feature
        over g+r+i against the sky noise, log-uniform; medium (15, 60)),
        ``seeing_range`` (i-band PSF FWHM, arcsec; g is 8-30 % and r 0-12 % broader;
        medium (0.5, 0.9)), ``noise_scale`` (sky noise in units of HSC-Wide depth; 1),
        ``negative_mix`` (fraction of non-lenses that are hard negatives; 0.5),
        ``hard_negative_weights`` (dict kind -> weight over 'companion', 'spiral',
        'ring', 'merger'), ``source_offset_range`` (source distance from the lens
        centre in units of theta_E, uniform in area; (0, 0.9)), ``source_radius_range``
        (source half-light radius, arcsec; (0.1, 0.5)), ``shear_range`` (external
        shear amplitude; (0, 0.1)), ``lens_axis_ratio_range`` ((0.5, 1)),
        ``lens_mag_scatter`` (scatter of the Faber-Jackson-like magnitude relation; 0.4),
        ``tangential_fraction`` (share of companion negatives that are tangentially
        elongated; 0.6), ``field_density`` (mean field galaxies per image; 1.5),
        ``star_density`` (mean stars per image; 0.3), ``bright_neighbour_probability``
        (0.15), ``image_size`` (pixels; 64), ``pixel_scale`` (arcsec; 0.168),
        ``supersample`` (ray-tracing supersampling factor; 2), ``psf_profile``
        ('moffat' or 'gaussian').

    Returns
    -------
    X : ndarray of shape (n_lenses + n_nonlenses, 3, image_size, image_size), float32
        Bands g, r, i.
    y : ndarray of shape (n_lenses + n_nonlenses,), int64
        1 = lens, 0 = non-lens.
    metadata : numpy structured array, only if ``return_metadata``
    components : dict of ndarrays, only if ``return_components``

    Raises
    ------
    ValueError
        For bad counts, difficulty, ranges or other option values.
    TypeError
        For an unknown option name or a bad ``random_state`` type.

    Notes
    -----
    Metadata columns (NaN / 0 where a column does not apply): ``label``, ``kind``
    ('lens', 'plain', 'companion', 'spiral', 'ring', 'merger'), ``class_index``;
    observing conditions ``seeing_{g,r,i}``, ``psf_beta``, ``sky_sigma_{g,r,i}``;
    central galaxy ``lens_x``, ``lens_y``, ``lens_mag_{g,r,i}``, ``lens_r_eff``,
    ``lens_sersic_n``, ``lens_q``, ``lens_pa``; lens mass ``einstein_radius``,
    ``mass_q``, ``mass_pa``, ``shear_gamma``, ``shear_pa``; source (source-plane
    position relative to the lens centre) ``source_x``, ``source_y``,
    ``source_r_eff``, ``source_sersic_n``, ``source_q``, ``source_pa``,
    ``source_mag_i`` (intrinsic), ``magnification``, ``n_clumps``, ``clump_fraction``,
    ``clump{k}_{x,y,sigma,fraction}``; lensed source or hard-negative feature
    ``feature_snr``, ``feature_g_r``, ``feature_r_i``, ``feature_mag_{g,r,i}``
    (observed), ``feature_radius``, ``feature_count``, ``feature_tangential``;
    environment ``n_field_galaxies``, ``n_stars``, ``bright_neighbour``,
    ``environment_mag_i``. Positions in arcsec, angles in degrees, magnitudes AB.
    Use ``pandas.DataFrame(metadata)`` if you like pandas.

    Examples
    --------
    >>> from lensclf import make_lenses
    >>> X, y, meta = make_lenses(8, 8, random_state=0, return_metadata=True)
    >>> X.shape, X.dtype, int(y.sum())
    ((16, 3, 64, 64), dtype('float32'), 8)
    """
    n_lenses = _check_count("n_lenses", n_lenses)
    n_nonlenses = _check_count("n_nonlenses", n_nonlenses)
    if n_lenses + n_nonlenses == 0:
        raise ValueError("n_lenses + n_nonlenses must be at least 1")
    settings = _resolve_settings(difficulty, options)
    normalize = _check_normalize(normalize)
    _check_common(n_jobs, chunk_size)
    entropy = _entropy(random_state)
    split = _SPLIT_CODES["train"]

    tasks = []
    for label, count in ((1, n_lenses), (0, n_nonlenses)):
        for a, b in _chunks(count, chunk_size):
            args = (settings, entropy, split, label, a, b, normalize, return_components)
            tasks.append((_simulate_chunk, args, b - a))
    images, metas, comps = [], [], []
    for chunk_images, chunk_metas, chunk_comps in _run_tasks(tasks, n_jobs, progress, n_lenses + n_nonlenses,
                                                             "simulating"):
        images.append(chunk_images)
        metas.extend(chunk_metas)
        comps.append(chunk_comps)
    X = np.concatenate(images).astype(np.float32, copy=False)
    y = np.concatenate([np.ones(n_lenses, np.int64), np.zeros(n_nonlenses, np.int64)])
    order = np.arange(len(y))
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=_SHUFFLE_KEY)).permutation(len(y))
    result = [np.ascontiguousarray(X[order]), y[order]]
    if return_metadata:
        result.append(_metadata_table(metas)[order])
    if return_components:
        result.append({k: np.concatenate([c[k] for c in comps])[order] for k in comps[0]})
    return tuple(result)


_FOLDERS = CLASS_FOLDERS  # (split, label, folder name) of the four DeepLense class folders


def _write_chunk(settings, entropy, split, label, start, stop, normalize, folder):
    """Simulate one chunk and save its ``.npy`` files (``index + 1``) into ``folder``."""
    images, metas, _ = _simulate_chunk(settings, entropy, _SPLIT_CODES[split], label, start, stop, normalize, False)
    for index, image in zip(range(start, stop), images):
        np.save(os.path.join(folder, f"{index + 1}.npy"), np.ascontiguousarray(image, dtype="<f4"))
    return metas


def write_lens_dir(
    root,
    n_train_lenses=1730,
    n_train_nonlenses=28675,
    n_test_lenses=195,
    n_test_nonlenses=19455,
    difficulty="medium",
    random_state=None,
    normalize="minmax",
    *,
    overwrite=False,
    n_jobs=1,
    progress=False,
    chunk_size=64,
    **options,
):
    """Write a simulated data set in the DeepLense Test II folder layout.

    Creates ``root/train_lenses/``, ``train_nonlenses/``, ``test_lenses/`` and
    ``test_nonlenses/`` with one file per object named ``1.npy``, ``2.npy``, ...
    (float32 little-endian, C order, shape (3, image_size, image_size), bands g, r, i)
    and ``root/metadata.csv`` (columns ``split``, ``folder``, ``file``, then the
    metadata columns of :func:`make_lenses`). The defaults reproduce the sizes of the
    real set (train 1,730 / 28,675, test 195 / 19,455; about 2.4 GB).

    Everything is written into a temporary folder next to ``root`` and moved into place
    only when complete, so an interrupted run leaves no partial data set.

    Parameters
    ----------
    root : str or path-like
        Output folder. It may not exist yet or be empty; otherwise ``overwrite=True``
        is required, and then only the four class folders and ``metadata.csv`` are
        replaced (other files in ``root`` are left alone).
    n_train_lenses, n_train_nonlenses, n_test_lenses, n_test_nonlenses : int
        Numbers of objects per folder.
    difficulty, random_state, **options
        As in :func:`make_lenses`. Object ``k`` (file ``k+1``) of a folder comes from
        ``SeedSequence(seed, spawn_key=(split, label, k))`` with split 0 = train,
        1 = test; the train split equals ``make_lenses(..., shuffle=False)`` with the
        same seed. None draws a fresh seed.
    normalize : {'minmax', 'none'} or None, default='minmax'
        'minmax' scales each band of each image to [0, 1] like the real files.
    overwrite : bool, default=False
        Allow replacing an existing data set in a non-empty ``root``.
    n_jobs : int, default=1
        Parallel workers (joblib; -1 = all cores); the files do not depend on it.
    progress : bool, default=False
        Show a tqdm progress bar (images written).
    chunk_size : int, default=64
        Objects rendered per vectorised batch (one parallel task).

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` is a non-empty folder and ``overwrite`` is False, or is a file.
    ValueError, TypeError
        For bad counts or options, as in :func:`make_lenses`.
    """
    counts = {
        "train_lenses": _check_count("n_train_lenses", n_train_lenses),
        "train_nonlenses": _check_count("n_train_nonlenses", n_train_nonlenses),
        "test_lenses": _check_count("n_test_lenses", n_test_lenses),
        "test_nonlenses": _check_count("n_test_nonlenses", n_test_nonlenses),
    }
    if sum(counts.values()) == 0:
        raise ValueError("at least one of the four counts must be positive")
    settings = _resolve_settings(difficulty, options)
    normalize = _check_normalize(normalize)
    _check_common(n_jobs, chunk_size)
    entropy = _entropy(random_state)

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: folder is not empty; pass overwrite=True to replace the data set in it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tasks = []
        for split, label, name in _FOLDERS:
            (staging / name).mkdir()
            for a, b in _chunks(counts[name], chunk_size):
                args = (settings, entropy, split, label, a, b, normalize, str(staging / name))
                tasks.append((_write_chunk, args, b - a))
        rows = []
        task_names = [name for split, label, name in _FOLDERS for _ in _chunks(counts[name], chunk_size)]
        for name, metas in zip(task_names, _run_tasks(tasks, n_jobs, progress, sum(counts.values()), "writing")):
            split = name.split("_")[0]
            for m in metas:
                rows.append([split, name, f"{m['class_index'] + 1}.npy"] + [m[c] for c in _COLUMN_NAMES])
        with open(staging / "metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["split", "folder", "file"] + _COLUMN_NAMES)
            for row in rows:
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else
                                 (f"{v:.6g}" if isinstance(v, float) else v) for v in row])

        root.mkdir(exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        for name in [name for _, _, name in _FOLDERS] + ["metadata.csv"]:
            if (root / name).exists() or (root / name).is_symlink():
                os.replace(root / name, trash / name)
            os.replace(staging / name, root / name)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
