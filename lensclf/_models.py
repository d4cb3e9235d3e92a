"""ResNet builders: architecture, weights, input stem and a one-logit head.

The network that :class:`~lensclf.LensClassifier` trains is a :class:`LensNet`:
per-channel standardisation (statistics fitted on the training data and stored
as buffers, so a saved model carries its own preprocessing), an optional resize
of the input, then a torchvision ResNet whose final layer gives one logit.
"""

import os

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from ._conv import use_tap_backward

__all__ = ["ARCHITECTURES", "STEMS", "LensNet", "build_backbone"]

#: torchvision builders and their ImageNet weights, by architecture name.
ARCHITECTURES = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}

#: How many of the ResNet's five stages (stem, layer1 ... layer4) run in the
#: channels-last memory format on CPU. Measured on a 2-core AVX-512 CPU with
#: ``benchmarks/bench_fast_paths.py``: channels-last is faster for the large
#: early feature maps (vectorised max-pool, batch norm, ReLU) and slower for the
#: 4x4 and 2x2 maps of layer3 and layer4, in training and in inference.
#: (layer4's convolutions on 2x2 and 3x3 maps are the tap-wise ones of
#: :mod:`lensclf._conv`, whose output is channels-last whatever this says.)
CPU_CHANNELS_LAST_STAGES = 3

#: Whether the stem max-pools before its ReLU (the same function as torchvision's
#: ReLU-then-pool, see :meth:`LensNet.stages`). Measured with
#: ``benchmarks/bench_fast_paths.py`` (the ``relu_first`` variant).
POOL_BEFORE_RELU = True

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
    weights : None, "imagenet" or path
        ``None``: random initialisation (works offline). ``"imagenet"``:
        torchvision's IMAGENET1K_V1 weights (needs the network once, or the file
        in torchvision's cache). A path: a local state dict, either a
        torchvision ResNet checkpoint or a lensclf-trained network; its final
        layer is not used.
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
        A ResNet whose ``fc`` layer outputs one logit. Its convolutions are
        :class:`~lensclf._conv.TapConv2d`: ``nn.Conv2d``, computed faster on
        the small feature maps of the last stage (on CPU).
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
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        state, source = _imagenet_state_dict(arch), f"ImageNet weights for {arch}"
    elif isinstance(weights, (str, os.PathLike)):
        state, source = _read_state_dict(weights), os.fspath(weights)
    else:
        raise ValueError(
            f"weights={weights!r} is not understood; pass None, 'imagenet' or a file path."
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
    return use_tap_backward(model)


class LensNet(nn.Module):
    """Standardise, optionally resize, then a ResNet giving one logit per image.

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
        ``(x - mean) / std`` inside the network.
    """

    def __init__(self, arch="resnet18", weights=None, in_channels=3, stem="standard",
                 input_size=None, channel_mean=None, channel_std=None):
        super().__init__()
        self.input_size = input_size
        mean = torch.zeros(in_channels) if channel_mean is None else torch.as_tensor(channel_mean)
        std = torch.ones(in_channels) if channel_std is None else torch.as_tensor(channel_std)
        self.register_buffer("channel_mean", mean.float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("channel_std", std.float().reshape(1, -1, 1, 1).clone())
        self.backbone = build_backbone(arch, weights, in_channels=in_channels, stem=stem)

    def forward(self, x):
        x = (x - self.channel_mean) / self.channel_std
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size),
                              mode="bilinear", align_corners=False)
        return self.run_backbone(x).squeeze(-1)

    def stages(self):
        """The backbone's five stages in order: stem (conv, norm, pool, ReLU), layer1 ... layer4.

        torchvision's stem applies ReLU, then max-pooling. The two commute exactly
        (ReLU is non-decreasing, so the maximum of the rectified values is the
        rectified maximum, and the gradient reaches the same positions), and
        pooling first leaves ReLU and its backward pass a quarter of the pixels
        (:data:`POOL_BEFORE_RELU`).
        """
        b = self.backbone
        stem = (b.conv1, b.bn1, b.maxpool, b.relu) if POOL_BEFORE_RELU else (b.conv1, b.bn1, b.relu, b.maxpool)
        return [stem, (b.layer1,), (b.layer2,), (b.layer3,), (b.layer4,)]

    def run_backbone(self, x, channels_last_stages=None):
        """The ResNet forward pass, with the first stages in channels-last memory format on CPU.

        Same arithmetic as ``self.backbone(x)``; only the memory layout of the
        intermediate feature maps differs (see :data:`CPU_CHANNELS_LAST_STAGES`).
        """
        if channels_last_stages is None:
            channels_last_stages = CPU_CHANNELS_LAST_STAGES if x.device.type == "cpu" else 0
        for index, stage in enumerate(self.stages()):
            layout = torch.channels_last if index < channels_last_stages else torch.contiguous_format
            x = x.contiguous(memory_format=layout)
            for layer in stage:
                x = layer(x)
        b = self.backbone
        return b.fc(torch.flatten(b.avgpool(x), 1))
