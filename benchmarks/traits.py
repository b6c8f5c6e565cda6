"""Fit the apparent-sex classifier that voiceface ships, and measure it on held-out speakers.

The development set is 100 LibriSpeech speakers (one read recording each, 50 female, 50 male,
labels.tsv: their recorded sex; ../shared/fixtures/librispeech-sex). Every figure printed is
on speakers the measured model never saw:
- a 70/30 split by speaker (stratified by sex, fixed seed 0): the recipe fitted on the 70,
  tested on the 30;
- 5-fold cross-validation by speaker over all 100 (stratified, fixed seed): the recipe fitted
  five times, each speaker predicted by the model fitted without them. This is the held-out
  figure README quotes: it is the larger sample of the two.
Each is reported on the whole recordings (10-16 s) and on their non-overlapping 4 s crops (as
short as visitors speak), as agreement on the answered clips with its Wilson 95 % interval,
beside the share answered and a pitch-only baseline (the best median-F0 threshold on the
training speakers). The classifier written to voiceface/data/voice_sex.json is then the recipe
fitted on all 100 speakers (its own figures are the cross-validation's).

The recipe: features from `voiceface.traits.voice_features` of every whole recording and of
its 4 s crops; L2-regularised logistic regression on standardised features (Newton's method,
each speaker weighing the same whatever its number of clips), its strength chosen by an inner
5-fold cross-validation by speaker on the training part; the "unsure" threshold is the
confidence that the inner folds' held-out clips reach on `ANSWER_SHARE` of them (each speaker
weighing the same).
With --cost, only the cost of `voiceface.traits.measure` on a 5 s query is measured (median of
COST_RUNS, after one first call).
Usage (repository root): python -m benchmarks.traits [--no-write | --cost]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
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
COST_SECONDS = 5.0  # s, the query whose measuring cost --cost reports
COST_RUNS = 15
ANSWER_SHARE = 0.965  # the classifier aims to answer this share of held-out clips
L2_CHOICES = (0.3, 1.0, 3.0, 10.0, 30.0)  # regularisation strengths tried by the inner folds
NEWTON_STEPS = 30


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
        weight = 1.0 / np.bincount(speaker[mine])[speaker[mine]]  # each speaker counts once
        q = np.clip(p[mine], 1e-12, 1 - 1e-12)
        loss = -np.average(y[mine] * np.log(q) + (1 - y[mine]) * np.log(1 - q), weights=weight)
        if best is None or loss < best[0]:
            best = loss, l2, np.maximum(q, 1 - q), weight
    _, l2, confidence, weight = best
    order = np.argsort(confidence)
    below = np.cumsum(weight[order]) / weight.sum()  # share of the weight at or below each
    threshold = float(confidence[order][np.searchsorted(below, 1 - ANSWER_SHARE)])
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


def cost(root: Path) -> None:
    """Seconds that `traits.measure` takes on the first COST_SECONDS of the first recording."""
    first = next(csv.DictReader((root / "labels.tsv").open(), delimiter="\t"))["file"]
    wav = load_audio(root / first)[:int(COST_SECONDS * SAMPLE_RATE)]
    start = time.perf_counter()
    traits.measure(wav)
    print(f"first call {time.perf_counter() - start:.3f} s (reads the classifier)")
    runs = []
    for _ in range(COST_RUNS):
        start = time.perf_counter()
        traits.measure(wav)
        runs.append(time.perf_counter() - start)
    print(f"measure, {COST_SECONDS:g} s of speech: {statistics.median(runs):.3f} s (median of "
          f"{COST_RUNS}; min {min(runs):.3f}, max {max(runs):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-write", action="store_true",
                        help=f"do not write {OUT.name} (figures only)")
    parser.add_argument("--cost", action="store_true",
                        help="only measure the cost of one 5 s query")
    args = parser.parse_args()
    if args.cost:
        cost(args.data)
        return
    x, y, speaker, whole, files = dataset(args.data)
    sexes = _sexes(y, speaker)
    everyone = np.arange(len(files))
    # 1. 70/30 by speaker (seed 0)
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
    q, t, c = (np.concatenate(v["whole"]) for v in (p, truth, confident))
    held = np.concatenate([np.sort(h) for h in speaker_folds(sexes, everyone, FOLDS, SEED)])
    for k, p_male, male, sure in zip(held, q, t, c):
        if not sure or (p_male > 0.5) != (male > 0.5):
            print(f"    {files[k]} ({'M' if male else 'F'}, median F0 {np.exp(x[whole][k, 0]):.0f}"
                  f" Hz): p(male) {p_male:.2f}, {'answered' if sure else 'unsure'}")
    # 3. what ships: the recipe on all 100 (its held-out figures are the cross-validation's)
    model = fit(x, y, speaker, everyone, SEED)
    print(f"shipped: fitted on all {len(everyone)} speakers (l2 {model.fit['l2']:g}, unsure "
          f"below confidence {model.threshold:.3f})")
    model = traits.SexClassifier(model.mean, model.scale, model.weights, model.bias,
                                 model.threshold, {
                                     "l2": model.fit["l2"], "seed": SEED,
                                     "data": "LibriSpeech train-clean-100, 100 speakers "
                                             "(../shared/fixtures/librispeech-sex)",
                                     "train_files": files,
                                     "held_out_split": {
                                         "test_files": [files[i] for i in test], **split},
                                     "cross_validation": cv,
                                     "command": "python -m benchmarks.traits"})
    if not args.no_write:
        OUT.write_text(json.dumps(model.to_dict(), indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
