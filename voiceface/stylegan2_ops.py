"""Layers and kernels of the StyleGAN2 generator in `voiceface.stylegan2`.

Module and attribute names reproduce the rosinality/stylegan2-pytorch state-dict keys
(`conv1.conv.weight`, `convs.0.conv.blur.kernel`, `to_rgbs.0.upsample.kernel`, ...).

Each layer computes its function in one of two ways:

- differentiable (autograd recording, any batch; used to optimise `w`): the layer as the
  paper states it, with standard ops -- the style scales input channels, the
  demodulation output channels (folded into the weight for one sample, applied to the
  activations for a batch so one plain batched conv serves all samples); upsampling is
  a stride-2 transposed conv followed by the blur.
- inference (autograd off, one sample at a time): additionally the activation gain is
  folded into weight, bias and noise, later steps run in place, and at high resolution
  the [1, 3, 3, 1] blur is folded into the upsampling conv as four polyphase 3x3
  kernels (one conv + pixel shuffle instead of transposed conv + blur and their memory
  passes). 3x3 convs use NNPACK's Winograd kernels when PyTorch ships NNPACK (faster
  than direct convolution on CPU), else `F.conv2d`. Agrees with the
  differentiable path to float32 rounding (~1e-5).

`reuse_freed_memory` is an opt-in, process-wide allocator setting that removes the page
faults of large fresh allocations (benchmarks/README.md; `python -m benchmarks.stylegan2`).

Shapes: N batch, D style width, H x W pixels, `in` / `out` channels.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory import libc_function

LRELU_SLOPE = 0.2  # negative slope of the fused leaky ReLU
LRELU_GAIN = math.sqrt(2.0)  # output gain of the fused leaky ReLU (keeps unit variance)
DEMOD_EPS = 1e-8  # added to the sum of squared modulated weights before the rsqrt
FOLD_MIN_RES = 128  # px; input side from which inference folds the blur into the up-conv
NNPACK_MIN_RES = 32  # px; below this NNPACK's per-call cost exceeds its Winograd saving
KEEP_FREED_BYTES = 1 << 30  # blocks up to this size stay in the heap after `reuse_freed_memory`
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter numbers
_FIR_1D = torch.tensor([1.0, 3.0, 3.0, 1.0])
# upfirdn2d filter of the 2x up-sampling layers: outer([1,3,3,1]) normalised, times 2^2.
FIR_KERNEL = torch.outer(_FIR_1D, _FIR_1D) / torch.outer(_FIR_1D, _FIR_1D).sum() * 4


# ------------------------------------------------------------------------- kernels


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2); x [N, C, ...], bias [C] added along dim 1."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), LRELU_SLOPE) * LRELU_GAIN


def demodulation(weight_sq: Tensor, style: Tensor) -> Tensor:
    """d [N, out] = rsqrt(sum_{in,k} (W * s)^2 + eps) from weight_sq [out, in] = sum_k W^2
    (scaled weight) and style s [N, in]."""
    return torch.rsqrt(style.square() @ weight_sq.t() + DEMOD_EPS)


def blur(x: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
    """upfirdn2d(x, kernel, pad=(1, 1)) (a true convolution) plus optional bias [C].

    x [N, C, H, W], kernel [4, 4] -> [N, C, H - 1, W - 1].
    """
    channels = x.shape[1]
    weight = kernel.flip(0, 1).expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, bias, padding=1, groups=channels)


def upsample_rgb(skip: Tensor, kernel: Tensor) -> Tensor:
    """upfirdn2d(skip, kernel, up=2, pad=(2, 1)): [N, C, H, W] -> [N, C, 2H, 2W]."""
    channels = skip.shape[1]
    weight = kernel.expand(channels, 1, *kernel.shape)
    return F.conv_transpose2d(skip, weight, stride=2, padding=1, groups=channels)


@functools.cache
def _nnpack_built() -> bool:
    """Whether this PyTorch ships NNPACK (private ops, hence the hasattr checks); the
    availability query also initialises NNPACK, which its conv op requires."""
    ops_present = hasattr(torch, "_nnpack_spatial_convolution") and hasattr(
        torch._C, "_get_nnpack_enabled")
    return ops_present and torch.backends.nnpack.is_available()


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """3x3 conv, padding 1, no autograd: x [1, in, H, W], weight [out, in, 3, 3]."""
    if (
        x.shape[-1] >= NNPACK_MIN_RES
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and _nnpack_built()
        and torch._C._get_nnpack_enabled()  # False inside torch.backends.nnpack.flags(False)
    ):
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    return F.conv2d(x, weight, bias, padding=1)


def fold_blur_polyphase(weight: Tensor, kernel: Tensor) -> Tensor:
    """Fold "stride-2 transposed conv, then blur" into one 3x3 conv + pixel shuffle.

    The composite kernel is the full convolution K = W * kernel (6x6). Output pixel
    (2p + r, 2q + s) sees inputs (p + e - 1, q + f - 1) through K[4+r-2e, 4+s-2f], i.e.
    phase (r, s) uses K flipped, sampled with stride 2 from offset (1 - r, 1 - s). The
    map from W's 9 taps to the 4 x 9 phase taps is linear, so it is one small matmul.
    weight [out, in, 3, 3], kernel [4, 4] -> [4 * out, in, 3, 3], phase-major
    (output channel (2r + s) * out + o).
    """
    out_ch, in_ch = weight.shape[:2]
    assert weight.shape[2:] == (3, 3) and kernel.shape == (4, 4), (weight.shape, kernel.shape)
    taps = torch.eye(9, dtype=weight.dtype, device=weight.device).view(9, 1, 3, 3)
    full = F.conv_transpose2d(taps, kernel[None, None]).view(9, 6, 6).flip(-2, -1)
    phase_taps = torch.stack([full[:, 1 - r :: 2, 1 - s :: 2] for r in (0, 1) for s in (0, 1)])
    folded = torch.matmul(weight.reshape(1, out_ch * in_ch, 9), phase_taps.view(4, 9, 9))
    return folded.view(4 * out_ch, in_ch, 3, 3)


def modulate(weight: Tensor, style: Tensor, out_scale: Tensor | None) -> Tensor:
    """weight [out, in, k, k] times style [in] per input and out_scale [out] per output."""
    if out_scale is None:
        return weight * style[None, :, None, None]
    return weight * torch.outer(out_scale, style)[:, :, None, None]


def pixel_shuffle_add(y: Tensor, noise: Tensor) -> Tensor:
    """Phase-major pixel shuffle of y [1, 4C, H, W] (channel (2r + s) * C + c goes to pixel
    (2p + r, 2q + s)) plus noise [1, 1, 2H, 2W], in one memory pass -> [1, C, 2H, 2W]."""
    _, c4, h, w = y.shape
    out = y.new_empty(1, c4 // 4, 2 * h, 2 * w)
    phases = y.view(1, 2, 2, c4 // 4, h, w).permute(0, 3, 4, 1, 5, 2)  # (c, p, r, q, s)
    torch.add(phases, noise.view(1, 1, h, 2, w, 2), out=out.view(1, c4 // 4, h, 2, w, 2))
    return out


def reuse_freed_memory(max_bytes: int = KEEP_FREED_BYTES) -> bool:
    """Let glibc recycle freed blocks up to `max_bytes` instead of unmapping them.

    By default glibc serves every block above 32 MB with a fresh mmap whose pages fault in
    on first touch; a 1024 px synthesis allocates ~700 MB of such activations, and on a
    small VM the faults cost a good part of its time. Process-wide (memory is kept for reuse
    rather than returned to the OS), so it is opt-in: call once at start-up. Returns False
    where unsupported (not glibc).
    """
    mallopt = libc_function("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, max_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, max_bytes))


# -------------------------------------------------------------------------- layers


class FirKernel(nn.Module):
    """Holds the fixed [4, 4] up-sampling filter as buffer `kernel`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", FIR_KERNEL.clone())


class PixelNorm(nn.Module):
    """z [N, D] / sqrt(mean(z^2) + 1e-8) per row."""

    def forward(self, z: Tensor) -> Tensor:
        return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: W * lr_mul / sqrt(in), b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.lr_mul, self.scale, self.activate = lr_mul, lr_mul / math.sqrt(in_dim), activate

    def forward(self, x: Tensor) -> Tensor:
        """x [N, in] -> [N, out]; fused leaky ReLU (bias first) if `activate`."""
        y = F.linear(x, self.weight) * self.scale  # scaling y, not W: same product, cheaper
        if self.activate:
            return fused_leaky_relu(y, self.bias * self.lr_mul)
        return y + self.bias * self.lr_mul


class ConstantInput(nn.Module):
    """Learned constant `input` [1, C, size, size] starting the synthesis network."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.input = nn.Parameter(torch.empty(1, channels, size, size))


class NoiseInjection(nn.Module):
    """Noise strength `weight` [1] of one styled conv."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedLeakyReLU(nn.Module):
    """Per-channel `bias` [C] of one styled conv's activation."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class ModulatedConv2d(nn.Module):
    """`weight` [1, out, in, k, k] modulated by a style [N, in] from w (`modulation`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch)
        nn.init.ones_(self.modulation.bias)
        if upsample:
            self.blur = FirKernel()
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.demodulate, self.upsample = demodulate, upsample
        self._weight_sq: tuple[tuple[int, int], Tensor] | None = None  # (weight version, value)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """Differentiable: x [N, in, H, W], w [N, D] -> [N, out, H', W'] (H' = 2H if up).

        The style scales input channels and the demodulation output channels; for one
        sample both go into the (small) weight, for a batch onto the activations so that
        one plain batched conv serves all samples.
        """
        weight, style = self.weight[0] * self.scale, self.modulation(w)  # style [N, in]
        demod = demodulation(self.weight_sq(), style) if self.demodulate else None
        single = x.shape[0] == 1
        if single:
            weight = modulate(weight, style[0], None if demod is None else demod[0])
        else:
            x = x * style[:, :, None, None]
        if self.upsample:
            y = blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), self.blur.kernel)
        else:
            y = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        return y if single or demod is None else y * demod[:, :, None, None]

    def weight_sq(self) -> Tensor:
        """sum over k of (scale * W)^2: [out, in]."""
        return torch.linalg.vector_norm(self.weight[0], dim=(2, 3)).square() * self.scale**2

    def cached_weight_sq(self) -> Tensor:
        """`weight_sq` without autograd, cached while the weight is unchanged (same storage
        and version counter; tensors made in inference mode have no counter: not cached)."""
        if self.weight.is_inference():
            return self.weight_sq()
        key = (self.weight.data_ptr(), self.weight._version)
        if self._weight_sq is None or self._weight_sq[0] != key:
            self._weight_sq = (key, self.weight_sq())
        return self._weight_sq[1]


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling), noise injection, biased leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        """x [N, in, H, W], w [N, D], noise [N, 1, H', W'] -> [N, out, H', W']."""
        if not torch.is_grad_enabled() and x.shape[0] == 1:
            return self._infer(x, w, noise)
        y = self.conv(x, w) + self.noise.weight * noise
        return fused_leaky_relu(y, self.activate.bias)

    def _infer(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        """Inference kernel for one sample; the gain sqrt(2) > 0 commutes with leaky ReLU,
        so it is folded into the output scale, the bias and the noise."""
        conv = self.conv
        style = conv.modulation(w)  # [1, in]
        out_scale = demodulation(conv.cached_weight_sq(), style)[0] * (LRELU_GAIN * conv.scale)
        bias = self.activate.bias * LRELU_GAIN
        noise = noise * (self.noise.weight * LRELU_GAIN)
        if not conv.upsample:
            y = conv3x3(x, modulate(conv.weight[0], style[0], out_scale), bias)
            return F.leaky_relu_(y.add_(noise), LRELU_SLOPE)
        if x.shape[-1] >= FOLD_MIN_RES:
            weight = modulate(conv.weight[0], style[0], out_scale)
            y = conv3x3(x, fold_blur_polyphase(weight, conv.blur.kernel), bias.repeat(4))
            return F.leaky_relu_(pixel_shuffle_add(y, noise), LRELU_SLOPE)
        weight = modulate(conv.weight[0], style[0], out_scale).transpose(0, 1)
        y = blur(F.conv_transpose2d(x, weight, stride=2), conv.blur.kernel, bias)
        return F.leaky_relu_(y.add_(noise), LRELU_SLOPE)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + `bias`, plus the upsampled skip."""

    def __init__(self, in_ch: int, style_dim: int, *, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = FirKernel()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None) -> Tensor:
        """x [N, in, H, W], w [N, D], skip [N, 3, H/2, W/2] or None -> [N, 3, H, W]."""
        if torch.is_grad_enabled() or x.shape[0] != 1:
            rgb = self.conv(x, w) + self.bias
            return rgb if skip is None else rgb + upsample_rgb(skip, self.upsample.kernel)
        _, c, h, wd = x.shape  # inference, one sample: the 1x1 conv as one matmul, in place
        weight = self.conv.weight[0, :, :, 0, 0] * (self.conv.modulation(w) * self.conv.scale)
        rgb = torch.addmm(self.bias.view(3, 1), weight, x.reshape(c, h * wd)).view(1, 3, h, wd)
        return rgb if skip is None else rgb.add_(upsample_rgb(skip, self.upsample.kernel))


class NoiseBuffers(nn.Module):
    """Fixed noise maps `noise_{j}` [1, 1, r_j, r_j] of styled conv j ("const" noise)."""

    def __init__(self, sides: list[int]):
        super().__init__()
        for j, side in enumerate(sides):
            self.register_buffer(f"noise_{j}", torch.empty(1, 1, side, side))
