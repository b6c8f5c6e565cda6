"""Mark as skipped the mutants that only change a type annotation.

Every module under voiceface/ starts with `from __future__ import annotations`, so annotations
stay strings that nothing evaluates: `str | os.PathLike` mutated to `str + os.PathLike` is an
equivalent mutant, and running the tests on it only costs time. Run between init and exec:

    python tests/mutation/skip_annotations.py /tmp/mutants-$m.sqlite
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, as (row, col), of every annotation in `source`."""
    tree = ast.parse(source)
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body):
        return []  # annotations are evaluated: no mutant in them is skipped
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes.append(node.returns)
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    nodes.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset))
            for n in nodes if n is not None]


def main(db_path: str) -> int:
    skipped = 0
    with use_db(db_path, WorkDB.Mode.open) as db:
        spans: dict[Path, list] = {}
        for item in list(db.pending_work_items):
            for mutation in item.mutations:
                path = Path(mutation.module_path)
                if path not in spans:
                    spans[path] = annotation_spans(path.read_text())
                if any(s <= tuple(mutation.start_pos) and tuple(mutation.end_pos) <= e
                       for s, e in spans[path]):
                    db.set_result(item.job_id, WorkResult(
                        output="annotation only (never evaluated)",
                        worker_outcome=WorkerOutcome.SKIPPED))
                    skipped += 1
                    break
    print(f"{skipped} annotation-only mutants skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
