"""From a voice embedding to a StyleGAN2 latent: a small MLP, and a kNN fallback without one.

`VoiceToLatent` predicts the offset of w from a centre it stores: the population centre of
the people it was trained on (`voiceface.gallery.population_centre`; the generator's `w_avg`
only when there is none). Its last layer starts at zero, so an untrained mapper draws that
centre. The centre travels with the weights, so a mapper's predictions stay the same when the
gallery's centre moves (an enrollment) until it is retrained. It is saved as `mapper.json`
(config + the fingerprints of the encoder and generator it was trained for + the ids of the
people it was trained on) beside `mapper.safetensors`. The ids let a loader refuse a mapper
that still holds someone deleted from the gallery (`voiceface.derived.load_derived`).

A mapper may also take the voice's traits (`voiceface.traits`) beside the embedding, so that
pitch reaches the face even where the embedding carries it weakly: `TRAIT_FEATURES`, each
standardised by the mean and scale of the rows it was trained on (saved in its config; an
unknown trait, a clip without voiced speech, is that mean). A mapper saved without traits
loads and predicts as before. What the features are, and how they are measured (per encoder
window), is `voiceface.trait_inputs`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from . import storage
from .trait_inputs import TRAIT_FEATURES, voice_traits_fingerprint

CONFIG_FILE = "mapper.json"
WEIGHTS_FILE = "mapper.safetensors"
KNN_TEMPERATURE = 0.05  # cosine units; softmax(score / T) weights the neighbours' latents
BATCH_SIZE = 256  # rows per optimisation step
LEGACY_CENTRE_KEY = "w_avg"  # the centre's key in mapper files trained around w_avg; still read
# `train_mapper` settings for galleries of tens of people (the personas, live enrollment)
SMALL_MAPPER = {"hidden": 256, "max_epochs": 500, "patience": 50}
TRAIT_SCALE_FLOOR = 0.05  # log Hz (under a semitone) and probability: a trait that hardly
# varies among the trained people is not blown up into a large input


@dataclass(frozen=True)
class MapperConfig:
    """Architecture and provenance of a mapper."""

    in_dim: int
    out_dim: int
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.1
    encoder_fingerprint: str = ""
    generator_fingerprint: str = ""
    people: tuple[str, ...] | None = None  # ids trained on (validation included); None: unknown
    traits: tuple[str, ...] = ()  # TRAIT_FEATURES taken beside the embedding; () for none
    trait_mean: tuple[float, ...] = ()  # per trait: the trained rows' mean (raw units) ...
    trait_scale: tuple[float, ...] = ()  # ... and standard deviation (at least the floor)
    traits_fingerprint: str = ""  # how the traits were measured (`voice_traits_fingerprint()`)

    def __post_init__(self) -> None:
        for key in ("people", "traits", "trait_mean", "trait_scale"):  # JSON lists when loaded
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.traits != TRAIT_FEATURES[:len(self.traits)]:
            raise ValueError(f"This mapper takes the voice traits {list(self.traits)}, but this "
                             f"version of voiceface measures {list(TRAIT_FEATURES)}; retrain it "
                             "(`python -m voiceface build`).")
        if not len(self.trait_mean) == len(self.trait_scale) == len(self.traits) or not (
                np.isfinite(self.trait_mean).all() and (np.asarray(self.trait_scale) > 0).all()):
            raise ValueError("The mapper's trait standardisation is damaged (one finite mean and "
                             "one positive scale per trait needed); retrain it (`python -m "
                             "voiceface build`).")


@dataclass(frozen=True)
class TrainReport:
    """What `train_mapper` did: losses are mean squared error per w coordinate."""

    best_epoch: int
    train_loss: float
    val_loss: float | None
    baseline_val_loss: float | None  # predicting the centre for everyone
    val_people: list[str]
    history: list[tuple[int, float, float | None]]


class VoiceToLatent(nn.Module):
    """MLP: voice embedding e [N, in_dim], with standardised traits t [N, len(traits)] when the
    config names any -> w = centre + f([e, t]) [N, out_dim]."""

    def __init__(self, config: MapperConfig, centre: torch.Tensor):
        super().__init__()
        if centre.shape != (config.out_dim,):
            raise ValueError(f"centre has shape {tuple(centre.shape)}; expected "
                             f"({config.out_dim},).")
        self.config = config
        dims = [config.in_dim + len(config.traits)] + [config.hidden] * config.layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.GELU(), nn.Dropout(config.dropout)]
        last = nn.Linear(dims[-1], config.out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*blocks, last)
        self.register_buffer("centre", centre.detach().float().clone())

    @property
    def takes_traits(self) -> bool:
        """Whether the mapper takes the voice's traits beside the embedding."""
        return bool(self.config.traits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, in_dim + len(traits)]: embeddings, then standardised traits (`_inputs`)."""
        assert x.ndim == 2 and x.shape[1] == self.config.in_dim + len(self.config.traits), \
            x.shape
        return self.centre + self.net(x)

    @torch.inference_mode()
    def predict(self, embedding: np.ndarray, traits: np.ndarray | None = None) -> np.ndarray:
        """w [out_dim] for one embedding [in_dim] (and its trait features
        [len(TRAIT_FEATURES)], `trait_features`), or [N, out_dim] for [N, in_dim] (and
        [N, len(TRAIT_FEATURES)]). Without traits, a mapper that takes them puts the trained
        rows' mean values in their place."""
        e = np.asarray(embedding, dtype=np.float32)
        x = _inputs(self.config, e.reshape(-1, e.shape[-1]), traits)
        w = self.eval()(torch.from_numpy(x))
        return w.numpy().reshape(*e.shape[:-1], self.config.out_dim)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `mapper.safetensors` then `mapper.json` into `directory`, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        storage.write_safetensors(directory / WEIGHTS_FILE, self.state_dict())
        storage.write_json(directory / CONFIG_FILE, asdict(self.config))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *,
                        encoder_fingerprint: str | None = None,
                        generator_fingerprint: str | None = None) -> "VoiceToLatent":
        """Load a saved mapper; refuse one trained for another encoder or generator."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"No mapper in {directory} (expected {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE}).")
        config = MapperConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        for what, wanted in (("encoder", encoder_fingerprint),
                             ("generator", generator_fingerprint)):
            stored = getattr(config, f"{what}_fingerprint")
            if wanted is not None and stored != wanted:
                raise ValueError(f"The mapper in {directory} was trained for {what} {stored!r}, "
                                 f"not the configured {wanted!r}. Retrain it "
                                 "(`python -m voiceface build`) or configure that " + what + ".")
        state = load_file(directory / WEIGHTS_FILE)
        if LEGACY_CENTRE_KEY in state:  # the same tensor under that file's key
            state["centre"] = state.pop(LEGACY_CENTRE_KEY)
        mapper = cls(config, state["centre"])
        mapper.load_state_dict(state)
        return mapper.eval()


def train_mapper(
    embeddings: np.ndarray,
    latents: np.ndarray,
    groups: Sequence[str],
    centre: np.ndarray,
    *,
    traits: np.ndarray | None = None,
    hidden: int = 512,
    layers: int = 2,
    dropout: float = 0.1,
    encoder_fingerprint: str = "",
    generator_fingerprint: str = "",
    val_fraction: float = 0.2,
    max_epochs: int = 2000,
    patience: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    refit: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> tuple[VoiceToLatent, TrainReport]:
    """Fit a mapper on (embedding [N, D], latent [N, W]) rows; `groups[i]` is row i's person.

    `centre` [W] is what the mapper predicts offsets from: the population centre of the
    people's latents (`voiceface.gallery.population_centre`). `traits` [N, TRAIT_FEATURES]:
    each row's raw trait features (`voiceface.trait_inputs`; NaN where unknown), taken
    beside the embedding, standardised over the rows that have them; None: embedding only.

    Validation holds out whole people (`val_fraction` of them), so the score says how the
    mapper does on voices it never saw. The mapper records every group, held-out ones
    included, as the people it was trained on (`config.people`). Training stops when the validation loss has not
    improved for `patience` epochs; with `refit` the mapper is then trained afresh on all
    rows for the best number of epochs. Deterministic for a given `seed`.
    """
    x = np.asarray(embeddings, np.float32)
    y = np.asarray(latents, np.float32)
    groups = np.asarray([str(g) for g in groups])
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(groups) != len(x):
        raise ValueError(f"Need embeddings [N, D], latents [N, W] and N group labels; got "
                         f"{x.shape}, {y.shape} and {len(groups)}.")
    people = sorted(set(groups))
    if len(people) < 2:
        raise ValueError(f"Training a mapper needs at least 2 people with latents; got "
                         f"{len(people)}.")
    rng = np.random.default_rng(seed)
    n_val = min(len(people) - 1, max(1, round(val_fraction * len(people)))) \
        if val_fraction > 0 else 0
    val_people = sorted(rng.permutation(people)[:n_val].tolist())
    is_val = np.isin(groups, val_people)
    config = MapperConfig(x.shape[1], y.shape[1], hidden, layers, dropout,
                          encoder_fingerprint, generator_fingerprint, people=tuple(people),
                          **({} if traits is None else _standardisation(traits, len(x))))
    x = _inputs(config, x, traits)
    centre_t = torch.from_numpy(np.asarray(centre, np.float32))
    fit = dict(lr=lr, weight_decay=weight_decay, seed=seed, progress=progress)

    mapper, best_epoch, history = _fit(config, centre_t, x[~is_val], y[~is_val], x[is_val],
                                       y[is_val], max_epochs, patience, **fit)
    val_loss = _mse(mapper, x[is_val], y[is_val]) if n_val else None
    baseline = float(np.mean((y[is_val] - centre_t.numpy()) ** 2)) if n_val else None
    if refit and n_val:
        mapper, _, _ = _fit(config, centre_t, x, y, x[:0], y[:0], best_epoch, None, **fit)
    report = TrainReport(best_epoch, _mse(mapper, x, y), val_loss, baseline, val_people,
                         history)
    return mapper, report


def _fit(config: MapperConfig, centre: torch.Tensor, x: np.ndarray, y: np.ndarray,
         x_val: np.ndarray, y_val: np.ndarray, epochs: int, patience: int | None, *,
         lr: float, weight_decay: float, seed: int, progress: bool
         ) -> tuple[VoiceToLatent, int, list[tuple[int, float, float | None]]]:
    """Adam on MSE; with validation rows, keep the best epoch and stop after `patience`."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mapper = VoiceToLatent(config, centre)
    optimiser = torch.optim.AdamW(mapper.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    best = (float("inf"), 0, copy.deepcopy(mapper.state_dict()))
    history: list[tuple[int, float, float | None]] = []
    bar = tqdm(range(1, epochs + 1), desc="training mapper", disable=not progress, leave=False)
    for epoch in bar:
        mapper.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            loss = torch.mean((mapper(xt[idx]) - yt[idx]) ** 2)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        val = _mse(mapper, x_val, y_val) if len(x_val) else None
        history.append((epoch, total / len(xt), val))
        if val is None:
            continue
        bar.set_postfix(val=f"{val:.4f}")
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(mapper.state_dict()))
        elif patience is not None and epoch - best[1] >= patience:
            break
    bar.close()
    if len(x_val):
        mapper.load_state_dict(best[2])
        return mapper.eval(), best[1], history
    return mapper.eval(), epochs, history


@torch.inference_mode()
def _mse(mapper: VoiceToLatent, x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error on network inputs `x` (`_inputs`)."""
    return float(np.mean((mapper.eval()(torch.from_numpy(x)).numpy() - y) ** 2))


def _inputs(config: MapperConfig, embedding: np.ndarray, traits: np.ndarray | None
            ) -> np.ndarray:
    """The network's input [N, in_dim + len(traits)] for embeddings [N, in_dim] and raw trait
    features [N, TRAIT_FEATURES] (`voiceface.trait_inputs`): standardised, unknown ones (NaN,
    or `traits` None) at the trained rows' mean. A config without traits ignores `traits`."""
    e = np.asarray(embedding, np.float32)
    if e.ndim != 2 or e.shape[1] != config.in_dim:
        raise ValueError(f"Embedding has {e.shape[-1]} dimensions; this mapper takes "
                         f"{config.in_dim}. Was it trained with another encoder?")
    if not config.traits:
        return e
    n = len(config.traits)
    t = np.full((len(e), n), np.nan) if traits is None else \
        np.asarray(traits, np.float64).reshape(len(e), -1)[:, :n]
    z = (t - np.asarray(config.trait_mean)) / np.asarray(config.trait_scale)
    return np.concatenate([e, np.nan_to_num(z, nan=0.0)], axis=1).astype(np.float32)


def _standardisation(traits: np.ndarray, rows: int) -> dict:
    """MapperConfig's trait fields for raw trait features [rows, TRAIT_FEATURES]."""
    t = np.asarray(traits, np.float64)
    if t.shape != (rows, len(TRAIT_FEATURES)):
        raise ValueError(f"Need trait features [N, {len(TRAIT_FEATURES)}] for the N = {rows} "
                         f"embeddings; got {t.shape}.")
    known = ~np.isnan(t)
    if not known.any(axis=0).all():
        raise ValueError("Some trait has no value in any row (no voiced speech anywhere?); "
                         "train without traits (traits=None).")
    mean = np.array([t[known[:, j], j].mean() for j in range(t.shape[1])])
    scale = np.array([t[known[:, j], j].std() for j in range(t.shape[1])])
    return {"traits": TRAIT_FEATURES, "trait_mean": tuple(mean.tolist()),
            "trait_scale": tuple(np.maximum(scale, TRAIT_SCALE_FLOOR).tolist()),
            "traits_fingerprint": voice_traits_fingerprint()}


def knn_blend(scores: np.ndarray, latents: np.ndarray,
              temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """Similarity-weighted blend of the nearest people's latents: softmax(scores / T) @ latents.

    scores [k] cosine similarities, latents [k, W] -> w [W].
    """
    scores = np.asarray(scores, np.float64)
    latents = np.asarray(latents, np.float32)
    if scores.ndim != 1 or latents.ndim != 2 or len(scores) != len(latents) or not len(scores):
        raise ValueError(f"Need scores [k] and latents [k, W] with k >= 1; got {scores.shape} "
                         f"and {latents.shape}.")
    weights = np.exp((scores - scores.max()) / temperature)
    weights /= weights.sum()
    return (weights @ latents).astype(np.float32)
