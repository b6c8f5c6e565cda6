"""Mutation scores of cosmic-ray sessions, with 95 % intervals for sampled modules.

    python tests/mutation/report.py /tmp/mutants-*.sqlite

Per session (module): its mutants, those skipped as annotation-only (`skip_annotations.py`),
the population left (the mutants that can change behaviour), how many were sampled
(`sample.py`; all of them when it was not used) and run, killed (timeouts, counted as killed,
in brackets), survived, incompetent (the mutant does not import or run: left out of the
score), the score killed / (killed + survived) and its Wilson 95 % interval. Then two overall
scores: each module's score weighted by its population (the estimate for all the modules'
mutants, as if every one had been run; normal-approximation interval over the strata), and
the pooled score of every mutant run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome

Z = 1.959964  # two-sided 95 %
NOT_SAMPLED = "not in the random sample"  # sample.py's mark


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def counts(path: str) -> dict:
    c = dict(module=Path(path).stem, total=0, annotation=0, not_sampled=0, run=0, killed=0,
             timeout=0, survived=0, incompetent=0)
    with use_db(path, WorkDB.Mode.open) as db:
        c["total"] = db.num_work_items
        for _, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                c["not_sampled" if result.output == NOT_SAMPLED else "annotation"] += 1
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                c["incompetent"] += 1
            elif result.test_outcome == TestOutcome.KILLED:
                c["killed"] += 1
                c["timeout"] += result.output == "timeout"
            elif result.test_outcome == TestOutcome.SURVIVED:
                c["survived"] += 1
    c["population"] = c["total"] - c["annotation"]
    c["sampled"] = c["population"] - c["not_sampled"]
    c["run"] = c["killed"] + c["survived"]
    return c


def main(paths: list[str]) -> int:
    rows = [counts(p) for p in paths]
    width = max(len("module"), *(len(c["module"]) for c in rows))
    print(f"{'module':<{width}} {'mutants':>7} {'annot.':>6} {'popul.':>6} {'sampled':>7} {'run':>4} "
          f"{'killed (t/o)':>12} {'surv.':>5} {'incomp.':>7} {'score':>6}  95 % CI")
    for c in rows:
        lo, hi = wilson(c["killed"], c["run"])
        score = f"{c['killed'] / c['run']:.1%}  {lo:.1%}-{hi:.1%}" if c["run"] else "     -"
        print(f"{c['module']:<{width}} {c['total']:>7} {c['annotation']:>6} {c['population']:>6} "
              f"{c['sampled']:>7} {c['run']:>4} {c['killed']:>6} ({c['timeout']:>3}) "
              f"{c['survived']:>5} {c['incompetent']:>7} {score:>6}")
    measured = [c for c in rows if c["run"]]
    weight = sum(c["population"] for c in measured)
    if not weight:
        return 0
    # stratified estimate: each module's sample speaks for its population
    est = sum(c["population"] * c["killed"] / c["run"] for c in measured) / weight
    var = 0.0  # with the finite-population correction: a module run in full is known exactly
    for c in measured:
        p = c["killed"] / c["run"]
        var += ((c["population"] / weight) ** 2 * p * (1 - p) / c["run"]
                * (1 - c["run"] / c["population"]))
    half = Z * math.sqrt(var)
    print(f"overall, weighted by population ({weight} mutants): {est:.1%} "
          f"({max(0, est - half):.1%}-{min(1, est + half):.1%})")
    k, n = sum(c["killed"] for c in measured), sum(c["run"] for c in measured)
    lo, hi = wilson(k, n)
    print(f"overall, pooled ({n} mutants run): {k / n:.1%} ({lo:.1%}-{hi:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
