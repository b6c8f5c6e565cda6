"""StyleGAN2 generator (config-f, skip architecture) written for voiceface.

Computes exactly the function of rosinality/stylegan2-pytorch checkpoints
(`{"g_ema": state_dict, "latent_avg": tensor[512]}`, e.g. `stylegan2-ffhq-config-f.pt`);
`state_dict()` keys are that layout's keys, so loading is a strict `load_state_dict`.
The project's own format is a directory with `generator.safetensors` (+ `w_avg`) and
`generator.json` (config + metadata). Kernels live in `voiceface.stylegan2_ops`.

    g = Generator.from_pretrained("weights/stylegan2")
    images = g.sample([1, 2, 3], psi=0.7)        # [3, 3, 1024, 1024] in ~[-1, 1]
    to_pil(images)[0].save("face.png")

`synthesis` is differentiable w.r.t. `w` while autograd records; with autograd off
(`torch.inference_mode()` / `torch.no_grad()`) it runs faster inference kernels, one
sample at a time, that agree with the differentiable path to float32 rounding. A server
rendering many images should also call `stylegan2_ops.reuse_freed_memory()` once at
start-up (a process-wide allocator setting that saves page faults; benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch
from PIL import Image
from torch import Tensor, nn

from voiceface import storage
from voiceface import stylegan2_ops as ops
from voiceface.hub import HASH_CHUNK_BYTES

MIN_RESOLUTION = 4  # px; the learned constant input
MAPPING_LR_MUL = 0.01  # equalised learning-rate multiplier of the mapping MLP
W_AVG_SAMPLES = 10_000  # z samples averaged into w_avg when a checkpoint lacks latent_avg
W_AVG_SEED = 0  # torch.Generator seed of those samples (so w_avg is deterministic)
DEFAULT_PSI = 0.7  # truncation toward w_avg used by `sample`
WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "generator.json"
FORMAT_NAME = "voiceface.stylegan2"
FORMAT_VERSION = 1
FFHQ_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}

NoiseMode = Literal["const", "random"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator.

    size: output side in px (power of 2 >= 4); style_dim: z / w width; n_mlp: mapping
    layers; channels: feature channels per resolution, every power of 2 from 4 to size.
    """

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=lambda: dict(FFHQ_CHANNELS))

    def __post_init__(self) -> None:
        if self.size < MIN_RESOLUTION or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of 2 >= {MIN_RESOLUTION}, got {self.size}")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise ValueError(f"style_dim and n_mlp must be >= 1: {self.style_dim}, {self.n_mlp}")
        channels = dict(sorted((int(res), int(ch)) for res, ch in self.channels.items()))
        wanted = resolutions(self.size)
        if list(channels) != wanted or min(channels.values()) < 1:
            raise ValueError(f"channels must give >= 1 channel for each resolution in {wanted}, "
                             f"got {channels}")
        object.__setattr__(self, "channels", channels)

    @classmethod
    def ffhq(cls, size: int = 1024) -> GeneratorConfig:
        """FFHQ config-f (channel multiplier 2) at `size` px (256, 512 or 1024)."""
        return cls(size=size, channels={r: c for r, c in FFHQ_CHANNELS.items() if r <= size})

    @property
    def num_ws(self) -> int:
        """Number of per-layer latents in W+: 2 * log2(size) - 2."""
        return 2 * int(math.log2(self.size)) - 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (channel keys become strings in JSON; `from_dict` restores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of `to_dict`; accepts the string keys JSON produces."""
        return cls(**{**data, "channels": {int(k): int(v) for k, v in data["channels"].items()}})


def resolutions(size: int) -> list[int]:
    """Feature-map sides of a generator of `size` px: [4, 8, ..., size]."""
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


def layer_resolutions(size: int) -> list[int]:
    """Output side of each styled conv j: [4, 8, 8, 16, 16, ..., size, size]."""
    return [MIN_RESOLUTION] + [r for r in resolutions(size)[1:] for _ in range(2)]


# ------------------------------------------------------------------------ generator
def truncate_toward(w, centre, psi: float):
    """centre + psi * (w - centre): the truncation trick as a pure function of arrays or
    tensors (w [..., D], centre [D]); psi = 1 returns w itself, psi = 0 the centre."""
    return w if psi == 1 else centre + psi * (w - centre)


class Generator(nn.Module):
    """StyleGAN2 generator: mapping z -> w, truncation, synthesis w -> image.

    `Generator(config)` has random weights (seeded); `seed=None` leaves them
    uninitialised for loaders. Use `Generator.from_pretrained` for trained weights.
    """

    def __init__(self, config: GeneratorConfig, *, seed: int | None = 0):
        super().__init__()
        self.config, d, ch = config, config.style_dim, config.channels
        self.metadata: dict[str, str] = {}
        mlp = [ops.EqualLinear(d, d, lr_mul=MAPPING_LR_MUL, activate=True)
               for _ in range(config.n_mlp)]
        self.style = nn.Sequential(ops.PixelNorm(), *mlp)
        c4 = ch[MIN_RESOLUTION]
        self.input = ops.ConstantInput(c4, MIN_RESOLUTION)
        self.conv1 = ops.StyledConv(c4, c4, d)
        self.to_rgb1 = ops.ToRGB(c4, d, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        sides = resolutions(config.size)
        for lower, res in itertools.pairwise(sides):
            self.convs.append(ops.StyledConv(ch[lower], ch[res], d, upsample=True))
            self.convs.append(ops.StyledConv(ch[res], ch[res], d))
            self.to_rgbs.append(ops.ToRGB(ch[res], d))
        self.noises = ops.NoiseBuffers(layer_resolutions(config.size))
        # Not in the rosinality state dict (it is `latent_avg` beside it); saved explicitly.
        self.register_buffer("w_avg", torch.zeros(d), persistent=False)
        if seed is not None:
            self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        """rosinality's initialisation, drawn from a torch.Generator seeded with `seed`."""
        rng = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
                if name.endswith(("conv.weight", "modulation.weight", "input.input")) or (
                    name.startswith("noises.")
                ):
                    tensor.copy_(torch.randn(tensor.shape, generator=rng))
                elif name.startswith("style.") and name.endswith(".weight"):
                    tensor.copy_(torch.randn(tensor.shape, generator=rng) / MAPPING_LR_MUL)
            self.w_avg.copy_(self.mean_w())

    @property
    def style_dim(self) -> int:
        """Width D of z and w."""
        return self.config.style_dim

    @property
    def num_ws(self) -> int:
        """Number of per-layer latents of W+ (18 at 1024 px)."""
        return self.config.num_ws

    @property
    def resolution(self) -> int:
        """Output side in px."""
        return self.config.size

    def mapping(self, z: Tensor) -> Tensor:
        """z [N, D] -> w [N, D]: pixel norm, then n_mlp equalised linear + leaky ReLU."""
        if z.dim() != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"z must be [N, {self.style_dim}], got {list(z.shape)}")
        return self.style(z)

    def mean_w(self, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> Tensor:
        """Mean of mapping over n z ~ N(0, I) from a torch.Generator seeded with `seed`: [D]."""
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.mapping(z.to(self.w_avg)).mean(dim=0)

    def truncate(self, w: Tensor, psi: float, centre: Tensor | None = None) -> Tensor:
        """centre + psi * (w - centre) for w [N, D] or W+ [N, num_ws, D]; psi = 1 returns w.

        `centre` [D] is what faces are pulled toward: the gallery's population centre
        (`voiceface.latents.Latents.centre`) in the pipeline; default the generator's w_avg.
        """
        if w.shape[-1] != self.style_dim or w.dim() not in (2, 3):
            raise ValueError(f"w must be [N, {self.style_dim}] or [N, num_ws, {self.style_dim}], "
                             f"got {list(w.shape)}")
        if centre is None:
            centre = self.w_avg
        elif centre.shape != (self.style_dim,):
            raise ValueError(f"centre must be [{self.style_dim}], got {list(centre.shape)}")
        return truncate_toward(w, centre.to(w), psi)

    def synthesis(self, w: Tensor, noise: NoiseMode = "const", resolution: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """w [N, D] (same w for every layer) or W+ [N, num_ws, D] -> images [N, 3, r, r].

        noise: "const" uses the stored `noises.noise_j` maps; "random" draws new maps from
        `generator` (the global RNG if None). resolution r: stop at this level (4, 8, ...,
        size) and return the RGB skip image accumulated there, a cheap preview.
        Output is float in roughly [-1, 1]. Differentiable unless autograd is off.
        """
        size = self.resolution if resolution is None else resolution
        (image,) = self.progressive(w, [size], noise, generator)
        return image

    def progressive(self, w: Tensor, sizes: Sequence[int], noise: NoiseMode = "const",
                    generator: torch.Generator | None = None) -> Iterator[Tensor]:
        """Images at each resolution in `sizes` (ascending), from one pass of the network: each
        is yielded as soon as its level is done, and the next continues from there, so a
        256 px preview and then the full face cost the full face alone. Each image equals
        `synthesis(w, noise, r)` (with "random" noise: for the same `generator` state); it is
        the caller's to change. Arguments are checked at the call, and the work runs in the
        autograd / inference mode of the call whenever the iterator is read (for a batch
        with autograd off, all of it at the call)."""
        n, ws = self._broadcast_w(w)
        wanted = self.check_sizes(sizes)
        allowed = resolutions(self.resolution)
        sides = layer_resolutions(self.resolution)[: 2 * allowed.index(wanted[-1]) + 1]
        if noise == "const":
            stored = [getattr(self.noises, f"noise_{j}") for j in range(len(sides))]
            noises = [m.expand(n, -1, -1, -1) for m in stored]
        elif noise == "random":
            noises = [torch.randn(n, 1, r, r, generator=generator).to(ws) for r in sides]
        else:
            raise ValueError(f'noise must be "const" or "random", got {noise!r}')
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        if modes[0] or n == 1:
            return _read_levels(self._levels(ws, noises), allowed, wanted, modes)
        # The inference kernels run one sample at a time (weights modulated per sample),
        # each to the end before the next, so a batch needs one sample's activations.
        def sample(i: int) -> list[Tensor]:
            levels = self._levels(ws[i : i + 1], [m[i : i + 1] for m in noises])
            return list(_read_levels(levels, allowed, wanted, modes))

        return iter([torch.cat(images) for images in zip(*[sample(i) for i in range(n)])])

    def check_sizes(self, sizes: Sequence[int]) -> list[int]:
        """`sizes` as a list, if it is ascending levels of this generator (each once), else
        ValueError saying which levels there are."""
        allowed, wanted = resolutions(self.resolution), list(sizes)
        if len(wanted) == 1 and wanted[0] not in allowed:
            raise ValueError(f"resolution must be one of {allowed}, got {wanted[0]}")
        if not wanted or wanted != sorted(set(wanted)) or not set(wanted) <= set(allowed):
            raise ValueError(f"resolutions must be levels of {allowed}, ascending and each "
                             f"once, got {wanted}")
        return wanted

    def _broadcast_w(self, w: Tensor) -> tuple[int, Tensor]:
        """Validate w and return (N, W+ [N, num_ws, D])."""
        d, k = self.style_dim, self.num_ws
        if w.dim() == 2 and w.shape[1] == d:
            return w.shape[0], w[:, None, :].expand(-1, k, -1)
        if w.dim() == 3 and w.shape[1:] == (k, d):
            return w.shape[0], w
        raise ValueError(f"w must be [N, {d}] or W+ [N, {k}, {d}], got {list(w.shape)}")

    def _levels(self, ws: Tensor, noises: list[Tensor]) -> Iterator[Tensor]:
        """ws [N, num_ws, D], one noise map per styled conv to run -> the RGB skip image
        [N, 3, r, r] at each level r = 4, 8, ... that the noise maps reach."""
        x = self.input.input.expand(ws.shape[0], -1, -1, -1)
        x = self.conv1(x, ws[:, 0], noises[0])
        skip = self.to_rgb1(x, ws[:, 1], None)
        yield skip
        for i in range((len(noises) - 1) // 2):
            x = self.convs[2 * i](x, ws[:, 2 * i + 1], noises[2 * i + 1])
            x = self.convs[2 * i + 1](x, ws[:, 2 * i + 2], noises[2 * i + 2])
            skip = self.to_rgbs[i](x, ws[:, 2 * i + 3], skip)
            yield skip

    @torch.inference_mode()
    def sample(self, seeds: Sequence[int], psi: float = DEFAULT_PSI, noise: NoiseMode = "const",
               resolution: int | None = None) -> Tensor:
        """Images [len(seeds), 3, r, r] for z = `z_from_seed(seed)`, truncated by psi."""
        return self.synthesis(self.seed_latents(seeds, psi), noise, resolution)

    def seed_latents(self, seeds: Sequence[int], psi: float = DEFAULT_PSI) -> Tensor:
        """w [len(seeds), style_dim] for z = `z_from_seed(seed)`, truncated by psi."""
        z = torch.stack([z_from_seed(s, self.style_dim) for s in seeds]).to(self.w_avg)
        return self.truncate(self.mapping(z), psi)

    # ----------------------------------------------------------------------- files

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Generator:
        """Load a rosinality `.pt` (dict with `g_ema`, or a bare state dict) or this
        project's format (a directory, or the `.safetensors` inside it).

        Never unpickles code (`torch.load(weights_only=True)`); refuses NVIDIA `.pkl`.
        """
        path = Path(path)
        if path.suffix == ".pkl":
            raise ValueError(f"{path} looks like an NVIDIA pickle, which runs code when "
                             "unpickled; refusing to load it. Convert it first with `python -m "
                             f"voiceface convert-generator {path} DIR` (reads it without running "
                             "anything) and use DIR.")
        if not path.exists():
            raise ValueError(f"Generator checkpoint not found: {path}")
        if path.is_dir() or path.suffix == ".safetensors":
            return cls._from_pretrained(path if path.is_dir() else path.parent)
        state, latent_avg = _read_rosinality(path)
        generator = cls(infer_config(state), seed=None)
        generator.metadata = {"source": path.name}
        generator._load(state, latent_avg)
        return generator

    @classmethod
    def _from_pretrained(cls, directory: Path) -> Generator:
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for needed in (config_path, weights_path):
            if not needed.is_file():
                raise ValueError(f"{directory} is not a saved generator: {needed.name} is missing")
        meta = json.loads(config_path.read_text())
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{config_path} is not a {FORMAT_NAME} config "
                             f"(format={meta.get('format')!r})")
        state = safetensors.torch.load_file(weights_path)
        generator = cls(GeneratorConfig.from_dict(meta["config"]), seed=None)
        generator.metadata = dict(meta.get("metadata", {}))
        generator._load(state, state.pop("w_avg", None))
        return generator

    def _load(self, state: dict[str, Tensor], w_avg: Tensor | None) -> None:
        """Strict load with readable errors; w_avg computed by `mean_w` when None."""
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
        problems = [f"{label} ({len(keys)}): {', '.join(keys[:5])}" + (", ..." * (len(keys) > 5))
                    for label, keys in [("missing keys", missing), ("unexpected keys", unexpected),
                                        ("wrong shapes", wrong)] if keys]
        if problems:
            raise ValueError("Checkpoint does not fit a StyleGAN2 generator of config "
                             f"{self.config}: " + "; ".join(problems))
        self.load_state_dict(state)
        if w_avg is None:
            self.w_avg.copy_(self.mean_w())
        elif w_avg.numel() != self.style_dim:
            raise ValueError(f"latent_avg has shape {list(w_avg.shape)}, "
                             f"expected [{self.style_dim}]")
        else:
            self.w_avg.copy_(w_avg.reshape(-1))

    def save_pretrained(self, directory: str | os.PathLike[str],
                        metadata: dict[str, str] | None = None) -> Path:
        """Write `generator.safetensors` (state dict + w_avg) and `generator.json` (config +
        metadata) into `directory`, each atomically. Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        tensors["w_avg"] = self.w_avg.detach().clone()
        storage.write_safetensors(directory / WEIGHTS_FILE, tensors)
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "config": self.config.to_dict(), "metadata": {**self.metadata, **(metadata or {})}}
        storage.write_json(directory / CONFIG_FILE, meta)
        return directory


def _read_levels(levels: Iterator[Tensor], allowed: list[int], wanted: list[int],
                 modes: tuple[bool, bool]) -> Iterator[Tensor]:
    """The images of `levels` (one per side in `allowed`) at the `wanted` sides, each level
    computed under `modes` (grad enabled, inference mode) as they were at the call. Images
    before the last are copies (the next level reads its own); after the last, `levels` is
    closed so its activations are freed before the caller gets the image."""
    grad, inference = modes
    for side in allowed[: allowed.index(wanted[-1]) + 1]:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            image = next(levels)
            if side == wanted[-1]:
                levels.close()
            elif side in wanted:
                image = image.clone()
        if side in wanted:
            yield image


def _read_rosinality(path: Path) -> tuple[dict[str, Tensor], Tensor | None]:
    """(state dict, latent_avg or None) of a rosinality checkpoint, tensors only."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only met something other than tensors
        found = re.search(r"GLOBAL (\S+)", str(exc))  # torch names the refused callable
        raise ValueError(
            f"{path} is not a tensors-only PyTorch checkpoint: it holds Python objects"
            f"{f' ({found.group(1)})' if found else ''} that could run code when loaded, so it "
            "is refused. Re-save just {'g_ema': state_dict, 'latent_avg': tensor} where the "
            "file is trusted (NVIDIA pickles and training checkpoints with `args` need this)."
        ) from None
    except Exception as exc:  # torch raises several types for broken files
        raise ValueError(f"Cannot read {path} as a tensors-only PyTorch checkpoint "
                         f"({type(exc).__name__}); it is damaged or not a checkpoint.") from exc
    if isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict):
        return obj["g_ema"], obj.get("latent_avg")
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return obj, None
    keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{path} is not a StyleGAN2 generator checkpoint: expected "
                     f"{{'g_ema': state_dict, 'latent_avg': tensor}} or a state dict, got {keys}")


def infer_config(state: dict[str, Tensor]) -> GeneratorConfig:
    """GeneratorConfig from the tensor shapes of a rosinality-layout state dict."""

    def indices(pattern: str) -> set[int]:
        return {int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))}

    try:
        n_up = len(indices(r"to_rgbs\.(\d+)\.conv\.weight"))
        channels = {MIN_RESOLUTION: state["conv1.conv.weight"].shape[1]}
        for i in range(n_up):
            channels[2 ** (i + 3)] = state[f"convs.{2 * i}.conv.weight"].shape[1]
        style_dim = state["style.1.weight"].shape[1]
    except KeyError as exc:
        raise ValueError(f"Not a StyleGAN2 generator state dict (rosinality layout): "
                         f"missing key {exc}") from exc
    return GeneratorConfig(size=2 ** (n_up + 2), style_dim=style_dim,
                           n_mlp=len(indices(r"style\.(\d+)\.weight")), channels=channels)


def convert_checkpoint(src: str | os.PathLike[str], dst_dir: str | os.PathLike[str]) -> Path:
    """Convert a rosinality `.pt` into this project's format (`save_pretrained` layout),
    recording the source file name and sha256 in the metadata. Returns dst_dir."""
    src = Path(src)
    generator = Generator.from_pretrained(src)
    metadata = {"source": src.name}
    if src.is_file():
        metadata["source_sha256"] = file_sha256(src)
    return generator.save_pretrained(dst_dir, metadata=metadata)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def z_from_seed(seed: int, dim: int = 512) -> Tensor:
    """z [dim] = numpy RandomState(seed).randn(dim), float32 (NVIDIA's seed convention)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(dim).astype(np.float32))


def to_pil(images: Tensor) -> list[Image.Image]:
    """images [N, 3, H, W] in [-1, 1] -> N RGB PIL images (clamped, uint8)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
    pixels = (images.detach() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]
