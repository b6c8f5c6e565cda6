"""voiceface.nvidia: NVIDIA StyleGAN2 pickles are converted without running anything in them.

The tests write tiny pickles of both formats themselves, with the object structure NVIDIA's
code pickles (classes recorded under NVIDIA's module names through stand-in modules, and
embedded source that would create a marker file if it ran), filled with the tiny32
reference weights rearranged into each format's layout; the converted generator must
reproduce the reference images.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from voiceface import cli
from voiceface import stylegan2_ops as ops
from voiceface.nvidia import convert_pickle, read_pickle
from voiceface.loading import load_generator
from voiceface.stylegan2 import Generator

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2"
TOLERANCE = 1e-4  # max abs difference allowed against the reference implementation
SIZE, N_MLP = 32, 2  # the tiny32 reference generator
ARCHITECTURE = ("32 px, style dim 32, 2 mapping layers, channels per resolution "
                "4:32 8:32 16:16 32:8")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "reading the pickle ran code from it"


def embedded_source(marker: Path) -> str:
    """Module source that NVIDIA's loaders would exec: here it creates `marker`."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"


def stand_in(monkeypatch, dotted: str, **members: object) -> None:
    """Register module `dotted` (and its parents) holding `members` under their names, so
    that pickle records them as `dotted.name`, as NVIDIA's own classes are recorded."""
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]),
                            types.ModuleType(".".join(parts[:i])))
    for name, member in members.items():
        member.__module__, member.__qualname__ = dotted, name
        setattr(sys.modules[dotted], name, member)


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(FIXTURES / "tiny32.expected.npz").items()}


@pytest.fixture(scope="module")
def rosinality() -> dict[str, torch.Tensor]:
    checkpoint = torch.load(FIXTURES / "stylegan2-tiny32.pt", weights_only=True)
    return {**checkpoint["g_ema"], "latent_avg": checkpoint["latent_avg"]}


def levels() -> list[tuple[int, int]]:
    """(i, resolution) of each up-sampling level: (0, 8), (1, 16), (2, 32)."""
    return [(i, 2 ** (i + 3)) for i in range(int(np.log2(SIZE)) - 2)]


# ------------------------------------------------------------------ the two formats


def tf_variables(s: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The reference weights as TensorFlow StyleGAN2 Gs variables (component/name)."""
    v: dict[str, np.ndarray] = {}
    for i in range(N_MLP):
        v[f"mapping/Dense{i}/weight"] = s[f"style.{i + 1}.weight"].T.numpy()
        v[f"mapping/Dense{i}/bias"] = s[f"style.{i + 1}.bias"].numpy()

    def modconv(src: str, name: str, up: bool = False, rgb: bool = False) -> None:
        weight = s[f"{src}.conv.weight"][0].permute(2, 3, 1, 0)  # [kh, kw, in, out]
        v[f"{name}/weight"] = (weight.flip(0, 1) if up else weight).numpy()
        v[f"{name}/mod_weight"] = s[f"{src}.conv.modulation.weight"].T.numpy()
        v[f"{name}/mod_bias"] = (s[f"{src}.conv.modulation.bias"] - 1).numpy()
        if rgb:
            v[f"{name}/bias"] = s[f"{src}.bias"].reshape(3).numpy()
        else:  # TensorFlow returns scalar variables as numpy scalars
            v[f"{name}/noise_strength"] = np.float32(s[f"{src}.noise.weight"].item())
            v[f"{name}/bias"] = s[f"{src}.activate.bias"].numpy()

    v["synthesis/4x4/Const/const"] = s["input.input"].numpy()
    modconv("conv1", "synthesis/4x4/Conv")
    modconv("to_rgb1", "synthesis/4x4/ToRGB", rgb=True)
    for i, r in levels():
        modconv(f"convs.{2 * i}", f"synthesis/{r}x{r}/Conv0_up", up=True)
        modconv(f"convs.{2 * i + 1}", f"synthesis/{r}x{r}/Conv1")
        modconv(f"to_rgbs.{i}", f"synthesis/{r}x{r}/ToRGB", rgb=True)
    for j in range(2 * len(levels()) + 1):
        v[f"synthesis/noise{j}"] = s[f"noises.noise_{j}"].numpy()
    v["dlatent_avg"], v["lod"] = s["latent_avg"].numpy(), np.float32(0)
    return v


def write_tf_pickle(path: Path, variables: dict[str, np.ndarray], marker: Path, monkeypatch,
                    protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    """(G, D, Gs) of `dnnlib.tflib.network.Network` objects as the TensorFlow code pickles
    them; G and D are stubs, Gs holds `variables`."""

    class Network:
        def __init__(self, name: str, own: dict[str, np.ndarray], **components: Network):
            self.state = {"version": 4, "name": name, "static_kwargs": {"resolution": SIZE},
                          "components": components, "build_module_src": embedded_source(marker),
                          "build_func_name": name, "variables": list(own.items())}

        def __getstate__(self) -> dict:
            return self.state

    stand_in(monkeypatch, "dnnlib.tflib.network", Network=Network)
    parts: dict[str, dict[str, np.ndarray]] = {"mapping": {}, "synthesis": {}, "": {}}
    for name, value in variables.items():
        head, _, rest = name.partition("/")
        component = head if rest and head in parts else ""
        parts[component][rest if component else name] = value
    gs = Network("G_main", parts[""], mapping=Network("G_mapping", parts["mapping"]),
                 synthesis=Network("G_synthesis_stylegan2", parts["synthesis"]))
    path.write_bytes(pickle.dumps((Network("G", {}), Network("D", {}), gs), protocol=protocol))
    return path


def ada_tensors(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference weights as stylegan2-ada-pytorch G_ema parameters and buffers."""
    t: dict[str, torch.Tensor] = {"mapping.w_avg": s["latent_avg"]}
    for i in range(N_MLP):
        t[f"mapping.fc{i}.weight"] = s[f"style.{i + 1}.weight"]
        t[f"mapping.fc{i}.bias"] = s[f"style.{i + 1}.bias"]

    def layer(src: str, name: str, noise: int | None = None) -> None:
        t[f"{name}.weight"] = s[f"{src}.conv.weight"][0]
        t[f"{name}.affine.weight"] = s[f"{src}.conv.modulation.weight"]
        t[f"{name}.affine.bias"] = s[f"{src}.conv.modulation.bias"]
        if noise is None:
            t[f"{name}.bias"] = s[f"{src}.bias"].reshape(3)
            return
        t[f"{name}.noise_strength"] = s[f"{src}.noise.weight"].reshape(())
        t[f"{name}.bias"] = s[f"{src}.activate.bias"]
        t[f"{name}.noise_const"] = s[f"noises.noise_{noise}"][0, 0]
        t[f"{name}.resample_filter"] = ops.FIR_KERNEL / 4

    t["synthesis.b4.const"] = s["input.input"][0]
    layer("conv1", "synthesis.b4.conv1", noise=0)
    layer("to_rgb1", "synthesis.b4.torgb")
    for i, r in levels():
        t[f"synthesis.b{r}.resample_filter"] = ops.FIR_KERNEL / 4
        layer(f"convs.{2 * i}", f"synthesis.b{r}.conv0", noise=2 * i + 1)
        layer(f"convs.{2 * i + 1}", f"synthesis.b{r}.conv1", noise=2 * i + 2)
        layer(f"to_rgbs.{i}", f"synthesis.b{r}.torgb")
    return t


BUFFERS = ("w_avg", "noise_const", "resample_filter")  # the rest are parameters


def write_ada_pickle(path: Path, tensors: dict[str, torch.Tensor], marker: Path,
                     monkeypatch, extra: dict | None = None) -> Path:
    """A network-snapshot dict as stylegan2-ada-pytorch pickles it: G_ema and its modules
    reduced to `torch_utils.persistence._reconstruct_persistent_obj(meta)`."""

    def _reconstruct_persistent_obj(meta: dict) -> None:
        raise AssertionError("the test only pickles")

    stand_in(monkeypatch, "torch_utils.persistence",
             _reconstruct_persistent_obj=_reconstruct_persistent_obj)

    class Module:
        def __init__(self, class_name: str):
            self.class_name = class_name
            self.state = {"training": False, "_parameters": OrderedDict(),
                          "_buffers": OrderedDict(), "_non_persistent_buffers_set": set(),
                          "_modules": OrderedDict(), "_init_kwargs": {"img_channels": 3}}

        def __reduce__(self):
            meta = {"type": "class", "version": 4, "module_src": embedded_source(marker),
                    "class_name": self.class_name, "state": self.state}
            return _reconstruct_persistent_obj, (meta,)

    root = Module("training.networks.Generator")
    for name, tensor in tensors.items():
        *path_parts, leaf = name.split(".")
        module = root
        for part in path_parts:
            module = module.state["_modules"].setdefault(part, Module(f"training.networks.{part}"))
        if leaf in BUFFERS:
            module.state["_buffers"][leaf] = tensor.clone()
        else:
            module.state["_parameters"][leaf] = torch.nn.Parameter(tensor.clone(), False)
    snapshot = {"G": Module("training.networks.Generator"), "D": None, "G_ema": root,
                "augment_pipe": None, "training_set_kwargs": {"resolution": SIZE},
                **(extra or {})}
    path.write_bytes(pickle.dumps(snapshot))
    return path


def assert_matches_reference(g: Generator, reference: dict[str, torch.Tensor]) -> None:
    assert g.config.size == SIZE and g.config.n_mlp == N_MLP
    assert torch.equal(g.w_avg, reference["latent_avg"])
    with torch.inference_mode():
        w = g.mapping(reference["z"])
        assert (w - reference["w"]).abs().max() < TOLERANCE
        for psi, key in [(0.7, "img_trunc07"), (1.0, "img_trunc1")]:
            image = g.synthesis(g.truncate(w, psi))
            assert (image - reference[key]).abs().max() < TOLERANCE
        image = g.synthesis(reference["wplus"])
        assert (image - reference["img_wplus"]).abs().max() < TOLERANCE


# ------------------------------------------------------------------------- tests


@pytest.mark.parametrize("protocol", [1, 2, pickle.HIGHEST_PROTOCOL])
def test_tensorflow_pickle_converts_to_the_reference(tmp_path, monkeypatch, marker, rosinality,
                                                     reference, protocol):
    pkl = write_tf_pickle(tmp_path / "tf.pkl", tf_variables(rosinality), marker, monkeypatch,
                          protocol)
    monkeypatch.delitem(sys.modules, "dnnlib")  # the converter must not need NVIDIA's code
    g, fmt = read_pickle(pkl)
    assert fmt == "TensorFlow StyleGAN2"
    assert_matches_reference(g, reference)


def test_pickles_written_with_numpy_1_names_convert(tmp_path, monkeypatch, marker, rosinality,
                                                   reference):
    # Published TensorFlow pickles name numpy 1's modules; protocol 2 spells globals as text.
    pkl = write_tf_pickle(tmp_path / "tf.pkl", tf_variables(rosinality), marker, monkeypatch, 2)
    pkl.write_bytes(pkl.read_bytes().replace(b"numpy._core.", b"numpy.core."))
    assert b"numpy.core.multiarray\n_reconstruct" in pkl.read_bytes()
    assert_matches_reference(read_pickle(pkl)[0], reference)


def test_ada_pickle_converts_to_the_reference(tmp_path, monkeypatch, marker, rosinality,
                                              reference):
    pkl = write_ada_pickle(tmp_path / "ada.pkl", ada_tensors(rosinality), marker, monkeypatch,
                           extra={"augment_pipe": Payload(marker)})  # inert, never called
    monkeypatch.delitem(sys.modules, "torch_utils")
    g, fmt = read_pickle(pkl)
    assert fmt == "stylegan2-ada-pytorch"
    assert_matches_reference(g, reference)


@pytest.mark.parametrize("fmt", ["tf", "ada"])
def test_cli_converts_prints_the_architecture_and_the_result_loads(
        tmp_path, monkeypatch, marker, rosinality, reference, capsys, fmt):
    if fmt == "tf":
        pkl = write_tf_pickle(tmp_path / "g.pkl", tf_variables(rosinality), marker, monkeypatch)
    else:
        pkl = write_ada_pickle(tmp_path / "g.pkl", ada_tensors(rosinality), marker, monkeypatch)
    assert cli.main(["convert-generator", str(pkl), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert ARCHITECTURE in printed and f"wrote {tmp_path / 'out'}" in printed
    g = Generator.from_pretrained(tmp_path / "out")
    assert g.metadata["source"] == "g.pkl" and len(g.metadata["source_sha256"]) == 64
    assert_matches_reference(g, reference)
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    loaded, _ = load_generator(tmp_path / "out")
    assert_matches_reference(loaded, reference)


@pytest.mark.slow
def test_a_pickle_that_runs_a_command_is_refused_and_it_does_not_run(tmp_path, marker):
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match=r"not a StyleGAN2 pickle in a known format.*none of "
                                         r"which were run: posix\.system"):
        read_pickle(pkl)
    proc = subprocess.run([sys.executable, "-m", "voiceface", "convert-generator", str(pkl),
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "none of which were run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_loading_a_pickle_is_still_refused_outside_conversion(tmp_path, monkeypatch, marker,
                                                              rosinality):
    pkl = write_ada_pickle(tmp_path / "g.pkl", ada_tensors(rosinality), marker, monkeypatch)
    with pytest.raises(ValueError, match="NVIDIA pickle.*convert-generator"):
        Generator.from_pretrained(pkl)


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.pop("synthesis/noise3"),
     r"no variable synthesis/noise3 \(needed for noises.noise_3\)"),
    (lambda v: v.update({"synthesis/16x16/Conv1/weight": np.zeros((3, 3, 16, 8), np.float32)}),
     r"variable synthesis/16x16/Conv1/weight converts to shape \[1, 8, 16, 3, 3\], but "
     r"convs.3.conv.weight of a 32 px.*needs \[1, 16, 16, 3, 3\]"),
    (lambda v: v.update({"mapping/LabelEmbed/weight": np.zeros((4, 32), np.float32)}),
     r"unexpected variables .*\(1\): mapping/LabelEmbed/weight"),
])
def test_variables_that_do_not_fit_are_named(tmp_path, monkeypatch, marker, rosinality,
                                             edit, message):
    variables = tf_variables(rosinality)
    edit(variables)
    pkl = write_tf_pickle(tmp_path / "bad.pkl", variables, marker, monkeypatch)
    with pytest.raises(ValueError, match=message):
        convert_pickle(pkl, tmp_path / "out")
    assert not (tmp_path / "out").exists()
