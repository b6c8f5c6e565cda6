"""eval's verification section: 1:1 trials on the held-out windows, raw cosine against AS-norm.

The trials are those of the identification section (`voiceface.evaluate.held_out_split`):
each held-out window of an enrolled person against their own enrollment (pooled from the
windows that were not held out) is a mated trial, and against every other person's
enrollment a non-mated one, the window's own person left out of the AS-norm cohort as in
`voiceface.verification`'s calibration (`verification.score_trials`). Both kinds of score are measured
on the same trials: EER, minDCF (p_target 0.01), the false-reject rate at false-accept
rates of 1 % and 0.1 % with the trials behind each, and the threshold at `--far`. Whether
AS-norm helps is decided here, by lower EER and minDCF. The gallery's own verification
threshold (set by `build` on every window) is reported beside it, never changed.
"""

from __future__ import annotations

import io
from pathlib import Path
from statistics import NormalDist

import numpy as np

from . import storage
from .metrics import COUNT_TOLERANCE, P_TARGET, det_curve, eer, frr_at_far, min_dcf
from .verification import AS_NORM, RAW, VerificationCalibration, score_trials

REPORTED_FARS = (0.01, 0.001)  # false-accept rates the false-reject rate is reported at
DET_RANGE = (1e-4, 1 - 1e-4)  # rates shown on the DET plot's normal-deviate axes
DET_MARGIN = 0.1  # normal deviates beyond the plotted range on every side
DET_TICKS = (0.0001, 0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)
LABELS = {RAW: "raw cosine", AS_NORM: "AS-norm"}
RANDOM_MODELS = ("Figures from random (untrained) dev models, such as the tests' tiny encoders "
                 "on the `dev-people` folder, mean nothing: they exercise the protocol, not "
                 "voices.")


def evaluate_verification(ids: list[str], enroll: dict[str, np.ndarray], trials: list,
                          far: float, gallery_verification: VerificationCalibration | None
                          ) -> dict:
    """The verification section from the enrollments {id: embedding [D]} and the held-out
    trials [(id, window embedding [D])], both kinds of score, with the threshold at `far`."""
    order = [i for i in ids if i in enroll]
    recorded = gallery_verification and gallery_verification.to_dict()
    if not trials or len(order) < 2:
        return {"note": "too little held-out audio for verification (need 2+ people with more "
                        "than one 10 s window)", "gallery_verification": recorded}
    scores = score_trials(np.stack([e for _, e in trials]), [p for p, _ in trials],
                          np.stack([enroll[i] for i in order]), order)
    by_kind = {kind: _measure(s.mated, s.non_mated, far) for kind, s in scores.items()}
    return {"people": len(order), "mated_trials": int(scores[RAW].mated.size),
            "non_mated_trials": int(scores[RAW].non_mated.size), "p_target": P_TARGET,
            "far": far, "scores": by_kind, "better": better(by_kind),
            "gallery_verification": recorded}


def _measure(mated: np.ndarray, non_mated: np.ndarray, far: float) -> dict:
    curve = det_curve(mated, non_mated)
    keep = det_corners(curve["false_alarm_rate"], curve["miss_rate"])
    return {"eer": eer(mated, non_mated), "min_dcf": min_dcf(mated, non_mated, P_TARGET),
            "frr_at_far": [_point(mated, non_mated, f) for f in REPORTED_FARS],
            "threshold": _point(mated, non_mated, far),
            "det": {"false_alarm_rate": curve["false_alarm_rate"][keep].tolist(),
                    "miss_rate": curve["miss_rate"][keep].tolist()}}


def _point(mated: np.ndarray, non_mated: np.ndarray, far: float) -> dict:
    point = frr_at_far(mated, non_mated, far)
    return {"far_target": far, "threshold": point.threshold, "far": point.far,
            "frr": point.frr, "non_mated_trials": point.impostor_trials,
            "false_accepts": point.false_alarms, "mated_trials": point.genuine_trials,
            "false_rejects": point.misses,
            "enough_trials": far * point.impostor_trials + COUNT_TOLERANCE >= 1}


def det_corners(false_alarm: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """Which points [P] of a DET staircase to keep: all but those in the middle of a run
    along one axis, which the lines between the kept points draw exactly."""
    keep = np.ones(len(false_alarm), bool)
    same_fa = false_alarm[1:] == false_alarm[:-1]
    same_miss = miss[1:] == miss[:-1]
    keep[1:-1] = ~((same_fa[:-1] & same_fa[1:]) | (same_miss[:-1] & same_miss[1:]))
    return keep


def better(by_kind: dict[str, dict]) -> str | None:
    """The kind of score with the lower EER and the lower minDCF (at least as low in one,
    lower in the other); None when there is one kind only, or neither is better in both."""
    if len(by_kind) < 2:
        return None
    raw, norm = (np.array([by_kind[k]["eer"], by_kind[k]["min_dcf"]]) for k in (RAW, AS_NORM))
    if np.all(norm <= raw) and np.any(norm < raw):
        return AS_NORM
    if np.all(raw <= norm) and np.any(raw < norm):
        return RAW
    return None


def _frr_cell(point: dict) -> str:
    if not point["enough_trials"]:
        return (f"too few trials: {point['non_mated_trials']} non-mated cannot measure "
                f"{point['far_target']:.1%} (that needs {round(1 / point['far_target'])})")
    return (f"{point['frr']:.3f} ({point['false_rejects']} of {point['mated_trials']} mated "
            f"rejected; {point['false_accepts']} of {point['non_mated_trials']} non-mated "
            "accepted)")


def markdown(section: dict) -> list[str]:
    """The report's verification section, as Markdown lines."""
    lines = ["## Verification (1:1, held-out trials)", ""]
    recorded = section["gallery_verification"]
    gallery_line = ("The gallery's verification threshold (what `verify` uses; set by build, "
                    "not changed by eval): " + (VerificationCalibration.from_dict(recorded)
                                               .describe() if recorded else "not calibrated")
                    + ".")
    if "note" in section:
        return lines + [section["note"], "", gallery_line]
    scores = section["scores"]
    lines += [f"{section['mated_trials']} mated trials (held-out windows against their own "
              f"person's enrollment) and {section['non_mated_trials']} non-mated (against each "
              f"of the {section['people'] - 1} other people; AS-norm leaves the window's own "
              "person out of the cohort).", "",
              f"| score | EER | minDCF (p_target {section['p_target']}) | " +
              " | ".join(f"FRR at FAR {f:.1%}" for f in REPORTED_FARS) +
              f" | threshold at {section['far']:.1%} FAR | its FAR / FRR |",
              "| --- " * (5 + len(REPORTED_FARS)) + "|"]
    for kind, r in scores.items():
        t = r["threshold"]
        lines.append(f"| {LABELS[kind]} | {r['eer']:.3f} | {r['min_dcf']:.3f} | " +
                     " | ".join(_frr_cell(p) for p in r["frr_at_far"]) +
                     f" | {t['threshold']:.4f} | {t['far']:.3f} / {t['frr']:.3f} |")
    lines.append("")
    if AS_NORM not in scores:
        lines.append(f"Only the raw cosine: {section['people']} people leave too small a "
                     "cohort for AS-norm (it needs 4 or more).")
    elif section["better"]:
        winner, loser = section["better"], ({RAW, AS_NORM} - {section["better"]}).pop()
        lines.append(f"**Better here: {LABELS[winner]}** (lower in EER or minDCF, higher in "
                     f"neither): EER "
                     f"{scores[winner]['eer']:.3f} "
                     f"against {scores[loser]['eer']:.3f}, minDCF "
                     f"{scores[winner]['min_dcf']:.3f} against {scores[loser]['min_dcf']:.3f} "
                     f"for {LABELS[loser]}.")
    else:
        lines.append(f"**Neither score is better here** in both EER and minDCF: raw cosine "
                     f"{scores[RAW]['eer']:.3f} / {scores[RAW]['min_dcf']:.3f}, AS-norm "
                     f"{scores[AS_NORM]['eer']:.3f} / {scores[AS_NORM]['min_dcf']:.3f}.")
    return lines + ["", RANDOM_MODELS, "", "DET curves: det.png.", "", gallery_line]


def _normal_deviate(rates) -> np.ndarray:
    unit = NormalDist()
    return np.array([unit.inv_cdf(r) for r in np.clip(rates, *DET_RANGE)])


def plot_det(section: dict, path: Path) -> Path:
    """det.png: miss rate against false-alarm rate on normal-deviate axes, one curve per
    kind of score, each with its threshold at `far` marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ticks = _normal_deviate(DET_TICKS)
    labels = [f"{100 * t:g}%" for t in DET_TICKS]
    ax.plot(ticks, ticks, color="0.7", ls=":", label="equal error rates")
    for kind, r in section.get("scores", {}).items():
        line, = ax.plot(_normal_deviate(r["det"]["false_alarm_rate"]),
                        _normal_deviate(r["det"]["miss_rate"]), lw=2,
                        label=f"{LABELS[kind]} (EER {r['eer']:.3f}, minDCF {r['min_dcf']:.3f})")
        t = r["threshold"]
        ax.plot(_normal_deviate([t["far"]]), _normal_deviate([t["frr"]]), "o",
                color=line.get_color(), label=f"{LABELS[kind]} threshold at "
                f"{t['far_target']:.1%}: FAR {t['far']:.3f}, FRR {t['frr']:.3f}")
    if "note" in section:
        ax.text(0, 0, section["note"], ha="center", wrap=True)
    ax.set_xticks(ticks, labels, rotation=45)
    ax.set_yticks(ticks, labels)
    limits = ticks[0] - DET_MARGIN, ticks[-1] + DET_MARGIN  # clipped rates stay visible
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.grid(True, alpha=0.3)
    ax.set(title="Verification DET, held-out trials", xlabel="false-alarm rate",
           ylabel="miss rate")
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return storage.write_bytes(path, png.getvalue())
