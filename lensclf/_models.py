"""ResNet builders: architecture, weights, input stem and a one-logit head.

The network that :class:`~lensclf.LensClassifier` trains is a :class:`LensNet`:
input scaling (per-band statistics of the training data stored as buffers, so a
saved model carries its own preprocessing, or each image standardised on its
own), an optional resize, then a plain torchvision ResNet whose final layer
gives one logit. In evaluation mode it also applies the prediction settings
(test-time augmentation, a shift of the logits for another lens prior), so
``clf.net_`` and the estimator predict the same.
"""

import os

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from ._cpu import resnet_forward
from ._transforms import dihedral, dihedral_views

__all__ = ["ARCHITECTURES", "AUTO_INPUT_SIZE", "LENS_WEIGHTS_FILE", "SCALINGS", "resolve_input_size", "resolve_scaling",
           "resolve_weights", "STEMS", "LensNet",
           "build_backbone", "robust_stretch_per_image", "standardize_per_image"]

#: Input scalings: ``"dataset"`` standardises each band with statistics of the
#: training set; ``"image"`` standardises each band of each image on its own;
#: ``"robust"`` puts it in sky-noise units (median, MAD) and arcsinh-stretches it.
SCALINGS = ("dataset", "image", "robust")


def resolve_weights(weights, arch, stem):
    """``"auto"``: the lens-pretrained weights where they exist (ResNet18, standard stem), else ``None``."""
    if isinstance(weights, str) and weights == "auto":
        return "lens" if (arch, stem) == ("resnet18", "standard") else None
    return weights


#: ``input_size="auto"``: cutouts larger than this are resized to it (the size the lens backbone
#: was pretrained at); smaller ones keep their size.
AUTO_INPUT_SIZE = 64


def resolve_input_size(input_size, image_size):
    """``"auto"``: :data:`AUTO_INPUT_SIZE` for cutouts larger than it, else ``None`` (the native size).

    ``image_size`` is the cutout's larger side; a non-square cutout with a side
    above 64 px is resized to 64 x 64. It applies to any weights and stem (the
    CPU saving does not depend on them).

    On ``space_1band_101`` (101 x 101 px, 1,000 training images) resizing to 64
    gave test AUC 0.867 in 132 CPU s against 0.885 in 446 CPU s at the native
    size, and at equal CPU seconds it is far ahead (``docs/benchmarks.md``).
    """
    if isinstance(input_size, str) and input_size == "auto":
        return AUTO_INPUT_SIZE if int(image_size) > AUTO_INPUT_SIZE else None
    return input_size


def resolve_scaling(scaling, weights):
    """``"auto"``: ``"robust"`` for the lens-pretrained weights, else ``"dataset"``.

    The lens weights were pretrained on ``"image"`` scaling, then (a third
    phase) on ``"robust"``; fine-tuned on ``"robust"`` they do best on the
    worst held-out family (``docs/benchmarks.md``).
    """
    if scaling != "auto":
        return scaling
    return "robust" if isinstance(weights, str) and weights.lower() == "lens" else "dataset"


def standardize_per_image(x):
    """Each band of each image to mean 0 and standard deviation 1.

    Invariant to any per-band affine rescaling of the pixels, so min-max scaled
    cutouts (like DeepLense Test II) and raw fluxes give the same network input.
    A constant band becomes zeros. "Constant" is relative to the band's own
    values (a spread below 1e-6 of its largest absolute value: float32
    rounding), so raw fluxes of any unit, e.g. 1e-11 erg/s/cm^2/Hz, are scaled.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    tiny = 1e-6 * x.abs().amax(dim=(-2, -1), keepdim=True)
    return (x - mean) / torch.where(std > tiny, std, torch.ones_like(std))


def robust_stretch_per_image(x):
    """Each band of each image in units of its sky noise, arcsinh-stretched, then standardised.

    The sky level and noise are the band's median and 1.4826 x its median
    absolute deviation, which a bright star or neighbour does not move (unlike
    the mean and standard deviation); the arcsinh keeps faint arcs near linear
    while compressing stars. Like :func:`standardize_per_image`, invariant to
    any per-band affine rescaling of the pixels.
    """
    flat = x.flatten(-2)
    median = flat.median(dim=-1, keepdim=True).values
    mad = (flat - median).abs().median(dim=-1, keepdim=True).values
    tiny = 1e-6 * flat.abs().amax(dim=-1, keepdim=True)
    sigma = torch.where(mad > tiny, 1.4826 * mad, torch.ones_like(mad))
    return standardize_per_image(torch.asinh((flat - median) / sigma).view_as(x))


#: torchvision builders and their ImageNet weights, by architecture name.
ARCHITECTURES = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}

#: Input stems: ``"standard"`` is torchvision's (7x7 stride-2 conv, max-pool);
#: ``"small"`` is the variant for small images (3x3 stride-1 conv, no max-pool).
STEMS = ("standard", "small")


def _imagenet_state_dict(arch):
    """Torchvision's ImageNet weights for ``arch``, or a clear error offline."""
    weights = ARCHITECTURES[arch][1]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, HTTP errors, hash errors
        file_name = os.path.basename(weights.url)
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise OSError(
            f"Could not load the ImageNet weights for {arch} ({exc.__class__.__name__}: {exc}). "
            f"They are downloaded once from {weights.url}; on a machine without network, "
            f"copy that file to {os.path.join(cache, file_name)} (torchvision's cache, "
            f"set by $TORCH_HOME), or pass weights='/path/to/{file_name}', "
            "or train from scratch with weights=None."
        ) from exc


#: The lens-pretrained ResNet18 shipped inside the package (see docs/pretrained.md).
LENS_WEIGHTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "resnet18_lens.safetensors")


def _lens_state_dict(arch, stem):
    """The shipped lens-pretrained backbone (float16 on disk, float32 here)."""
    if arch != "resnet18" or stem != "standard":
        raise ValueError(f"weights='lens' is a ResNet18 with the standard stem; got arch={arch!r}, stem={stem!r}. "
                         "Use arch='resnet18', stem='standard', or weights=None / 'imagenet' / a file.")
    if not os.path.isfile(LENS_WEIGHTS_FILE):
        raise FileNotFoundError(
            f"The lens-pretrained weights are missing from this installation ({LENS_WEIGHTS_FILE}); "
            "reinstall lensclf, or pass weights=None.")
    return {k: v.float() for k, v in _read_state_dict(LENS_WEIGHTS_FILE).items()}


def _read_state_dict(path):
    """A state dict from a local file, read without executing code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights={path!r}: no such file. Pass None (random initialisation), "
            "'imagenet', or the path of a ResNet state dict (.pth/.pt or .safetensors)."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"{path}: cannot be read as a torch state dict with weights_only=True "
                f"({exc.__class__.__name__}: {exc})."
            ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: does not hold a state dict (a mapping of names to tensors).")
    # Accept checkpoints of a whole LensNet ("backbone.*") or DataParallel ("module.*").
    for prefix in ("backbone.", "module."):
        if state and all(k.startswith(prefix) for k in state if not k.startswith(("standardize.", "channel_"))):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _load_backbone_weights(model, state, source):
    """Load ``state`` into ``model``, skipping the head and input layers that differ."""
    own = model.state_dict()
    usable, skipped = {}, []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            usable[key] = value
        else:
            skipped.append(key)
    missing = [k for k in own if k not in usable]
    # Only the one-logit head and (for other channel counts / stems) the first conv may differ.
    allowed = ("fc.", "conv1.")
    unexpected_missing = [k for k in missing if not k.startswith(allowed)]
    if unexpected_missing:
        raise ValueError(
            f"{source}: does not match the network's architecture; missing or mis-shaped "
            f"parameters include {unexpected_missing[:5]}. Check the `arch` parameter."
        )
    model.load_state_dict(usable, strict=False)
    return skipped


def build_backbone(arch="resnet18", weights=None, in_channels=3, stem="standard"):
    """Build a torchvision ResNet with a one-logit head.

    Parameters
    ----------
    arch : {"resnet18", "resnet34", "resnet50"}
        The torchvision architecture.
    weights : None, "lens", "imagenet" or path
        ``None``: random initialisation (works offline). ``"lens"``: the
        ResNet18 pretrained on simulated lenses that ships with lensclf
        (offline; its one-logit head is used too). ``"imagenet"``:
        torchvision's IMAGENET1K_V1 weights (needs the network once, or the file
        in torchvision's cache). A path: a local state dict, either a
        torchvision ResNet checkpoint or a lensclf-trained network (or a
        backbone exported by ``benchmarks/pretrain.py``); its final layer is
        kept when it is a one-logit head, and replaced otherwise.
    in_channels : int
        Number of image bands. With pretrained weights and a band count other
        than 3, the first convolution's weights are averaged over the RGB
        channels and repeated.
    stem : {"standard", "small"}
        ``"small"`` replaces the first 7x7 stride-2 convolution by a 3x3
        stride-1 one and drops the max-pool (for small inputs).

    Returns
    -------
    torch.nn.Module
        A plain torchvision ResNet whose ``fc`` layer outputs one logit.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r} is not supported; choose one of {sorted(ARCHITECTURES)}.")
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r} is not supported; choose one of {list(STEMS)}.")
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
    builder = ARCHITECTURES[arch][0]
    model = builder(weights=None)

    if weights is None:
        state, source = None, None
    elif isinstance(weights, str) and weights.lower() == "lens":
        state, source = _lens_state_dict(arch, stem), "the lens-pretrained weights"
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        state, source = _imagenet_state_dict(arch), f"ImageNet weights for {arch}"
    elif isinstance(weights, (str, os.PathLike)):
        state, source = _read_state_dict(weights), os.fspath(weights)
    else:
        raise ValueError(
            f"weights={weights!r} is not understood; pass None, 'lens', 'imagenet' or a file path."
        )

    if state is not None:
        _load_backbone_weights(model, state, source)
        conv1_weight = state.get("conv1.weight")
    else:
        conv1_weight = None

    if stem == "small":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if conv1_weight is not None and conv1_weight.shape[1] == 3:
            with torch.no_grad():
                mean = conv1_weight.mean(dim=1, keepdim=True)
                model.conv1.weight.copy_(mean.repeat(1, in_channels, 1, 1) * 3.0 / in_channels)
    model.fc = nn.Linear(model.fc.in_features, 1)
    head = None if state is None else state.get("fc.weight")
    if head is not None and tuple(head.shape) == tuple(model.fc.weight.shape) and "fc.bias" in state:
        with torch.no_grad():  # a one-logit head (lens-pretrained or a lensclf model): kept for fine-tuning
            model.fc.weight.copy_(head)
            model.fc.bias.copy_(state["fc.bias"])
    return model


class LensNet(nn.Module):
    """Scale, optionally resize, then a ResNet giving one logit per image.

    Parameters
    ----------
    arch, weights, stem : see :func:`build_backbone`.
    in_channels : int
        Number of image bands.
    input_size : int or None
        Side length the images are resized to (bilinear) before the ResNet;
        ``None`` keeps the native size.
    channel_mean, channel_std : sequence of float or None
        Per-channel statistics of the training data, applied as
        ``(x - mean) / std`` inside the network (``scaling="dataset"``).
    scaling : {"dataset", "image", "robust"}
        ``"image"``: :func:`standardize_per_image` instead of the statistics;
        ``"robust"``: :func:`robust_stretch_per_image`.
    fast_paths : bool
        Compute the ResNet with :func:`lensclf._cpu.resnet_forward` when the
        input is on the CPU (same function, faster; the modules are unchanged).

    Attributes
    ----------
    tta : bool
        In evaluation mode, average the logits over the 8 flips and rotations.
    logit_shift : float
        Added to the logits in evaluation mode (a change of the lens prior).
    """

    def __init__(self, arch="resnet18", weights=None, in_channels=3, stem="standard",
                 input_size=None, channel_mean=None, channel_std=None, scaling="dataset", fast_paths=False):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} is not supported; choose one of {list(SCALINGS)}.")
        self.input_size = input_size
        self.scaling = scaling
        self.fast_paths = bool(fast_paths)
        self.tta = False
        self.logit_shift = 0.0
        mean = torch.zeros(in_channels) if channel_mean is None else torch.as_tensor(channel_mean)
        std = torch.ones(in_channels) if channel_std is None else torch.as_tensor(channel_std)
        self.register_buffer("channel_mean", mean.float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("channel_std", std.float().reshape(1, -1, 1, 1).clone())
        self.backbone = build_backbone(arch, weights, in_channels=in_channels, stem=stem)

    def scale(self, x):
        """The network's input scaling (and resize) of a batch."""
        if self.scaling == "image":
            x = standardize_per_image(x)
        elif self.scaling == "robust":
            x = robust_stretch_per_image(x)
        else:
            x = (x - self.channel_mean) / self.channel_std
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size),
                              mode="bilinear", align_corners=False)
        return x

    def logits(self, x):
        """The backbone's logits for scaled images."""
        if self.fast_paths and x.device.type == "cpu":
            return resnet_forward(self.backbone, x).squeeze(-1)
        return self.backbone(x).squeeze(-1)

    def forward(self, x):
        x = self.scale(x)
        if self.training:
            return self.logits(x)
        views = dihedral_views() if self.tta else [(0, False)]
        out = sum(self.logits(dihedral(x, k, flip)) for k, flip in views) / len(views)
        return out + self.logit_shift if self.logit_shift else out
