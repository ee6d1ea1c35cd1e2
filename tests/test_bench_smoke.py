"""The benchmark's quick path still runs: reference server and Pushsite, tiny sizes.

It asserts correctness only (every message delivered once, in order), never
timings: this machine may be busy with other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT
from tests.support.services import redis_binary

pytestmark = pytest.mark.system


def test_bench_quick_path_delivers_everything_once(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-pin",
            "--servers=reference,pushsite",
            "--scenarios=latency,fanout,connections,publish",
            "--subscribers=20",
            "--latency-messages=10",
            "--latency-rate=100",
            "--burst-messages=20",
            "--connections=50",
            "--round-trips=10",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads(output.read_text())
    for target in ("reference", "pushsite"):
        measured = results["targets"][target]
        assert "error" not in measured, measured["error"]
        for scenario in ("latency", "fanout", "connections"):
            counts = measured[scenario]
            assert counts["deliveries"] == counts["expected"], (target, scenario, counts)
            faults = {
                key: counts[key] for key in ("lost", "duplicates", "reordered", "stale", "disconnected")
            }
            assert faults == dict.fromkeys(faults, 0), (target, scenario)
        assert measured["publish"]["publishes"] == 10
    assert "| (b) fan-out deliveries/s |" in results["table"]


def test_bench_steady_scenario_delivers_everything_once(tmp_path: Path) -> None:
    """(h) two processes on Redis, paced publishes, new streams opening: tiny sizes, correctness only."""
    redis_binary()  # skips when there is no redis-server
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-pin",
            "--servers=pushsite",
            "--scenarios=steady",
            "--steady-subscribers=4",
            "--steady-messages=60",
            "--steady-rate=60",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    steady = json.loads(output.read_text())["targets"]["pushsite"]["steady"]
    assert "error" not in steady, steady["error"]
    assert (steady["deliveries"], steady["lost"], steady["duplicates"]) == (4 * 60, 0, 0), steady
    assert steady["opens"] >= 1
    assert "| (h) steady: stream open p99 ms |" in json.loads(output.read_text())["table"]


def test_bench_publish_load_counts_every_stored_row(tmp_path: Path) -> None:
    """(j) issue 17, SQLite, tiny sizes: every 201 is a row, no id twice, the stream's parts stored."""
    output = tmp_path / "load.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.publish_load",
            "--no-pin",
            "--databases=sqlite",
            "--publishers=4",
            "--publishes=40",
            "--single=10",
            "--stream-parts=20",
            "--warmup=5",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    measured = json.loads(output.read_text())["results"]["sqlite"]
    assert measured["concurrent"]["stored"] == {
        "acknowledged": 40,
        "rows_added": 40,
        "distinct_ids_acknowledged": 40,
        "sequence_contiguous": True,
        "ok": True,
    }
    assert measured["streaming"]["parts"] == 20
    assert measured["streaming"]["rows_added"] == 21  # the parts and the end event


def test_bench_rounds_turn_the_server_order_and_report_the_spread(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-pin",
            "--rounds=2",
            "--servers=reference,pushsite",
            "--scenarios=publish",
            "--round-trips=5",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads(output.read_text())
    assert [r["order"] for r in results["rounds"]] == [["reference", "pushsite"], ["pushsite", "reference"]]
    assert [r["targets"]["pushsite"]["publish"]["publishes"] for r in results["rounds"]] == [5, 5]
    publish = next(
        item for item in results["over_rounds"] if item["target"].startswith("publish round trip p50 ≤")
    )
    assert publish["measured_rounds"] == 2
    assert publish["min"] <= publish["median"] <= publish["max"]
    assert "## Over 2 rounds" in completed.stdout
    assert "round 2 of 2: servers in the order pushsite, reference" in completed.stderr
