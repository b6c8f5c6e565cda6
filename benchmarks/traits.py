"""Fit the apparent-sex classifier that voiceface ships, and measure it on held-out speakers.

The development set is 100 LibriSpeech speakers (one read recording each, 50 female, 50 male,
labels.tsv: their recorded sex; ../shared/fixtures/librispeech-sex). Every number here is on
speakers not used for fitting:
- a 70/30 split by speaker (stratified by sex, fixed seed): the classifier fitted on the 70 is
  the one written to voiceface/data/voice_sex.json, so its held-out figure is the shipped
  file's own;
- 5-fold cross-validation by speaker (stratified, fixed seed): the same recipe fitted five
  times, so the figure is not one lucky split.
Each is reported on the whole recordings (10-16 s) and on their non-overlapping 4 s crops (as
short as visitors speak), as agreement on the answered files with its Wilson 95 % interval,
beside the share answered and a pitch-only baseline (the best median-F0 threshold on the
training speakers).

The recipe: features from `voiceface.traits.voice_features` of every whole recording and of
its 4 s crops; L2-regularised logistic regression on standardised features (Newton's method,
each speaker weighing the same whatever its number of clips), its strength chosen by an inner
5-fold cross-validation by speaker on the training part; the "unsure" threshold is the
confidence that the inner folds' held-out clips reach on `ANSWER_SHARE` of them.

With --trackers, the pitch trackers are compared first (octave errors against the trackers'
consensus, seconds per 10 s of speech); that needs `pip install pyworld==0.3.5` (which
voiceface does not use).
Usage (repository root): python -m benchmarks.traits [--trackers] [--no-write]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from voiceface import traits
from voiceface.audio import SAMPLE_RATE, load_audio
from voiceface.metrics import wilson_ci95

DATA = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "librispeech-sex"
OUT = Path(traits.__file__).parent / "data" / traits.CLASSIFIER_FILE
SEED = 0
TEST_SHARE = 0.3  # of the speakers, held out
FOLDS = 5  # cross-validation by speaker (outer and inner)
CROP_SECONDS = 4.0  # s, visitors' clip length
ANSWER_SHARE = 0.95  # the classifier answers on at least this share of held-out clips
L2_CHOICES = (1.0, 3.0, 10.0, 30.0)  # regularisation strengths tried by the inner folds
NEWTON_STEPS = 30
OCTAVE_RATIO = 1.4  # a speaker's median F0 this far from the consensus is an octave error


def dataset(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Features [N, FEATURES] of every recording and its 4 s crops, p(male) targets [N] (0/1),
    speaker index [N], whole-recording flag [N], and the files (one per speaker)."""
    rows = list(csv.DictReader((root / "labels.tsv").open(), delimiter="\t"))
    crop = int(CROP_SECONDS * SAMPLE_RATE)
    x, y, speaker, whole = [], [], [], []
    for k, row in enumerate(rows):
        wav = load_audio(root / row["file"])
        clips = [wav] + [wav[i:i + crop] for i in range(0, len(wav) - crop + 1, crop)]
        for j, clip in enumerate(clips):
            x.append(traits.voice_features(clip, row["file"])[1])
            y.append(float(row["sex"] == "M"))
            speaker.append(k)
            whole.append(j == 0)
    return (np.array(x), np.array(y), np.array(speaker), np.array(whole),
            [row["file"] for row in rows])


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Weighted L2 logistic regression on standardised x [N, F]: (mean, scale, weights, bias)."""
    mean = np.average(x, axis=0, weights=weight)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weight))
    z = np.c_[np.ones(len(x)), (x - mean) / scale]
    penalty = l2 * np.eye(z.shape[1])
    penalty[0, 0] = 0.0  # the bias is not shrunk
    beta = np.zeros(z.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-z @ beta))
        gradient = z.T @ (weight * (p - y)) + penalty @ beta
        hessian = (z * (weight * p * (1 - p))[:, None]).T @ z + penalty
        beta -= np.linalg.solve(hessian, gradient)
    return mean, scale, beta[1:], float(beta[0])


def speaker_folds(sexes: np.ndarray, speakers: np.ndarray, folds: int, seed: int
                  ) -> list[np.ndarray]:
    """`speakers` cut into `folds` groups, each sex spread evenly over them."""
    rng = np.random.default_rng(seed)
    groups: list[list[int]] = [[] for _ in range(folds)]
    for sex in (0.0, 1.0):
        chosen = rng.permutation(speakers[sexes[speakers] == sex])
        for i, s in enumerate(chosen):
            groups[i % folds].append(int(s))
    return [np.array(sorted(g)) for g in groups]


def fit(x: np.ndarray, y: np.ndarray, speaker: np.ndarray, train: np.ndarray, seed: int
        ) -> traits.SexClassifier:
    """The recipe on the clips of speakers `train`: l2 and the unsure threshold from inner
    folds, then one fit on them all."""
    sexes = _sexes(y, speaker)
    inner = speaker_folds(sexes, train, FOLDS, seed + 1)
    best = None
    for l2 in L2_CHOICES:
        p = np.empty(len(y))
        for held in inner:
            fitted = np.isin(speaker, train) & ~np.isin(speaker, held)
            p[np.isin(speaker, held)] = _model(x, y, speaker, fitted, l2, 0.5) \
                .probability_male(x[np.isin(speaker, held)])
        mine = np.isin(speaker, train)
        loss = -np.mean(y[mine] * np.log(p[mine]) + (1 - y[mine]) * np.log(1 - p[mine]))
        if best is None or loss < best[0]:
            best = loss, l2, np.maximum(p[mine], 1 - p[mine])
    _, l2, confidence = best
    threshold = float(np.quantile(confidence, 1 - ANSWER_SHARE))
    return _model(x, y, speaker, np.isin(speaker, train), l2, threshold)


def _model(x, y, speaker, rows, l2, threshold) -> traits.SexClassifier:
    weight = 1.0 / np.bincount(speaker[rows])[speaker[rows]]  # each speaker counts once
    mean, scale, weights, bias = fit_logistic(x[rows], y[rows], weight, l2)
    return traits.SexClassifier(mean, scale, weights, bias, threshold, {"l2": l2})


def _sexes(y: np.ndarray, speaker: np.ndarray) -> np.ndarray:
    sexes = np.zeros(speaker.max() + 1)
    sexes[speaker] = y
    return sexes


def score(p: np.ndarray, answered: np.ndarray, truth: np.ndarray) -> dict:
    """Agreement of p(male) [N] with `truth` [N] on the `answered` clips [N] (bool), with its
    Wilson 95 % interval, and the share answered."""
    right = int(np.sum((p[answered] > 0.5) == (truth[answered] > 0.5)))
    n = int(answered.sum())
    low, high = wilson_ci95(right, n)
    return {"agreement": right / n, "ci95": [round(low, 4), round(high, 4)],
            "right": right, "answered": n, "clips": len(p),
            "answered_share": n / len(p),
            "agreement_all": float(np.mean((p > 0.5) == (truth > 0.5)))}


def pitch_baseline(x: np.ndarray, y: np.ndarray, whole: np.ndarray, train: np.ndarray,
                   speaker: np.ndarray) -> float:
    """The median-F0 threshold that best separates the training speakers' recordings."""
    rows = whole & np.isin(speaker, train)
    f0 = np.sort(x[rows, 0])
    cuts = (f0[1:] + f0[:-1]) / 2
    return float(cuts[np.argmax([np.mean((x[rows, 0] < c) == (y[rows] > 0.5)) for c in cuts])])


def describe(name: str, result: dict) -> str:
    low, high = result["ci95"]
    return (f"{name:<34} {result['agreement']:.1%} agree on the answered "
            f"({result['right']}/{result['answered']}, 95 % CI {low:.1%}-{high:.1%}), "
            f"answered {result['answered_share']:.1%} of {result['clips']}; "
            f"all clips {result['agreement_all']:.1%}")


def evaluate(x, y, speaker, whole, train, test, model) -> dict:
    """The model's and the pitch baseline's figures on speakers `test`, whole and 4 s."""
    cut = pitch_baseline(x, y, whole, train, speaker)
    out = {}
    for name, rows in (("whole", whole), ("4s", ~whole)):
        held = rows & np.isin(speaker, test)
        q = model.probability_male(x[held])
        out[name] = score(q, np.maximum(q, 1 - q) >= model.threshold, y[held])
        pitch = (x[held, 0] < cut).astype(float)  # 1 = male: F0 below the cut
        out[f"pitch_only_{name}"] = float(np.mean(pitch == y[held]))
    return out


def compare_trackers(root: Path) -> None:
    """Median F0 per speaker by each tracker; octave errors against their consensus."""
    import parselmouth
    import pyworld
    import torch
    import torchaudio

    def praat(w):
        pitch = parselmouth.Sound(w.astype(np.float64), SAMPLE_RATE).to_pitch_ac(
            time_step=traits.FRAME_STEP, pitch_floor=traits.PITCH_FLOOR,
            pitch_ceiling=traits.PITCH_CEILING)
        return pitch.selected_array["frequency"]

    def world(method):
        def run(w):
            x = w.astype(np.float64)
            f0, t = method(x, SAMPLE_RATE, f0_floor=traits.PITCH_FLOOR,
                           f0_ceil=traits.PITCH_CEILING, frame_period=1000 * traits.FRAME_STEP)
            return pyworld.stonemask(x, f0, t, SAMPLE_RATE) if method is pyworld.dio else f0
        return run

    def detect(w):
        return torchaudio.functional.detect_pitch_frequency(
            torch.from_numpy(w), SAMPLE_RATE, freq_low=int(traits.PITCH_FLOOR)).numpy()

    trackers = {"praat autocorrelation (parselmouth)": praat,
                "WORLD harvest (pyworld)": world(pyworld.harvest),
                "WORLD dio + stonemask (pyworld)": world(pyworld.dio),
                "torchaudio detect_pitch_frequency": detect}
    rows = list(csv.DictReader((root / "labels.tsv").open(), delimiter="\t"))
    medians = {k: [] for k in trackers}
    per_10s = {k: [] for k in trackers}
    for row in rows:
        wav = load_audio(root / row["file"])
        for name, track in trackers.items():
            start = time.perf_counter()
            f0 = track(wav)
            per_10s[name].append((time.perf_counter() - start) * 10 * SAMPLE_RATE / len(wav))
            medians[name].append(np.median(f0[f0 > 0]))
    consensus = np.median(np.array(list(medians.values())), axis=0)
    print(f"pitch trackers on {len(rows)} speakers (octave error: median F0 off the trackers' "
          f"consensus by a factor {OCTAVE_RATIO} or more)")
    for name in trackers:
        ratio = np.array(medians[name]) / consensus
        errors = int(np.sum((ratio >= OCTAVE_RATIO) | (ratio <= 1 / OCTAVE_RATIO)))
        print(f"  {name:<38} octave errors {errors:>3}   {np.median(per_10s[name]):.3f} s "
              "per 10 s (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--trackers", action="store_true", help="compare pitch trackers first")
    parser.add_argument("--no-write", action="store_true",
                        help=f"do not write {OUT.name} (figures only)")
    args = parser.parse_args()
    if args.trackers:
        compare_trackers(args.data)
    x, y, speaker, whole, files = dataset(args.data)
    sexes = _sexes(y, speaker)
    everyone = np.arange(len(files))
    # 1. 70/30 by speaker: the shipped classifier is the one fitted on the 70
    test = np.concatenate(speaker_folds(sexes, everyone, 10, SEED)[:round(10 * TEST_SHARE)])
    train = np.setdiff1d(everyone, test)
    model = fit(x, y, speaker, train, SEED)
    split = evaluate(x, y, speaker, whole, train, test, model)
    print(f"held-out split: fitted on {len(train)} speakers, tested on {len(test)} others "
          f"(l2 {model.fit['l2']:g}, unsure below confidence {model.threshold:.3f})")
    for name in ("whole", "4s"):
        print(describe(f"  {name} recordings" if name == "whole" else "  4 s crops",
                       split[name]) + f"; pitch only {split[f'pitch_only_{name}']:.1%}")
    # 2. 5-fold cross-validation by speaker: the recipe fitted five times
    p = {"whole": [], "4s": []}
    confident = {"whole": [], "4s": []}
    truth = {"whole": [], "4s": []}
    for held in speaker_folds(sexes, everyone, FOLDS, SEED):
        fold_model = fit(x, y, speaker, np.setdiff1d(everyone, held), SEED)
        for name, rows in (("whole", whole), ("4s", ~whole)):
            rows = rows & np.isin(speaker, held)
            q = fold_model.probability_male(x[rows])
            p[name].append(q)
            confident[name].append(np.maximum(q, 1 - q) >= fold_model.threshold)
            truth[name].append(y[rows])
    cv = {}
    for name in ("whole", "4s"):
        q, t, c = (np.concatenate(v[name]) for v in (p, truth, confident))
        cv[name] = score(q, c, t)  # each fold answers by its own threshold
        print(describe(f"  5-fold CV, {name if name == 'whole' else '4 s crops'}", cv[name]))
    model = traits.SexClassifier(model.mean, model.scale, model.weights, model.bias,
                                 model.threshold, {
                                     "l2": model.fit["l2"], "seed": SEED,
                                     "data": "LibriSpeech train-clean-100, 100 speakers "
                                             "(../shared/fixtures/librispeech-sex)",
                                     "train_files": [files[i] for i in train],
                                     "held_out": split, "cross_validation": cv,
                                     "command": "python -m benchmarks.traits"})
    if not args.no_write:
        OUT.write_text(json.dumps(model.to_dict(), indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
