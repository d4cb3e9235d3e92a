"""A 2-D convolution computed as one matrix product per kernel tap, for small maps on CPU.

On the native 64x64 input, ResNet's layer4 works on 2x2 feature maps (3x3 at
96 px). There most of a padded 3x3 kernel's taps fall on zeros, and oneDNN's
kernels for these shapes run far below the machine's matrix-product rate, the
backward ones most of all. For each kernel tap, the pairs of (output, input)
positions it connects without touching the padding form two strided slices of
the feature maps, and the tap's share of the output and of both gradients is
one matrix product over those slices: the same result as torch's up to float
rounding. The taps compute in (N, H, W, C) order, so the output is
channels-last, where batch norm on 2x2 maps is also faster.
Measurements: docs/benchmarks.md ("CPU fast paths").
"""

import torch
from torch.autograd.function import once_differentiable

__all__ = ["MAX_TAP_POSITIONS", "conv2d", "tap_conv_backward", "tap_conv_forward", "taps_apply"]

#: The tap-wise convolution is used for output maps of at most this many
#: positions (3x3); from 4x4 up oneDNN is faster (docs/benchmarks.md).
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


def _nhwc(x):
    """``x`` (N, C, H, W) as a contiguous (N, H, W, C) tensor: a view if ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).contiguous()


def _weight_taps(weight):
    """The weight (O, C, kh, kw) as (O, kh, kw, C): per tap an (O, C) matrix with unit stride along C."""
    return weight.permute(0, 2, 3, 1).contiguous()


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _tap_forward(x_nhwc, weight_taps, bias, stride, padding):
    """The convolution of (N, H, W, C) input with (O, kh, kw, C) taps, as (N, Ho, Wo, O)."""
    n, h, w, c = x_nhwc.shape
    o, kh, kw, _ = weight_taps.shape
    ho, wo = _output_size(h, kh, stride[0], padding[0]), _output_size(w, kw, stride[1], padding[1])
    out = x_nhwc.new_zeros(n, ho, wo, o)
    rows = _tap_slices(kh, stride[0], padding[0], h, ho)
    cols = _tap_slices(kw, stride[1], padding[1], w, wo)
    for a, row in enumerate(rows):
        for b, col in enumerate(cols):
            if row is None or col is None:  # this tap only ever meets padding
                continue
            target = out[:, row[0], col[0], :]
            x_tap = x_nhwc[:, row[1], col[1], :].reshape(-1, c)
            target += (x_tap @ weight_taps[:, a, b, :].t()).view(target.shape)
    if bias is not None:
        out += bias
    return out


def _tap_backward(grad_output, x_nhwc, weight_taps, stride, padding, need_input, need_weight):
    """Gradients of :func:`_tap_forward`: input as (N, H, W, C), weight as (O, C, kh, kw)."""
    n, h, w, c = x_nhwc.shape
    o, kh, kw, _ = weight_taps.shape
    ho, wo = grad_output.shape[-2:]
    g_nhwc = grad_output.permute(0, 2, 3, 1)
    # The weight gradient is built tap by tap in (O, kh, kw, C) order (unit stride along C).
    grad_weight = weight_taps.new_empty(o, kh, kw, c) if need_weight else None
    grad_input = x_nhwc.new_zeros(n, h, w, c) if need_input else None
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
    if need_weight:
        grad_weight = grad_weight.permute(0, 3, 1, 2).contiguous()
    return grad_input, grad_weight


def tap_conv_forward(x, weight, bias, stride, padding):
    """``F.conv2d(x, weight, bias, stride=stride, padding=padding)``, one matrix product per kernel tap.

    Parameters
    ----------
    x : Tensor (N, C, H, W)
    weight : Tensor (O, C, kh, kw)
    bias : Tensor (O,) or None
    stride, padding : pair of int
        Zero padding; no dilation, one group.

    Returns
    -------
    Tensor (N, O, Ho, Wo)
        In channels-last memory format (the taps compute it that way), equal to
        torch's convolution up to float rounding.
    """
    return _tap_forward(_nhwc(x), _weight_taps(weight), bias, stride, padding).permute(0, 3, 1, 2)


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
    grad_input, grad_weight = _tap_backward(grad_output, _nhwc(x), _weight_taps(weight), stride, padding,
                                            need_input, need_weight)
    return _as_nchw(grad_input, _is_channels_last(x)), grad_weight


def _as_nchw(grad_nhwc, channels_last):
    """An (N, H, W, C) gradient as (N, C, H, W), in channels-last or the default memory layout."""
    if grad_nhwc is None:
        return None
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return grad_nhwc.permute(0, 3, 1, 2).contiguous(memory_format=layout)


class _TapConv2d(torch.autograd.Function):
    """:func:`tap_conv_forward` and its gradients (:func:`tap_conv_backward`).

    The input in (N, H, W, C) order and the weight in tap order are computed once,
    in the forward pass, and kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        x_nhwc, weight_taps = _nhwc(x), _weight_taps(weight)
        ctx.save_for_backward(x_nhwc, weight_taps)
        ctx.stride, ctx.padding = stride, padding
        ctx.input_channels_last = _is_channels_last(x)
        return _tap_forward(x_nhwc, weight_taps, bias, stride, padding).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x_nhwc, weight_taps = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input, grad_weight = _tap_backward(grad_output, x_nhwc, weight_taps, ctx.stride, ctx.padding,
                                                need_input, need_weight)
        grad_bias = grad_output.sum((0, 2, 3)) if need_bias else None
        return _as_nchw(grad_input, ctx.input_channels_last), grad_weight, grad_bias, None, None


def _autocast_enabled():
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


def taps_apply(conv, x):
    """Whether ``conv(x)`` is computed tap-wise: where it was measured to be faster.

    On CPU, in float32/float64 without autocast, for output maps of at most
    :data:`MAX_TAP_POSITIONS` positions, zero padding, no dilation, one group.
    """
    if (x.device.type != "cpu" or x.dim() != 4 or conv.groups != 1 or conv.dilation != (1, 1)
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str)
            or x.dtype != conv.weight.dtype or x.dtype not in (torch.float32, torch.float64)
            or _autocast_enabled()):
        return False
    out_h = _output_size(x.shape[2], conv.kernel_size[0], conv.stride[0], conv.padding[0])
    out_w = _output_size(x.shape[3], conv.kernel_size[1], conv.stride[1], conv.padding[1])
    return out_h > 0 and out_w > 0 and out_h * out_w <= MAX_TAP_POSITIONS


def conv2d(conv, x):
    """``conv(x)`` for a plain :class:`torch.nn.Conv2d`, tap-wise where :func:`taps_apply` says so.

    The module is not changed; outputs and gradients equal torch's up to float
    rounding. The autograd function records a backward pass only where a
    gradient is needed.
    """
    if not taps_apply(conv, x):
        return conv(x)
    return _TapConv2d.apply(x, conv.weight, conv.bias, conv.stride, conv.padding)
