"""Keep a seeded random sample of a module's mutants to run; mark the others as skipped.

A module has hundreds of mutants and each costs a test run (5-30 s on 2 cores), so the
larger modules are measured on a uniform random sample: the score of the sample estimates
the module's score, with a confidence interval that `report.py` prints. The sample for N is
the first N of one seeded shuffle, so a larger N later keeps every mutant already run and
adds new ones. Run after skip_annotations.py, before (or between) `cosmic-ray exec`:

    python tests/mutation/sample.py /tmp/mutants-$m.sqlite 60
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

NOT_SAMPLED = "not in the random sample"
SEED = 20261202


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="a cosmic-ray session made by `cosmic-ray init`")
    parser.add_argument("n", type=int, help="how many mutants to run, at most")
    args = parser.parse_args(argv)
    with use_db(args.db, WorkDB.Mode.open) as db:
        results = dict(db.results)
        # every mutant but those skipped for another reason (annotations), run or not, so
        # the shuffle is the same at every call
        candidates = sorted(item.job_id for item in db.work_items
                            if item.job_id not in results
                            or results[item.job_id].worker_outcome != WorkerOutcome.SKIPPED
                            or results[item.job_id].output == NOT_SAMPLED)
        random.Random(SEED).shuffle(candidates)
        chosen = set(candidates[:args.n])
        for job_id in candidates:
            if job_id not in chosen and job_id not in results:
                db.set_result(job_id, WorkResult(output=NOT_SAMPLED,
                                                 worker_outcome=WorkerOutcome.SKIPPED))
    # left out of a smaller sample, chosen now: pending again (WorkDB cannot delete a result)
    with sqlite3.connect(args.db) as con:
        con.executemany("DELETE FROM work_results WHERE job_id = ?",
                        [(j,) for j in chosen if j in results and results[j].output == NOT_SAMPLED])
    print(f"{len(chosen)} of {len(candidates)} mutants sampled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
