"""Cutouts of another size than the model's: an error by default, or an explicit centre crop or resize.

A model scores cutouts of the size it was trained on. ``fit_size="error"``
(the default everywhere) refuses any other size with a message that names the
option; ``"crop"`` takes the central region (the cutout must be at least as
large); ``"resize"`` resamples the whole cutout with bilinear interpolation
and antialiasing (``torch.nn.functional.interpolate``), which changes the
pixel scale. The band count is never changed. What was done is recorded in the
output (:func:`describe`).
"""

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FIT_SIZES", "check_fit_size", "describe", "fit_to_size", "size_problem"]

#: The accepted values of ``fit_size``.
FIT_SIZES = ("error", "crop", "resize")


def check_fit_size(fit_size):
    if fit_size not in FIT_SIZES:
        raise ValueError(f"fit_size must be one of {', '.join(FIT_SIZES)}; got {fit_size!r}")
    return fit_size


def size_problem(shape, model_shape, fit_size):
    """Why a cutout of ``shape`` (bands, H, W) cannot be scored by a model of ``model_shape``, or None."""
    shape, model_shape = tuple(shape), tuple(model_shape)
    if shape == model_shape:
        return None
    if shape[0] != model_shape[0]:
        return (f"has {shape[0]} band(s); the model was trained on {model_shape[0]} "
                f"(shape {model_shape}); the band count cannot be changed")
    if fit_size == "error":
        return (f"is {shape[1]} x {shape[2]} pixels (shape {shape}); the model takes {model_shape[1]} x {model_shape[2]}. "
                "Pass --fit-size crop (central region) or --fit-size resize (resample) to score it anyway")
    if fit_size == "crop" and (shape[1] < model_shape[1] or shape[2] < model_shape[2]):
        return (f"is {shape[1]} x {shape[2]} pixels, smaller than the model's {model_shape[1]} x {model_shape[2]}: "
                "it cannot be cropped (use --fit-size resize)")
    return None


def describe(shape, model_shape, fit_size):
    """What was done to cutouts of ``shape``: ``""`` when nothing, else e.g. ``"crop 101x101->64x64"``."""
    if tuple(shape[1:]) == tuple(model_shape[1:]):
        return ""
    return f"{fit_size} {shape[1]}x{shape[2]}->{model_shape[1]}x{model_shape[2]}"


def fit_to_size(X, model_shape, fit_size):
    """``X`` (N, bands, H, W) brought to the model's size (``X`` itself when it has it; ``X`` is never changed).

    Raises ValueError with :func:`size_problem`'s message when the size cannot be matched.
    """
    problem = size_problem(X.shape[1:], model_shape, fit_size)
    if problem:
        raise ValueError(f"cutouts of shape {tuple(X.shape[1:])}: {problem}")
    height, width = model_shape[1:]
    if X.shape[2:] == (height, width):
        return X
    if fit_size == "crop":
        top, left = (X.shape[2] - height) // 2, (X.shape[3] - width) // 2
        return np.ascontiguousarray(X[:, :, top:top + height, left:left + width])
    with torch.inference_mode():
        resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), size=(height, width),
                                mode="bilinear", align_corners=False, antialias=True)
    return resized.numpy()
