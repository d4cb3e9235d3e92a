"""The ResNet forward pass, arranged for speed on CPU; the same function as torchvision's.

- The first stages (stem, layer1, layer2) run in channels-last memory format:
  vectorised max-pool, batch norm and ReLU on the large early maps.
- The stem max-pools before its ReLU: the two commute exactly (ReLU is
  non-decreasing, so the largest rectified value is the rectified largest one,
  and the gradient reaches the same positions), and ReLU then runs on a quarter
  of the pixels.
- Convolutions on maps of at most 3x3 (layer4 at 64 px) are computed tap-wise
  (:mod:`lensclf._cpu.conv`).

The modules are torchvision's own and are not changed: only the order of the
calls and the memory layout differ. Measurements: docs/benchmarks.md.
"""

import torch
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from .conv import conv2d

__all__ = ["CHANNELS_LAST_STAGES", "resnet_forward"]

#: How many of the five stages (stem, layer1 ... layer4) run channels-last: faster for
#: the large early maps, slower for layer3's 4x4 maps (benchmarks/bench_fast_paths.py).
CHANNELS_LAST_STAGES = 3


def _block(block, x):
    identity = x
    if isinstance(block, Bottleneck):
        out = F.relu(block.bn1(conv2d(block.conv1, x)))
        out = F.relu(block.bn2(conv2d(block.conv2, out)))
        out = block.bn3(conv2d(block.conv3, out))
    elif isinstance(block, BasicBlock):
        out = F.relu(block.bn1(conv2d(block.conv1, x)))
        out = block.bn2(conv2d(block.conv2, out))
    else:  # not a torchvision block: its own forward
        return block(x)
    if block.downsample is not None:
        identity = block.downsample[1](conv2d(block.downsample[0], x))
    return F.relu(out + identity)


def resnet_forward(backbone, x, channels_last_stages=CHANNELS_LAST_STAGES, pool_first=True):
    """``backbone(x)`` for a torchvision ResNet, computed the CPU-friendly way (module docstring)."""
    def layout(index):
        return torch.channels_last if index < channels_last_stages else torch.contiguous_format

    b = backbone
    x = b.conv1(x.contiguous(memory_format=layout(0)))
    x = b.bn1(x)
    x = b.relu(b.maxpool(x)) if pool_first else b.maxpool(b.relu(x))
    for index, stage in enumerate((b.layer1, b.layer2, b.layer3, b.layer4), start=1):
        x = x.contiguous(memory_format=layout(index))
        for block in stage:
            x = _block(block, x)
    return b.fc(torch.flatten(b.avgpool(x), 1))
