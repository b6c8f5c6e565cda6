"""`python -m voiceface bench --quick --json` runs end to end and says what it measured.

Only the shape of the answer is checked: timings on a shared machine are for people to read.
"""

from __future__ import annotations

import json

import pytest

from voiceface import bench
from voiceface.cli import main

STAGES = {"decode", "embed", "search", "map", "synth", "total"}


@pytest.mark.slow
def test_quick_bench_prints_one_json_object_with_every_figure(capsys):
    assert main(["bench", "--quick", "--json", "--repeats", "1", "--threads", "1",
                 "--quantize"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quick"] is True and result["repeats"] == 1 and result["quantize"] is True
    assert result["threads"]["torch"] == 1
    assert isinstance(result["models"], str)
    assert {"cpus", "torch", "torch_interop", "faiss_build"} <= set(result["threads"])
    assert all(isinstance(result["threads"][k], int) for k in ("cpus", "torch"))
    runs = result["runs"]
    assert sorted({(r["seconds"], r["px"]) for r in runs}) == \
        sorted((s, px) for s in bench.DURATIONS for px in (32, 64))
    for r in runs:
        for stat in ("median", "p95"):
            assert set(r[stat]) == STAGES
            assert all(isinstance(v, float) and v >= 0 for v in r[stat].values())
    for seconds in bench.DURATIONS:  # preview and full face come from the same stream calls
        preview, full = sorted((r for r in runs if r["seconds"] == seconds), key=lambda r: r["px"])
        assert preview["median"]["embed"] == full["median"]["embed"]
        assert preview["median"]["synth"] < full["median"]["synth"]
    for key in ("cold_start_s", "first_answer_s", "peak_rss_mb", "bench_peak_rss_mb",
                "bundle_build_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert set(result["targets"]) == set(bench.TARGETS)
    for target in result["targets"].values():
        assert isinstance(target["value"], float) and isinstance(target["met"], bool)


def test_table_names_every_stage_and_target():
    result = {"models": "m", "repeats": 1, "bundle_build_s": 1.0, "cold_start_s": 2.0,
              "first_answer_s": 0.5, "peak_rss_mb": 100.0, "bench_peak_rss_mb": 200.0,
              "threads": {"cpus": 2, "torch": 1, "torch_interop": 1, "faiss_build": 1,
                          "OMP_NUM_THREADS": None},
              "runs": [{"seconds": 5.0, "px": 256,
                        "median": dict.fromkeys(STAGES, 0.1), "p95": dict.fromkeys(STAGES, 0.2)}]}
    result["targets"] = bench._targets(result, 256, 1024)
    table = bench.format_table(result)
    assert all(stage in table for stage in STAGES)
    assert "preview_5s_s" in table and "met" in table and "n/a" in table  # no 1024 px run
