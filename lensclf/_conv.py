"""A 2-D convolution whose backward pass runs one matrix product per kernel tap on small maps.

On the native 64x64 input, ResNet's layer4 works on 2x2 feature maps (3x3 at
``input_size=96``). There most of a padded 3x3 kernel's taps fall on zeros,
and oneDNN's backward kernels for these shapes run far below the machine's
matrix-product rate. Measured on the 2-core reference CPU, batch 64, float32
(``python benchmarks/bench_fast_paths.py --convolutions``), backward pass,
input and weight gradients together (torch's figure for the first row varies
between 19 and 34 ms from run to run):

=============================  ===========  =======
convolution (output map)        torch        taps
=============================  ===========  =======
512->512, 3x3 (2x2)             26.6 ms      7.8 ms
256->512, 3x3 stride 2 (2x2)    14.0 ms      5.8 ms
256->512, 1x1 stride 2 (2x2)     1.6 ms      0.8 ms
512->512, 3x3 (3x3)             29.1 ms     22.8 ms
256->512, 3x3 stride 2 (3x3)    18.7 ms     11.8 ms
256->256, 3x3 (4x4)              7.8 ms      8.9 ms
=============================  ===========  =======

In a whole training step of ResNet18 at 64 px (batch 64) this takes the
training rate from 208 to 241 images/s (``bench_fast_paths.py``, ``taps=0``
against the default).

For each kernel tap, the pairs of (output, input) positions that it connects
without touching the padding form two strided slices of the feature maps, and
the tap's share of both gradients is one matrix product over those slices. The
forward pass stays oneDNN's; the gradients are the same up to float rounding.
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["MAX_TAP_POSITIONS", "TapConv2d", "tap_conv_backward", "use_tap_backward"]

#: The tap-wise backward pass is used for output maps of at most this many
#: positions (3x3); from 4x4 up oneDNN is faster (table above).
MAX_TAP_POSITIONS = 9


def _tap_slices(kernel, stride, padding, n_in, n_out):
    """Per kernel offset along one axis: (output slice, input slice) of the pairs it connects.

    Output position ``o`` reads input position ``stride * o + k - padding``; only
    pairs with that position inside the input (not in the padding) count.
    """
    slices = []
    for k in range(kernel):
        first = max(0, -((k - padding) // stride))  # smallest o with stride*o + k - padding >= 0
        end = min(n_out, (n_in - 1 - k + padding) // stride + 1)
        if end <= first:
            slices.append(None)
            continue
        start_in = stride * first + k - padding
        slices.append((slice(first, end), slice(start_in, start_in + stride * (end - first - 1) + 1, stride)))
    return slices


def tap_conv_backward(grad_output, x, weight, stride, padding, need_input=True, need_weight=True):
    """Input and weight gradients of ``F.conv2d(x, weight, stride=stride, padding=padding)``.

    Parameters
    ----------
    grad_output : Tensor (N, O, Ho, Wo)
    x : Tensor (N, C, H, W)
        The convolution's input.
    weight : Tensor (O, C, kh, kw)
    stride, padding : pair of int
        Zero padding; no dilation, one group.
    need_input, need_weight : bool
        Which gradients to compute.

    Returns
    -------
    grad_input, grad_weight : Tensor or None
        In the memory layouts of ``x`` and ``weight``.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = grad_output.shape[-2:]
    x_nhwc = x.permute(0, 2, 3, 1)
    g_nhwc = grad_output.permute(0, 2, 3, 1)
    # Per tap, an (O, C) matrix with unit stride along C (what BLAS needs): the weight
    # copied once into (O, kh, kw, C) order, and the weight gradient built in that order.
    weight_taps = weight.permute(0, 2, 3, 1).contiguous() if need_input else None
    grad_weight = weight.new_empty(o, kh, kw, c) if need_weight else None
    grad_input = x.new_zeros(n, h, w, c) if need_input else None
    rows = _tap_slices(kh, stride[0], padding[0], h, ho)
    cols = _tap_slices(kw, stride[1], padding[1], w, wo)
    for a, row in enumerate(rows):
        for b, col in enumerate(cols):
            if row is None or col is None:  # this tap only ever meets padding
                if need_weight:
                    grad_weight[:, a, b, :] = 0
                continue
            g = g_nhwc[:, row[0], col[0], :]
            g_flat = g.reshape(-1, o)
            if need_weight:
                x_tap = x_nhwc[:, row[1], col[1], :]
                torch.mm(g_flat.t(), x_tap.reshape(-1, c), out=grad_weight[:, a, b, :])
            if need_input:
                grad_input[:, row[1], col[1], :] += (g_flat @ weight_taps[:, a, b, :]).view(*g.shape[:3], c)
    if need_input:
        layout = (torch.channels_last
                  if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
                  else torch.contiguous_format)
        grad_input = grad_input.permute(0, 3, 1, 2).contiguous(memory_format=layout)
    if need_weight:
        grad_weight = grad_weight.permute(0, 3, 1, 2).contiguous()
    return grad_input, grad_weight


class _TapBackwardConv2d(torch.autograd.Function):
    """``F.conv2d`` forward, :func:`tap_conv_backward` backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input, grad_weight = tap_conv_backward(grad_output, x, weight, ctx.stride, ctx.padding,
                                                    need_input, need_weight)
        grad_bias = grad_output.sum((0, 2, 3)) if need_bias else None
        return grad_input, grad_weight, grad_bias, None, None


def _autocast_enabled():
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


class TapConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` that trains with the tap-wise backward pass on small CPU maps.

    Same parameters, state dict and forward values as ``nn.Conv2d``; only the
    way gradients are computed differs, and only where it was measured to be
    faster: on CPU, in float32/float64 without autocast, for output maps of at
    most :data:`MAX_TAP_POSITIONS` positions, zero padding, no dilation, one group.
    """

    def _taps_apply(self, x):
        """Whether this call takes the tap-wise backward pass (see the class docstring)."""
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return False
        if (x.device.type != "cpu" or x.dim() != 4 or self.groups != 1 or self.dilation != (1, 1)
                or self.padding_mode != "zeros" or isinstance(self.padding, str)
                or x.dtype != self.weight.dtype or _autocast_enabled()):
            return False
        out_h = (x.shape[2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        out_w = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return out_h * out_w <= MAX_TAP_POSITIONS

    def forward(self, x):
        if self._taps_apply(x):
            return _TapBackwardConv2d.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def use_tap_backward(module):
    """Make every ``nn.Conv2d`` inside ``module`` a :class:`TapConv2d`, in place.

    Only the class changes (as :mod:`torch.nn.utils.parametrize` does): the
    parameters, their values and the state dict keys stay the same, and no
    random numbers are drawn.
    """
    for sub in module.modules():
        if type(sub) is nn.Conv2d:
            sub.__class__ = TapConv2d
    return module
