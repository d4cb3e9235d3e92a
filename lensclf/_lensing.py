"""Physics of the built-in lens simulator: light profiles, SIE + shear lensing, PSF and noise.

Everything here is vectorised numpy: coordinates are arrays in arcsec and every profile
parameter may be an array that broadcasts against them (e.g. shape ``(B, K, 1, 1)`` for
``B`` objects with ``K`` components each, against a grid of shape ``(H, W)``), so a whole
batch of images is rendered with a handful of array operations.

Conventions
-----------
* Angles (position angles) are in radians, measured counter-clockwise from the +x axis.
* ``q`` is the minor/major axis ratio, ``0 < q <= 1``.
* Light profiles return surface brightness per arcsec^2, normalised so that the profile
  integrated over the whole plane is 1 (multiply by a total flux, and by the pixel area
  to get flux per pixel).
* The singular isothermal ellipsoid (SIE) uses the "intermediate-axis" normalisation
  ``kappa = theta_E / (2 sqrt(q x'^2 + y'^2 / q))`` (x' along the major axis), so the
  Einstein radius ``theta_E`` is nearly independent of ``q``; deflections follow
  Kormann, Schneider & Bartelmann (1994) in the form of Keeton & Kochanek (1998).
"""

from __future__ import annotations

import numpy as np
from scipy import signal, special

__all__ = [
    "pixel_grid",
    "block_mean",
    "sersic_b",
    "sersic_profile",
    "gaussian_profile",
    "ring_profile",
    "spiral_arm_profile",
    "tidal_tail_profile",
    "sie_convergence",
    "sie_deflection",
    "shear_deflection",
    "ray_trace",
    "psf_kernels",
    "convolve_with_psf",
    "noise_sigma",
]


def pixel_grid(n_pixels, pixel_scale, supersample=1, dtype=np.float32):
    """Coordinates (arcsec) of the (sub)pixel centres of an ``n_pixels`` square image.

    The image centre (0, 0) lies at the centre of the image (between the four central
    pixels for an even size). Returns ``(x, y)`` of shape ``(n*s, n*s)``; ``x`` grows with
    the column index and ``y`` with the row index (``origin='lower'`` display).
    """
    s = int(supersample)
    k = np.arange(n_pixels * s, dtype=np.float64)
    centres = ((k + 0.5) / s - 0.5 - (n_pixels - 1) / 2.0) * pixel_scale
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return x.astype(dtype), y.astype(dtype)


def block_mean(images, factor):
    """Average ``factor x factor`` blocks over the last two axes (supersampled -> native)."""
    if factor == 1:
        return images
    *lead, h, w = images.shape
    return images.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-1, -3))


def _rotate(x, y, x0, y0, pa):
    """Shift to (x0, y0) and rotate so the new x axis is along position angle ``pa``."""
    dx = x - x0
    dy = y - y0
    c = np.cos(pa)
    s = np.sin(pa)
    return dx * c + dy * s, -dx * s + dy * c


def sersic_b(n):
    """The Sersic ``b_n`` for which the effective radius encloses half the light."""
    return special.gammaincinv(2.0 * np.asarray(n, dtype=np.float64), 0.5)


def sersic_profile(x, y, x0, y0, r_eff, n, q, pa):
    """Unit-flux elliptical Sersic surface brightness.

    ``r_eff`` is the effective (half-light) radius along the major axis. The elliptical
    radius is ``sqrt(q x'^2 + y'^2 / q)`` (circularised), so the total flux is exactly 1.
    """
    n = np.asarray(n)
    b = sersic_b(n)
    norm = 1.0 / (2.0 * np.pi * n * r_eff**2 * q * np.exp(b) * b ** (-2.0 * n) * special.gamma(2.0 * n))
    xr, yr = _rotate(x, y, x0, y0, pa)
    # elliptical radius along the major axis: r^2 = x'^2 + (y'/q)^2, in units of r_eff
    r2 = (xr * xr + (yr * yr) / (q * q)) / (r_eff * r_eff)
    expo = (0.5 / n).astype(r2.dtype) if isinstance(n, np.ndarray) else 0.5 / n
    return (norm * np.exp(b)).astype(r2.dtype) * np.exp(-b.astype(r2.dtype) * np.power(r2, expo))


def gaussian_profile(x, y, x0, y0, sigma, q=1.0, pa=0.0):
    """Unit-flux elliptical Gaussian (``sigma`` along the major axis)."""
    if np.isscalar(q) and np.isscalar(pa) and q == 1.0 and pa == 0.0:  # circular: skip the rotation
        dx = x - x0
        dy = y - y0
        return (1.0 / (2.0 * np.pi * sigma * sigma)) * np.exp((-0.5 / (sigma * sigma)) * (dx * dx + dy * dy))
    xr, yr = _rotate(x, y, x0, y0, pa)
    r2 = (xr * xr + (yr * yr) / (q * q)) / (sigma * sigma)
    return (1.0 / (2.0 * np.pi * sigma * sigma * q)) * np.exp(-0.5 * r2)


def ring_profile(x, y, x0, y0, radius, width, q, pa, knot_amplitude, knot_number, knot_phase):
    """Elliptical ring (a collisional / resonance ring seen in projection), not normalised.

    A Gaussian cross-section of width ``width`` around the ellipse of semi-major axis
    ``radius``, modulated in azimuth by ``1 + a cos(m (phi - phi0))`` (star-forming knots).
    """
    xr, yr = _rotate(x, y, x0, y0, pa)
    yq = yr / q
    r = np.sqrt(xr * xr + yq * yq)
    phi = np.arctan2(yq, xr)
    modulation = 1.0 + knot_amplitude * np.cos(knot_number * (phi - knot_phase))
    return np.exp(-0.5 * ((r - radius) / width) ** 2) * modulation


def spiral_arm_profile(x, y, x0, y0, scale_length, pitch, q, pa, arm_phase, sharpness, n_arms=2):
    """Logarithmic spiral arms in an exponential disc seen at inclination ``q``, not normalised.

    ``I = exp(-r/h) * [ (1 + cos(m (phi - phi0) - m ln(r/h) / tan(pitch))) / 2 ] ** sharpness``,
    with the innermost part (r < 0.5 h) suppressed so the arms start outside the bulge.
    """
    xr, yr = _rotate(x, y, x0, y0, pa)
    yq = yr / q
    r = np.sqrt(xr * xr + yq * yq) + 1e-6
    phi = np.arctan2(yq, xr)
    wave = 0.5 * (1.0 + np.cos(n_arms * (phi - arm_phase) - n_arms * np.log(r / scale_length) / np.tan(pitch)))
    inner = 1.0 - np.exp(-((r / (0.6 * scale_length)) ** 2))
    return np.exp(-r / scale_length) * wave**sharpness * inner


def tidal_tail_profile(x, y, xc, yc, radius, width, phi0, extent):
    """A tidal tail: a curved, tapering band along a circle segment, not normalised.

    The band follows the circle of radius ``radius`` centred on ``(xc, yc)``, starting
    at azimuth ``phi0`` and fading over ``extent`` radians (the sign sets the direction).
    """
    dx = x - xc
    dy = y - yc
    r = np.sqrt(dx * dx + dy * dy)
    dphi = np.angle(np.exp(1j * (np.arctan2(dy, dx) - phi0)))  # wrapped to (-pi, pi]
    along = dphi / extent  # 0 at the root, 1 at the tip
    taper = np.where(along >= 0.0, np.exp(-1.5 * along), np.exp(-0.5 * (along / 0.1) ** 2))
    return np.exp(-0.5 * ((r - radius) / (width * (1.0 + np.clip(along, 0, None)))) ** 2) * taper


def sie_convergence(x, y, x0, y0, theta_e, q, pa):
    """Analytic convergence of the singular isothermal ellipsoid."""
    xr, yr = _rotate(x, y, x0, y0, pa)
    return theta_e / (2.0 * np.sqrt(q * xr * xr + yr * yr / q))


def sie_deflection(x, y, x0, y0, theta_e, q, pa):
    """Analytic deflection ``(alpha_x, alpha_y)`` of the singular isothermal ellipsoid.

    Keeton & Kochanek (1998) with core ``s = 0``: for ``kappa = b / (2 psi)``,
    ``psi = sqrt(q^2 x^2 + y^2)``, ``alpha_x = b q / sqrt(1-q^2) atan(sqrt(1-q^2) x / psi)``
    and ``alpha_y = b q / sqrt(1-q^2) atanh(sqrt(1-q^2) y / psi)``, with
    ``b = theta_E / sqrt(q)`` for the intermediate-axis normalisation used here. The
    circular limit ``q -> 1`` (singular isothermal sphere) is handled smoothly.
    """
    xr, yr = _rotate(x, y, x0, y0, pa)
    dtype = np.result_type(xr, np.float32)
    q = np.minimum(np.asarray(q, dtype=dtype), dtype.type(1.0 - 1e-6))
    f = np.sqrt(1.0 - q * q)
    psi = np.sqrt((q * q) * xr * xr + yr * yr) + np.finfo(dtype).tiny
    pref = (theta_e / np.sqrt(q)) * q / f
    ax_r = (pref * np.arctan(f * xr / psi)).astype(dtype)
    ay_r = (pref * np.arctanh(np.clip(f * yr / psi, -1 + 1e-7, 1 - 1e-7))).astype(dtype)
    c = np.cos(pa)
    s = np.sin(pa)
    return (ax_r * c - ay_r * s).astype(dtype), (ax_r * s + ay_r * c).astype(dtype)


def shear_deflection(x, y, x0, y0, gamma1, gamma2):
    """Deflection of an external shear ``(gamma1, gamma2)`` about ``(x0, y0)``."""
    dx = x - x0
    dy = y - y0
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def ray_trace(x, y, x0, y0, theta_e, q, pa, gamma1, gamma2):
    """Map image-plane positions to the source plane: ``beta = theta - alpha(theta)``.

    The returned source-plane coordinates are relative to the lens centre ``(x0, y0)``.
    """
    ax, ay = sie_deflection(x, y, x0, y0, theta_e, q, pa)
    sx, sy = shear_deflection(x, y, x0, y0, gamma1, gamma2)
    return (x - x0) - ax - sx, (y - y0) - ay - sy


def psf_kernels(fwhm_pixels, beta, size, profile="moffat"):
    """Normalised PSF kernels (sum = 1) of shape ``fwhm_pixels.shape + (size, size)``.

    ``profile`` is ``'moffat'`` (``(1 + r^2/alpha^2)^-beta`` with
    ``FWHM = 2 alpha sqrt(2^(1/beta) - 1)``) or ``'gaussian'`` (``beta`` ignored).
    Sampled on a 3x supersampled grid and block-averaged, so narrow PSFs keep their flux.
    """
    fwhm = np.asarray(fwhm_pixels, dtype=np.float64)[..., None, None]
    x, y = pixel_grid(size, 1.0, supersample=3, dtype=np.float64)
    r2 = x * x + y * y
    if profile == "moffat":
        beta = np.asarray(beta, dtype=np.float64)[..., None, None]
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        k = (1.0 + r2 / (alpha * alpha)) ** (-beta)
    elif profile == "gaussian":
        sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        k = np.exp(-0.5 * r2 / (sigma * sigma))
    else:
        raise ValueError(f"psf profile must be 'moffat' or 'gaussian', got {profile!r}")
    k = block_mean(k, 3)
    return k / k.sum(axis=(-2, -1), keepdims=True)


def convolve_with_psf(images, kernels, mode="valid"):
    """Convolve a batch of images with per-image, per-band PSF kernels (FFT).

    ``images`` has shape ``(..., H, W)`` and ``kernels`` ``(..., k, k)`` with leading
    axes that broadcast. ``mode='valid'`` returns ``H - k + 1`` pixels a side: render the
    scene on a canvas padded by ``k // 2`` pixels so flux from just outside the field
    is scattered in, exactly as on the sky. With ``mode='full'`` the total flux of each
    image is preserved exactly (kernels sum to 1).
    """
    return signal.fftconvolve(images, kernels, mode=mode, axes=(-2, -1))


def noise_sigma(model_counts, sky_sigma, gain):
    """Per-pixel noise: sky (background-limited) plus Poisson noise of the objects.

    ``variance = sky_sigma^2 + max(model, 0) / gain`` with ``model`` in counts and
    ``gain`` in electrons per count.
    """
    return np.sqrt(sky_sigma * sky_sigma + np.maximum(model_counts, 0.0) / gain)
