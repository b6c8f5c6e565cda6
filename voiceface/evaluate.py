"""Honest evaluation of a built bundle: `python -m voiceface eval PEOPLE_DIR --bundle index/`.

Identification (closed and open set). Each person's last recording is held out; the rest
enrolls them. A person with one recording had it split in time by `build` before it was
cut into windows (`voice.split_for_evaluation`: samples [0, cut) enroll, [cut, end) are
held out, cut = 70 % of the recording; each part is windowed on its own), so no held-out
window shares a sample with the enrollment. Every held-out 10 s window is a trial against
the gallery of all N people: top-1 / top-5 accuracy (chance k/N), verification EER over all
(trial, person) scores, and the open-set threshold at a chosen false-alarm rate: the score
an *unenrolled* voice's best match stays under, estimated by removing each trial's own
person from the gallery (`voiceface.metrics.threshold_at_far`; with T trials the finest
rate is 1/T, and the report gives the rate achieved). The gallery's own calibration, set by
`build`, is reported beside it.

Generation. K folds over identities: the mapper is trained on the other folds' people only
and predicts each held-out person's w from their voice. Retrieval of the true w among all N
people's latents (Euclidean in W), R@1/5/10 against chance, and 1:2 matching (is the
prediction nearer the true latent than another person's?) with a 95 % bootstrap interval
over people; against three baselines: the population mean (the training people's mean
latent, what the mapper is centred on: a guess that knows the population but not the voice),
the generator's w_avg (FFHQ's average face) and the kNN blend of the training people's
latents. The mapper's face is "better than guessing" only if its 1:2 matching interval lies
above the population mean's score; the report says plainly whether it does. It also gives
the mean distance of the mapper's (untruncated) latents for held-out people to the population
centre and to w_avg: faces that stay in the population are far nearer the first.

Verification. The same held-out windows as 1:1 trials, raw cosine against AS-norm
(`voiceface.verification_eval`); the DET curve goes to det.png.

The mapper takes each person's voice traits as the gallery records them (mean pitch and
apparent-sex score, `voiceface.trait_inputs`), as the app's mapper takes a query's.

Face to voice. The reverse direction on the same K identity folds, next to the mean voice
and the kNN blend (`voiceface.face2voice.evaluate_bundle`).

Trait agreement. The same held-out predictions, read for traits
(`voiceface.trait_agreement`): the apparent sex and age band of each generated face (the
mapper's, the kNN blend's, the population mean's) against the person's own face, by the
face-trait model `bundle.json` names (or `face_traits`); the apparent sex of the voices
suggested for each face against the person's own voice. Each with its 95 % Wilson interval,
the share answered, and chance (the majority share). With random weights these figures mean
nothing; without a face-trait model the voice-to-face part says why it is missing.
The metrics themselves are pure functions in `voiceface.metrics`; this module holds the
protocol (which windows enroll, which are trials, which people train the mapper) and the
report. `apply_threshold` alone changes the gallery.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from . import storage
from .build import WINDOWS_FILE, WINDOWS_INDEX
from .calibration import FALSE_ALARM_RATE, Calibration, calibrate
from .face2voice import evaluate_bundle as evaluate_face2voice
from .face2voice import markdown as face2voice_markdown
from .enrolled import Enrolled
from .mapper import knn_blend, train_mapper
from .metrics import eer, identity_folds, ranks, recall_at_k, retrieval
from .bundle import BUNDLE_FILE, GALLERY_DIR, BundleSpec
from .loading import spec_generator
from .population import population_centre
from .trait_agreement import HeldOutFaces, measure_face_to_voice, measure_voice_to_face
from .trait_agreement import markdown as traits_markdown
from .trait_inputs import TRAITS_KEY, record_features
from .verification_eval import evaluate_verification, plot_det
from .verification_eval import markdown as verification_markdown
from .voice import HELD_OUT_PART, pool

EVAL_METHOD = ("eval: best score of each held-out window against the other people's "
               "enrollment embeddings")
PLOT_MARGIN = 0.1  # of the plotted scores' spread, added either side
MIN_PLOT_SPREAD = 1e-3  # cosine; the narrowest range plotted (when all scores are equal)
PLOT_BINS = 40
BAR_GROUP_WIDTH = 0.8  # x units (one per R@k) taken by one group of method bars
FOLDS = 5
POPULATION_MEAN, W_AVG = "population-mean", "w_avg"  # the baselines that ignore the voice
TRAIT_METHODS = ("mapper", "knn-blend", POPULATION_MEAN)  # faces whose traits are read


def evaluate(bundle: str | Path, *, folds: int = FOLDS, far: float = FALSE_ALARM_RATE,
             seed: int = 0, progress: bool = False, w_avg: np.ndarray | None = None,
             face_traits: str | None = None) -> dict:
    """Evaluate the bundle in directory `bundle` (built by `voiceface.build`) and return the report.

    `w_avg` [latent_dim]: the generator's average latent for the w_avg baseline; default
    that of the generator the bundle's `bundle.json` names (none without one: the baseline
    and the distances to w_avg are then left out). `face_traits`: the face-trait model
    (directory or Hub id) the trait-agreement section reads faces with, instead of the one
    `bundle.json` names; without either, that section says so."""
    bundle = Path(bundle)
    if not (bundle / WINDOWS_FILE).is_file():
        raise FileNotFoundError(f"{bundle} has no {WINDOWS_FILE}; build it with `python -m "
                                "voiceface build PEOPLE_DIR --out DIR` first.")
    enrolled = Enrolled.load(bundle / GALLERY_DIR)
    gallery = enrolled.gallery
    windows = np.load(bundle / WINDOWS_FILE)
    rows = json.loads((bundle / WINDOWS_INDEX).read_text())
    ids = [p.id for p in gallery.people]
    by_person: dict[str, list[int]] = {}  # person -> their rows of windows, in order
    for i, row in enumerate(rows):
        by_person.setdefault(row["person"], []).append(i)
    enroll, trials = {}, []
    for person, (kept, held) in held_out_split(ids, rows, by_person).items():
        enroll[person] = pool(windows[kept])
        trials += [(person, windows[i]) for i in held]
    calibration = enrolled.calibrations.open_set
    spec = BundleSpec.read(bundle) if (bundle / BUNDLE_FILE).is_file() else None
    generator = spec_generator(spec)[0] if spec is not None else None
    if w_avg is None and generator is not None:
        w_avg = generator.w_avg.cpu().numpy()
    generation, generated, held_faces = _generation(enrolled, ids, windows, by_person, w_avg,
                                                    folds, seed, progress)
    face2voice, held_voices = evaluate_face2voice(bundle, gallery, folds=folds, seed=seed,
                                                  progress=progress)
    report = {"people": len(ids), "seed": seed, "folds": folds, "false_alarm_rate": far,
              "gallery_calibration": calibration and calibration.to_dict(),
              "identification": _identification(ids, enroll, trials, far,
                                                 gallery.encoder_fingerprint),
              "verification": evaluate_verification(ids, enroll, trials, far,
                                                    enrolled.calibrations.verification),
              "generation": generation, "generated_latents": generated,
              "face2voice": face2voice,
              "traits": {"voice_to_face": measure_voice_to_face(gallery, spec, generator,
                                                                held_faces, face_traits),
                         "face_to_voice": measure_face_to_voice(gallery, held_voices)}}
    return report


def apply_threshold(bundle: str | Path, calibration: dict) -> None:
    """Make the report's `identification["calibration"]` the gallery's "confident match"
    threshold (what the app uses), recorded with how it was measured."""
    enrolled = Enrolled.load(Path(bundle) / GALLERY_DIR)
    enrolled.calibrations.calibrate(Calibration.from_dict(calibration))
    enrolled.save(Path(bundle) / GALLERY_DIR)


def held_out_split(ids: list[str], rows: list[dict],
                   by_person: dict[str, list[int]]) -> dict[str, tuple[list[int], list[int]]]:
    """{id: (enrollment rows, held-out rows)} of the windows' `rows`: the held-out ones are
    a person's last recording, or the held-out part of a single one (none when it had none).
    People left with no enrollment rows are left out."""
    split = {}
    for person in ids:
        mine = [(i, rows[i]) for i in by_person.get(person, [])]
        recordings = sorted({r["recording"] for _, r in mine})
        if len(recordings) > 1:
            held = [i for i, r in mine if r["recording"] == recordings[-1]]
        else:
            held = [i for i, r in mine if r.get("part") == HELD_OUT_PART]
        held_rows = set(held)
        kept = [i for i, _ in mine if i not in held_rows]
        if kept:
            split[person] = (kept, held)
    return split


def _identification(ids: list[str], enroll: dict, trials: list, far: float,
                    encoder_fingerprint: str) -> dict:
    order = [i for i in ids if i in enroll]
    if not trials or len(order) < 2:
        return {"note": "too little held-out audio for identification (need 2+ people with "
                        "more than one 10 s window)"}
    matrix = np.stack([enroll[i] for i in order])
    position = {p: j for j, p in enumerate(order)}
    truth = np.array([position[p] for p, _ in trials])
    scores = np.stack([e for _, e in trials]) @ matrix.T  # [T, N]
    rank_of_truth = ranks(scores, truth)
    genuine = scores[np.arange(len(truth)), truth]
    mask = np.ones_like(scores, bool)
    mask[np.arange(len(truth)), truth] = False
    impostor = scores[mask]
    non_mated_best = np.where(mask, scores, -np.inf).max(axis=1)  # own person removed
    calibration = calibrate(non_mated_best, far, encoder_fingerprint, EVAL_METHOD)
    threshold = calibration.threshold
    correct_top1 = rank_of_truth == 0
    n = len(order)
    return {
        "trials": len(trials), "gallery_size": n,
        "top1": recall_at_k(rank_of_truth, 1), "top5": recall_at_k(rank_of_truth, 5),
        "chance_top1": 1 / n, "chance_top5": min(5, n) / n,
        "eer": eer(genuine, impostor),
        "open_set_threshold": threshold, "calibration": calibration.to_dict(),
        "detection_and_identification_rate": float(np.mean(correct_top1 & (genuine >= threshold))),
        "genuine_scores": genuine.round(4).tolist(), "impostor_scores_sample":
            np.sort(impostor)[:: max(1, len(impostor) // 500)].round(4).tolist(),
        "non_mated_best_scores": non_mated_best.round(4).tolist(),
    }


def _generation(enrolled: Enrolled, ids: list[str], windows: np.ndarray,
                person_rows: dict[str, list[int]], w_avg: np.ndarray | None, folds: int,
                seed: int, progress: bool) -> tuple[dict, dict | None, HeldOutFaces | None]:
    """Retrieval scores per method, the mapper's latents' distances to the centres with the
    verdict (None when too few people have latents), and the predictions scored."""
    gallery = enrolled.gallery
    latent_ids, latents = enrolled.latents.rows()
    latent_of = dict(zip(latent_ids, latents))
    people = [i for i in ids if i in latent_of]
    if len(people) < 4:
        return {"note": f"{len(people)} people with latents; K-fold generation needs 4 or "
                        "more"}, None, None
    truth = np.stack([latent_of[i] for i in people])
    position = {p: j for j, p in enumerate(people)}
    # each person's voice traits as the gallery records them: the mapper takes them as the
    # app's does (one record per person stands in for the windows' own traits)
    voice = {p: record_features(gallery.person(p).extra.get(TRAITS_KEY)) for p in people}
    names = ["mapper", "knn-blend", POPULATION_MEAN] + ([W_AVG] if w_avg is not None else [])
    predictions = {name: np.zeros_like(truth) for name in names}
    for train, test in identity_folds(people, folds, seed):
        x = np.concatenate([windows[person_rows[p]] for p in train])
        y = np.concatenate([np.repeat(truth[position[p]][None], len(person_rows[p]), 0)
                            for p in train])
        groups = [p for p in train for _ in person_rows[p]]
        traits = np.concatenate([np.repeat(voice[p][None], len(person_rows[p]), 0)
                                 for p in train])
        if np.isnan(traits).all(axis=0).any():  # a trait nobody trained on has: embedding only
            traits = None
        train_latents = np.stack([truth[position[p]] for p in train])
        centre = population_centre(train_latents)  # as the gallery of the training people
        mapper, _ = train_mapper(x, y, groups, centre, traits=traits, seed=seed,
                                 progress=progress)
        train_embeddings = np.stack([pool(windows[person_rows[p]]) for p in train])
        for p in test:
            e = pool(windows[person_rows[p]])
            j = position[p]
            predictions["mapper"][j] = mapper.predict(e, voice[p])
            scores = train_embeddings @ e
            top = np.argsort(-scores)[:5]
            predictions["knn-blend"][j] = knn_blend(scores[top], train_latents[top])
            predictions[POPULATION_MEAN][j] = centre
            if w_avg is not None:
                predictions[W_AVG][j] = w_avg
    scores = {name: retrieval(pred, truth, seed) for name, pred in predictions.items()}
    generated = predictions["mapper"]
    low = scores["mapper"]["matching_1to2_ci95"][0]
    return scores, {
        "to_population_centre": float(np.linalg.norm(
            generated - predictions[POPULATION_MEAN], axis=1).mean()),
        "to_w_avg": None if w_avg is None else
        float(np.linalg.norm(generated - w_avg, axis=1).mean()),
        "better_than_guessing": bool(low > scores[POPULATION_MEAN]["matching_1to2"]),
    }, HeldOutFaces(people, truth, {name: predictions[name] for name in TRAIT_METHODS},
                    predictions[POPULATION_MEAN])


def write_report(report: dict, out: str | Path) -> list[Path]:
    """report.json, report.md, report.png (score distributions and retrieval) and, for a
    report with a verification section, det.png (its DET curves) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [storage.write_json(out / "report.json", report),
             storage.write_bytes(out / "report.md", markdown(report).encode())]
    paths.append(_plot(report, out / "report.png"))
    if "verification" in report:  # reports written before verification have none
        paths.append(plot_det(report["verification"], out / "det.png"))
    return paths


def markdown(report: dict) -> str:
    ident, gen = report["identification"], report["generation"]
    lines = ["# voiceface evaluation", "",
             f"N = {report['people']} people; {report['folds']} folds over identities for "
             f"generation; seed {report['seed']}.", "", "## Identification", ""]
    if "note" in ident:
        lines.append(ident["note"])
    else:
        lines += [
            f"{ident['trials']} held-out 10 s windows against {ident['gallery_size']} people.", "",
            "| metric | value | chance |", "| --- | --- | --- |",
            f"| top-1 | {ident['top1']:.3f} | {ident['chance_top1']:.3f} |",
            f"| top-5 | {ident['top5']:.3f} | {ident['chance_top5']:.3f} |",
            f"| verification EER | {ident['eer']:.3f} | 0.5 |",
            f"| open-set threshold at {report['false_alarm_rate']:.0%} false alarms "
            f"| {ident['open_set_threshold']:.4f} | |",
            f"| detection and identification rate at it "
            f"| {ident['detection_and_identification_rate']:.3f} | |", "",
            "Open-set threshold (held out): " +
            Calibration.from_dict(ident["calibration"]).describe() + "."]
    calibration = report.get("gallery_calibration")
    lines += ["", "The gallery's threshold (what the app uses; set by build, or by an earlier "
              "eval): " +
              (Calibration.from_dict(calibration).describe() if calibration else
               "not calibrated") + "."]
    if "verification" in report:
        lines += [""] + verification_markdown(report["verification"])
    lines += ["", "## Generation (people unseen by the mapper)", ""]
    if "note" in gen:
        lines.append(gen["note"])
    else:
        keys = [k for k in gen["mapper"] if k.startswith("R@")]
        lines += ["| method | " + " | ".join(keys) + " | 1:2 matching (95 % CI) |",
                  "| --- " * (len(keys) + 2) + "|",
                  "| chance | " + " | ".join(f"{gen['mapper']['chance_' + k]:.3f}"
                                           for k in keys) + " | 0.500 |"]
        for name, r in gen.items():
            low, high = r["matching_1to2_ci95"]
            lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) +
                         f" | {r['matching_1to2']:.3f} ({low:.3f}-{high:.3f}) |")
        lines += ["", _verdict(report["generated_latents"], gen)]
    if "face2voice" in report:  # reports written before face to voice have none
        lines += [""] + face2voice_markdown(report["face2voice"])
    if "traits" in report:  # nor before trait agreement
        lines += [""] + traits_markdown(report["traits"])
    return "\n".join(lines) + "\n"


def _verdict(generated: dict, gen: dict) -> str:
    """The plain sentences saying whether the mapper beat the population mean, and where its
    latents lie."""
    low = gen["mapper"]["matching_1to2_ci95"][0]
    mean = gen[POPULATION_MEAN]["matching_1to2"]
    verdict = (f"**Better than guessing**: the mapper's 1:2 matching (95 % CI from {low:.3f}) "
               f"beats the population mean's {mean:.3f}." if generated["better_than_guessing"]
               else f"**Not better than guessing**: the mapper's 1:2 matching (95 % CI from "
                    f"{low:.3f}) does not beat the population mean's {mean:.3f}; its faces say "
                    "no more about a voice than the enrolled people's average face does.")
    where = (f"Generated latents of held-out people (before truncation) lie on average "
             f"{generated['to_population_centre']:.3f} from the population centre")
    if generated["to_w_avg"] is not None:
        where += f" and {generated['to_w_avg']:.3f} from the generator's w_avg"
    return verdict + "\n\n" + where + "."


def score_range(identification: dict) -> tuple[float, float]:
    """The cosine range the score plot shows: every plotted score and the threshold, widened
    by `PLOT_MARGIN` of their spread either side, within [-1, 1]."""
    shown = [identification["genuine_scores"], identification["impostor_scores_sample"],
             identification["non_mated_best_scores"],
             [identification["calibration"]["threshold"]]]
    low, high = min(min(s) for s in shown), max(max(s) for s in shown)
    margin = PLOT_MARGIN * max(high - low, MIN_PLOT_SPREAD)
    return max(-1.0, low - margin), min(1.0, high + margin)


def _plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
    ident = report["identification"]
    if "genuine_scores" in ident:
        calibration = ident["calibration"]
        low, high = score_range(ident)
        bins = np.linspace(low, high, PLOT_BINS + 1)
        left.hist(ident["impostor_scores_sample"], bins, alpha=0.5, density=True,
                  label="other person (every pair)")
        left.hist(ident["non_mated_best_scores"], bins, density=True, histtype="step", lw=2,
                  color="tab:red", label="other person (best match: the open-set trials)")
        left.hist(ident["genuine_scores"], bins, alpha=0.5, density=True, label="same person")
        left.axvline(calibration["threshold"], color="k", ls="--",
                     label=f"threshold {calibration['threshold']:.4f} "
                           f"({calibration['accepted']}/{calibration['trials']} "
                           "best matches accepted)")
        left.set_xlim(low, high)
        left.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))
    left.set(title="Voice similarity of held-out windows", xlabel="cosine", ylabel="density")
    gen = report["generation"]
    if "mapper" in gen:
        keys = [k for k in gen["mapper"] if k.startswith("R@")]
        width = BAR_GROUP_WIDTH / len(gen)
        middle = np.arange(len(keys)) + (BAR_GROUP_WIDTH - width) / 2
        for offset, (name, r) in enumerate(gen.items()):
            right.bar(np.arange(len(keys)) + width * offset, [r[k] for k in keys], width,
                      label=name)
        right.plot(middle, [gen["mapper"]["chance_" + k] for k in keys],
                   "k_", markersize=30, label="chance")
        right.set_xticks(middle, keys)
        right.legend()
    right.set(title="Latent retrieval, unseen people", ylim=(0, 1))
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return storage.write_bytes(path, png.getvalue())
