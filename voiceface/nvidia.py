"""Read NVIDIA StyleGAN2 pickles without running them, and convert them to this project's format.

Two formats are understood, both of which embed Python source that NVIDIA's own loaders
execute:

- TensorFlow StyleGAN2 (NVlabs/stylegan2, and StyleGAN2-ADA's TensorFlow release): a pickled
  tuple (G, D, Gs) of `dnnlib.tflib.network.Network` objects; each one's state holds
  `components` (Gs: `mapping`, `synthesis`) and `variables`, a list of (name, array).
- stylegan2-ada-pytorch: a dict with `G_ema` (and `G`, `D`, ...), whose modules are
  rebuilt by `torch_utils.persistence._reconstruct_persistent_obj(meta)`, the module's
  `__dict__` (`_parameters`, `_buffers`, `_modules`) in `meta["state"]`.

`SafeUnpickler` resolves only the array rebuilders of numpy and torch (wrapped so they
take array data only); any other global becomes an inert `Record` of the arguments and
state the pickle gives it. Nothing named in the file is imported or called, so the
embedded source (and any `os.system` a crafted file names) never runs.
Only the config-e/f "skip" generator without labels is converted (as `convert_checkpoint`
converts a rosinality `.pt`); anything else is refused with the variables that did not fit.
The result computes NVIDIA's function in float32 throughout; ada's optional clamping of
activations beyond +-256 (`conv_clamp`) is not reproduced.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from voiceface import stylegan2_ops as ops
from voiceface.stylegan2 import Generator, GeneratorConfig, file_sha256, infer_config

try:  # numpy >= 2 moved the array rebuilders to numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

TF_NETWORK = "dnnlib.tflib.network.Network"
ADA_RECONSTRUCT = "torch_utils.persistence._reconstruct_persistent_obj"
TF_MIN_VERSION = 4  # Network state version of StyleGAN2 pickles (older ones are StyleGAN1)
RESAMPLE_FILTER = ops.FIR_KERNEL / 4  # ada's stored [1, 3, 3, 1] filter (normalised to sum 1)
FILTER_TOLERANCE = 1e-6  # max abs difference for a stored filter to count as [1, 3, 3, 1]
SHOWN_NAMES = 8  # variable / callable names listed in an error message


# ------------------------------------------------------------------- safe unpickling


class Record:
    """Inert stand-in for an object of a class the allowlist does not resolve: it keeps the
    constructor arguments, `__setstate__` state and dict/list items the pickle gives it and
    never runs anything. `qualname` is the `module.name` the pickle referred to."""

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        record = super().__new__(cls)
        record.args, record.kwargs, record.state = args, kwargs, None
        record.items, record.list = {}, []
        return record

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list.append(value)

    def extend(self, values: Any) -> None:
        self.list.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _reconstruct_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array rebuilder asked for {subtype!r}, not numpy.ndarray")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy scalar of {dtype!r} refused (numbers only)")
    return _multiarray.scalar(dtype, data)


def _array_from_buffer(buffer: Any, dtype: Any, shape: Any, order: str = "C",
                       axis_order: Any = None) -> np.ndarray:
    """Protocol 5's array rebuilder (`numpy._core.numeric._frombuffer`), for numbers only."""
    if not isinstance(buffer, bytes | bytearray | pickle.PickleBuffer) or (
            not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F", "K")):
        raise pickle.UnpicklingError(f"array from buffer refused for dtype {dtype!r}")
    array = np.frombuffer(buffer, dtype)
    if order == "K":  # the strides' order, given as a permutation of C order
        return array.reshape(shape).transpose(axis_order).copy()
    return array.reshape(shape, order=order).copy()


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_ignored: Any) -> Tensor:
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise pickle.UnpicklingError(f"tensor rebuilder got {type(storage).__name__}, "
                                     "not a storage")
    return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> Tensor:
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilder got {type(data).__name__}, not a tensor")
    return data  # requires_grad, hooks and Python state are of no use for conversion


def _load_storage(data: Any) -> Any:
    """torch pickles each storage as a legacy `torch.save` stream; torch's tensors-only
    loader reads it."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"storage loader got {type(data).__name__}, not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """Protocols 0-2 store bytes as `_codecs.encode(text, "latin1")`; nothing else is allowed."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode refused for {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls: Any, _base: Any, state: Any = None) -> Record:
    """Protocol 0/1 object creation (`copyreg._reconstructor`), for inert classes only."""
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise pickle.UnpicklingError(f"copyreg._reconstructor refused for {cls!r}")
    record = cls()
    record.state = state
    return record


ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct_array
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _numpy_scalar
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _array_from_buffer
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,  # its Python 2 name, in protocols 0-2
    ("_codecs", "encode"): _latin1_bytes,
}


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals are the `ALLOWED` rebuilders or inert `Record`
    classes; `unresolved` collects the names that became records."""

    def __init__(self, file: Any):
        super().__init__(file)
        self.unresolved: dict[str, type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        qualname = f"{module}.{name}"
        if qualname not in self.unresolved:
            self.unresolved[qualname] = type(name, (Record,), {"qualname": qualname})
        return self.unresolved[qualname]


def safe_load(path: str | os.PathLike[str]) -> tuple[Any, list[str]]:
    """(object, names of the callables that became inert records) of the pickle at `path`."""
    with open(path, "rb") as f:
        unpickler = SafeUnpickler(f)
        try:
            obj = unpickler.load()
        except Exception as exc:  # malformed files raise many types
            raise ValueError(f"Cannot read {path} as a pickle ({type(exc).__name__}: {exc}); "
                             "it is damaged or not an NVIDIA network pickle.") from None
    return obj, sorted(unpickler.unresolved)


# --------------------------------------------------------------------- the formats


def _state(obj: Any) -> Any:
    """What a record was built from: `meta["state"]` of an ada persistent object, else the
    `__setstate__` state (or dict items)."""
    if isinstance(obj, Record) and obj.qualname == ADA_RECONSTRUCT:
        meta = obj.args[0] if obj.args else None
        return meta.get("state") if isinstance(meta, dict) else None
    if isinstance(obj, Record):
        return obj.state if obj.state is not None else obj.items
    return obj


def _array(name: str, value: Any) -> Tensor:
    """A float32 tensor of a numeric array, tensor or number, else ValueError naming it."""
    if isinstance(value, Tensor):
        value = value.detach().numpy()
    value = np.asarray(value) if isinstance(value, np.ndarray | np.generic | float) else value
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise ValueError(f"variable {name} is {type(value).__name__}, not a numeric array")
    return torch.from_numpy(np.array(value, dtype=np.float32))


def _tf_params(gs: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """({"mapping/Dense0/weight": tensor, ...}, static kwargs) of a TensorFlow Gs network."""
    state = _state(gs)
    if not isinstance(state, dict):
        raise ValueError("the TensorFlow Gs network has no state dict")
    version = state.get("version", 0)
    if not isinstance(version, int) or version < TF_MIN_VERSION:
        raise ValueError(f"TensorFlow network state version {version} < {TF_MIN_VERSION}: "
                         "a StyleGAN1 (or older) pickle, which this converter does not handle.")
    params: dict[str, Tensor] = {}

    def collect(prefix: str, net: Any) -> None:
        net_state = _state(net)
        if not isinstance(net_state, dict):
            raise ValueError(f"TensorFlow network {prefix or 'Gs'} has no state dict")
        for entry in net_state.get("variables", []):
            if not (isinstance(entry, tuple | list) and len(entry) == 2
                    and isinstance(entry[0], str)):
                raise ValueError(f"TensorFlow network {prefix or 'Gs'} has a malformed "
                                 "variable list (expected (name, array) pairs)")
            params[prefix + entry[0]] = _array(prefix + entry[0], entry[1])
        for name, component in dict(net_state.get("components", {})).items():
            collect(f"{prefix}{name}/", component)

    collect("", gs)
    return params, dict(_state(state.get("static_kwargs")) or {})


def _take(params: dict[str, Tensor], out: dict[str, tuple[str, Tensor]], key: str, name: str,
          rearrange: Any) -> None:
    """Move variable `name` out of `params` into `out[key]` as (name, rearrange(tensor))."""
    if name not in params:
        raise ValueError(f"the pickle has no variable {name} (needed for {key})")
    tensor = params.pop(name)
    try:
        out[key] = (name, rearrange(tensor))
    except RuntimeError:  # wrong number of dimensions for the layout change
        raise ValueError(f"variable {name} has shape {list(tensor.shape)}, which cannot be "
                         f"{key}") from None


def _tf_to_rosinality(p: dict[str, Tensor], size: int,
                      n_mlp: int) -> dict[str, tuple[str, Tensor]]:
    """rosinality key -> (TensorFlow variable, tensor in rosinality layout). TF stores conv
    weights [kh, kw, in, out] and dense weights [in, out], raw (gain applied at run time,
    as rosinality does); its style bias gets +1 at run time (rosinality stores it added)
    and its up-sampling conv runs flipped kernels (rosinality stores them flipped)."""
    out: dict[str, tuple[str, Tensor]] = {}

    def put(key: str, name: str, fn: Any) -> None:
        _take(p, out, key, name, fn)

    def modconv(target: str, src: str, flip: bool = False, rgb: bool = False) -> None:
        put(f"{target}.conv.weight", f"{src}/weight",
            lambda t: (t.flip(0, 1) if flip else t).permute(3, 2, 0, 1)[None])
        put(f"{target}.conv.modulation.weight", f"{src}/mod_weight", lambda t: t.t())
        put(f"{target}.conv.modulation.bias", f"{src}/mod_bias", lambda t: t + 1)
        if rgb:
            put(f"{target}.bias", f"{src}/bias", lambda t: t.reshape(1, -1, 1, 1))
        else:
            put(f"{target}.noise.weight", f"{src}/noise_strength", lambda t: t.reshape(1))
            put(f"{target}.activate.bias", f"{src}/bias", lambda t: t)

    for i in range(n_mlp):
        put(f"style.{i + 1}.weight", f"mapping/Dense{i}/weight", lambda t: t.t())
        put(f"style.{i + 1}.bias", f"mapping/Dense{i}/bias", lambda t: t)
    put("input.input", "synthesis/4x4/Const/const", lambda t: t)
    modconv("conv1", "synthesis/4x4/Conv")
    modconv("to_rgb1", "synthesis/4x4/ToRGB", rgb=True)
    for i, res in enumerate(2**k for k in range(3, int(math.log2(size)) + 1)):
        modconv(f"convs.{2 * i}", f"synthesis/{res}x{res}/Conv0_up", flip=True)
        modconv(f"convs.{2 * i + 1}", f"synthesis/{res}x{res}/Conv1")
        modconv(f"to_rgbs.{i}", f"synthesis/{res}x{res}/ToRGB", rgb=True)
    for j in range(2 * int(math.log2(size)) - 3):
        put(f"noises.noise_{j}", f"synthesis/noise{j}", lambda t: t)
    return out


def _ada_params(g_ema: Any) -> dict[str, Tensor]:
    """{"mapping.fc0.weight": tensor, ...}: parameters and buffers of an ada module tree."""
    params: dict[str, Tensor] = {}

    def collect(prefix: str, module: Any) -> None:
        state = _state(module)
        if not isinstance(state, dict) or "_parameters" not in state:
            raise ValueError(f"{prefix or 'G_ema'} is not a stylegan2-ada-pytorch module")
        for group in ("_parameters", "_buffers"):
            for name, value in dict(_state(state[group]) or {}).items():
                if value is not None:
                    params[prefix + name] = _array(prefix + name, value)
        for name, child in dict(_state(state.get("_modules")) or {}).items():
            collect(f"{prefix}{name}.", child)

    collect("", g_ema)
    return params


def _ada_to_rosinality(p: dict[str, Tensor], size: int,
                       n_mlp: int) -> dict[str, tuple[str, Tensor]]:
    """rosinality key -> (ada parameter, tensor in rosinality layout). ada stores weights
    [out, in, kh, kw] raw like rosinality (gains at run time), its style bias with the +1
    and its up-sampling kernels as rosinality does; it drops the leading 1 of conv weights."""
    out: dict[str, tuple[str, Tensor]] = {}

    def put(key: str, name: str, fn: Any) -> None:
        _take(p, out, key, name, fn)

    def layer(target: str, src: str, rgb: bool = False, noise: int | None = None) -> None:
        put(f"{target}.conv.weight", f"{src}.weight", lambda t: t[None])
        put(f"{target}.conv.modulation.weight", f"{src}.affine.weight", lambda t: t)
        put(f"{target}.conv.modulation.bias", f"{src}.affine.bias", lambda t: t)
        if rgb:
            put(f"{target}.bias", f"{src}.bias", lambda t: t.reshape(1, -1, 1, 1))
            return
        put(f"{target}.noise.weight", f"{src}.noise_strength", lambda t: t.reshape(1))
        put(f"{target}.activate.bias", f"{src}.bias", lambda t: t)
        put(f"noises.noise_{noise}", f"{src}.noise_const", lambda t: t[None, None])

    for i in range(n_mlp):
        put(f"style.{i + 1}.weight", f"mapping.fc{i}.weight", lambda t: t)
        put(f"style.{i + 1}.bias", f"mapping.fc{i}.bias", lambda t: t)
    put("input.input", "synthesis.b4.const", lambda t: t[None])
    layer("conv1", "synthesis.b4.conv1", noise=0)
    layer("to_rgb1", "synthesis.b4.torgb", rgb=True)
    for i, res in enumerate(2**k for k in range(3, int(math.log2(size)) + 1)):
        layer(f"convs.{2 * i}", f"synthesis.b{res}.conv0", noise=2 * i + 1)
        layer(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", noise=2 * i + 2)
        layer(f"to_rgbs.{i}", f"synthesis.b{res}.torgb", rgb=True)
    for name in [n for n in p if n.endswith("resample_filter")]:
        if (p[name].shape != RESAMPLE_FILTER.shape
                or (p.pop(name) - RESAMPLE_FILTER).abs().max() > FILTER_TOLERANCE):
            raise ValueError(f"{name} is not the [1, 3, 3, 1] filter this generator uses")
    return out


def _count(pattern: str, names: Any) -> int:
    return len({m.group(1) for n in names if (m := re.fullmatch(pattern, n))})


def read_pickle(path: str | os.PathLike[str]) -> tuple[Generator, str]:
    """(Generator, format name) of an NVIDIA StyleGAN2 pickle, read by `safe_load`.

    ValueError if the file is not one of the two formats, the generator is not a
    config-e/f "skip" generator with z width = w width and no labels, or a variable is
    missing, unexpected or of the wrong shape (each named).
    """
    obj, unresolved = safe_load(path)
    if isinstance(obj, tuple) and obj and getattr(obj[-1], "qualname", "") == TF_NETWORK:
        fmt, (params, kwargs) = "TensorFlow StyleGAN2", _tf_params(obj[-1])
        dense, res_pattern = r"mapping/Dense(\d+)/weight", r"synthesis/(\d+)x\d+/Conv1/weight"
        # `lod` (progressive-growing level, 0 for a finished network) drives nothing here.
        w_avg, ignored = params.pop("dlatent_avg", None), {"lod", "synthesis/lod"}
        if kwargs.get("architecture", "skip") != "skip" or kwargs.get("label_size", 0):
            raise ValueError(f"{path}: a generator with architecture="
                             f"{kwargs.get('architecture')!r}, label_size="
                             f"{kwargs.get('label_size')!r}; only the unconditional 'skip' "
                             "generator (configs e and f) can be converted.")
        convert = _tf_to_rosinality
    elif isinstance(obj, dict) and isinstance(obj.get("G_ema"), Record):
        fmt, params = "stylegan2-ada-pytorch", _ada_params(obj["G_ema"])
        dense, res_pattern = r"mapping\.fc(\d+)\.weight", r"synthesis\.b(\d+)\.conv1\.weight"
        w_avg, ignored, convert = params.pop("mapping.w_avg", None), set(), _ada_to_rosinality
    else:
        found = type(obj).__name__ if not isinstance(obj, Record) else obj.qualname
        names = ", ".join(unresolved[:SHOWN_NAMES]) or "none"
        raise ValueError(f"{path} is not a StyleGAN2 pickle in a known format (a TensorFlow "
                         f"(G, D, Gs) tuple or a stylegan2-ada-pytorch dict with G_ema): found "
                         f"{found}. It names these Python callables, none of which were run: "
                         f"{names}.")
    size = max((int(m.group(1)) for n in params if (m := re.fullmatch(res_pattern, n))),
               default=0)
    n_mlp = _count(dense, params)
    if size < 4 or n_mlp < 1:
        raise ValueError(f"{path}: no synthesis convolutions or mapping layers found in this "
                         f"{fmt} pickle (variables: {', '.join(list(params)[:SHOWN_NAMES])}); "
                         "only StyleGAN2 generators can be converted (not StyleGAN3 or 1).")
    converted = convert(params, size, n_mlp)
    left = sorted(set(params) - ignored)
    if left:
        raise ValueError(f"{path}: unexpected variables for a StyleGAN2 'skip' generator "
                         f"({len(left)}): {', '.join(left[:SHOWN_NAMES])}; labels, other "
                         "architectures and extra layers cannot be converted.")
    state = {key: tensor for key, (_, tensor) in converted.items()}
    try:
        config = infer_config(state)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{path}: the {fmt} variables do not form a StyleGAN2 generator: "
                         f"{exc}") from None
    generator = Generator(config, seed=None)
    for key, expected in generator.state_dict().items():
        if key in state and state[key].shape != expected.shape:
            name, found = converted[key][0], list(state[key].shape)
            raise ValueError(f"{path}: variable {name} converts to shape {found}, but {key} of "
                             f"a {describe(config)} generator needs {list(expected.shape)}")
        if key not in state:  # the fixed up-sampling kernels are not stored by either format
            state[key] = expected.clone()
    generator._load(state, w_avg)
    return generator, fmt


def describe(config: GeneratorConfig) -> str:
    """One line: resolution, style width, mapping layers and channels per resolution."""
    channels = " ".join(f"{res}:{ch}" for res, ch in config.channels.items())
    return (f"{config.size} px, style dim {config.style_dim}, {config.n_mlp} mapping layers, "
            f"channels per resolution {channels}")


def convert_pickle(src: str | os.PathLike[str],
                   dst_dir: str | os.PathLike[str]) -> tuple[Path, str]:
    """Convert an NVIDIA pickle to this project's format (as `convert_checkpoint` writes it).
    Returns (dst_dir, a line naming the format and architecture found)."""
    src = Path(src)
    generator, fmt = read_pickle(src)
    metadata = {"source": src.name, "source_sha256": file_sha256(src), "source_format": fmt}
    directory = generator.save_pretrained(dst_dir, metadata=metadata)
    return directory, f"found a {fmt} generator: {describe(generator.config)}"
