"""The tap-wise convolution: same outputs and gradients as torch's, used only where it applies."""

import pickle

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from lensclf._cpu.conv import MAX_TAP_POSITIONS, conv2d, tap_conv_backward, tap_conv_forward, taps_apply
from lensclf._models import LensNet


class TapConv2d(nn.Conv2d):
    """A convolution module computed by :func:`lensclf._cpu.conv.conv2d` (as the CPU fast path does)."""

    def forward(self, x):
        return conv2d(self, x) if taps_apply(self, x) else super().forward(x)


def _reference_gradients(grad_output, x, weight, stride, padding):
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], 1,
        [True, True, False])
    return grad_x, grad_w


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    channels=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    batch=st.integers(1, 3),
    channels_last=st.booleans(),
)
def test_tap_convolution_equals_torchs_for_any_geometry(size, kernel, stride, padding, channels, batch,
                                                     channels_last):
    # Every tap is either inside the input for some output position, or only meets padding (or
    # lies beyond the input, e.g. kernel 5 with stride 3): all must come out right.
    assume(all(s + 2 * p >= k for s, p, k in zip(size, padding, kernel)))  # else no output position
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels[0], *size, dtype=torch.float64, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels[1], channels[0], *kernel, dtype=torch.float64, generator=generator)
    bias = torch.randn(channels[1], dtype=torch.float64, generator=generator)
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    tap_out = tap_conv_forward(x, weight, bias, stride, padding)
    torch.testing.assert_close(tap_out, F.conv2d(x, weight, bias, stride=stride, padding=padding),
                               rtol=1e-12, atol=1e-12)
    assert tap_out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(tap_conv_forward(x, weight, None, stride, padding), out, rtol=1e-12, atol=1e-12)
    grad_output = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    expected_x, expected_w = _reference_gradients(grad_output, x, weight, stride, padding)
    grad_x, grad_w = tap_conv_backward(grad_output, x, weight, stride, padding)
    torch.testing.assert_close(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, expected_w, rtol=1e-12, atol=1e-12)
    assert grad_w.is_contiguous()
    assert grad_x.is_contiguous(memory_format=torch.contiguous_format if x.is_contiguous() else torch.channels_last)
    only_x, no_w = tap_conv_backward(grad_output, x, weight, stride, padding, need_weight=False)
    no_x, only_w = tap_conv_backward(grad_output, x, weight, stride, padding, need_input=False)
    assert no_w is None and no_x is None
    torch.testing.assert_close(only_x, expected_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(only_w, expected_w, rtol=1e-12, atol=1e-12)


def _grad_fn_names(tensor):
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("map_size, stride, expect_taps", [
    (2, 1, True),    # layer4 at 64 px: 2x2 output
    (4, 2, True),    # layer4's first, strided convolution: 4x4 -> 2x2
    (3, 1, True),    # layer4 at 96 px: 3x3 output, still at most MAX_TAP_POSITIONS
    (4, 1, False),   # layer3 at 64 px: 4x4 output, torch's own backward is faster
])
def test_tap_conv_trains_like_conv2d_and_only_on_small_maps(map_size, stride, expect_taps):
    torch.manual_seed(0)
    reference = nn.Conv2d(6, 5, 3, stride=stride, padding=1, bias=True).double()
    tap = TapConv2d(6, 5, 3, stride=stride, padding=1, bias=True).double()
    tap.load_state_dict(reference.state_dict())
    x = torch.randn(3, 6, map_size, map_size, dtype=torch.float64)
    x_ref, x_tap = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_tap = reference(x_ref), tap(x_tap)
    assert ("_TapConv2dBackward" in _grad_fn_names(out_tap)) is expect_taps
    assert (out_ref.shape[-1] * out_ref.shape[-2] <= MAX_TAP_POSITIONS) is expect_taps
    torch.testing.assert_close(out_tap, out_ref, rtol=1e-12, atol=1e-12)
    assert out_tap.is_contiguous(memory_format=torch.channels_last) is expect_taps  # taps compute channels-last
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)
    out_tap.backward(grad)
    for a, b in [(x_tap.grad, x_ref.grad), (tap.weight.grad, reference.weight.grad), (tap.bias.grad, reference.bias.grad)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _plain_conv(conv, x):
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def test_tap_conv_where_it_applies_and_where_it_falls_back():
    conv = TapConv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 2, 2)
    for context in (torch.no_grad, torch.inference_mode):  # inference: the taps, no autograd record
        with context():
            out = conv(x)
            assert out.grad_fn is None and out.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(out, _plain_conv(conv, x), rtol=1e-5, atol=1e-6)
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(False)
    assert conv(x).grad_fn is None  # nothing to differentiate
    conv.bias.requires_grad_(True)
    assert "_TapConv2dBackward" in _grad_fn_names(conv(x))
    conv.weight.requires_grad_(True)
    assert "_TapConv2dBackward" in _grad_fn_names(conv(x))
    # An input too small for the kernel gets torch's own error, as from nn.Conv2d.
    with pytest.raises(RuntimeError) as tap_error:
        TapConv2d(4, 4, 5)(torch.randn(1, 4, 3, 3))
    with pytest.raises(RuntimeError) as torch_error:
        nn.Conv2d(4, 4, 5)(torch.randn(1, 4, 3, 3))
    assert str(tap_error.value) == str(torch_error.value)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: torch's convolution
        out = conv(x)
    assert out.dtype == torch.bfloat16 and "_TapConv2dBackward" not in _grad_fn_names(out)
    dilated = TapConv2d(4, 4, 3, padding=2, dilation=2)
    assert "_TapConv2dBackward" not in _grad_fn_names(dilated(x))
    grouped = TapConv2d(4, 4, 3, padding=1, groups=2)
    assert "_TapConv2dBackward" not in _grad_fn_names(grouped(x))


def test_fast_paths_leave_the_network_a_plain_torchvision_resnet():
    # The switch changes how the forward pass is computed, never the modules: no class of lensclf's
    # CPU module in the tree or in a pickle, and the same state dict keys as torchvision's ResNet18.
    net = LensNet(fast_paths=True)
    assert all(type(m) is nn.Conv2d for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    blob = pickle.dumps(net)
    assert b"_cpu" not in blob and b"TapConv" not in blob
    from torchvision.models import resnet18

    plain = resnet18(num_classes=1)
    assert set(net.backbone.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(net.backbone.state_dict())


def test_resnet_trains_with_tap_convolutions_and_same_gradients():
    # With fast paths, a whole training step's gradients equal those of torchvision's forward pass
    # (float64: exact up to rounding), and the tap-wise convolution is really used.
    torch.manual_seed(0)
    net = LensNet(fast_paths=True).double()
    plain = LensNet(fast_paths=False).double()
    plain.load_state_dict(net.state_dict())
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    net(x).sum().backward()
    plain(x).sum().backward()
    assert "_TapConv2dBackward" in _grad_fn_names(net(x))
    assert "_TapConv2dBackward" not in _grad_fn_names(plain(x))
    for (name, p), q in zip(net.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
