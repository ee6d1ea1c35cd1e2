"""The benchmark's verdicts: issue 16's targets judged from one round's numbers, and over rounds."""

from __future__ import annotations

from typing import Any

from bench import report


def one_round(**pushsite: dict[str, Any]) -> dict[str, Any]:
    reference = {
        "fanout": {"deliveries_per_s": 100_000, "deliveries_per_cpu_s": 100_000},
        "latency": {"p99_ms": 10.0},
        "connections": {"reach_all_ms": 50.0},
    }
    measured: dict[str, Any] = {
        "fanout": {"deliveries_per_s": 70_000, "deliveries_per_cpu_s": 60_000},
        "latency": {"p99_ms": 15.0, "publish_p50_ms": 2.5},
        "connections": {
            "connections": 5000,
            "kib_per_connection": 3.9,
            "opens_per_s": 5200,
            "reach_all_ms": 100.0,
            "lost": 0,
        },
        "cross_process": {"p99_ms": 31.0},
    }
    for scenario, values in pushsite.items():
        measured[scenario] = {**measured.get(scenario, {}), **values}
    return {"targets": {"reference": reference, "pushsite": measured}}


def verdicts(results: dict[str, Any]) -> dict[str, tuple[Any, bool | None]]:
    return {item["target"]: (item["value"], item["met"]) for item in report.evaluate(results)}


def test_issue_16_targets_are_judged_against_the_reference_of_the_same_round() -> None:
    results = one_round()
    results["storm"] = {"all_back_and_caught_up_s": 4.9, "failed_to_reconnect": 0, "lost": 0, "duplicates": 0}
    judged = verdicts(results)
    assert judged["fan-out ≥ 0.7 x reference"] == (0.7, True)
    assert judged["(same, per server CPU-second) vs reference"] == (0.6, False)
    assert judged["latency p99 ≤ 1.5 x reference"] == (1.5, True)
    assert judged["KiB per idle stream ≤ 4"] == (3.9, True)
    assert judged["streams opened per second ≥ 5,000"] == (5200, True)
    assert judged["5,000 streams, one message to all ≤ 2 x reference"] == (2.0, True)
    assert judged["publish round trip p50, subscribers online ≤ 3 ms"] == (2.5, True)
    assert judged["reconnect storm: all back and caught up ≤ 5 s, none lost or duplicated"] == (4.9, True)
    assert judged["cross-process p99 ≤ 2 x single-process (a) p99"] == (2.07, False)


def test_a_miss_on_any_part_of_a_target_is_a_miss() -> None:
    results = one_round(
        connections={"kib_per_connection": 4.1, "opens_per_s": 4999, "reach_all_ms": 101.0},
        latency={"publish_p50_ms": 3.01},
    )
    results["storm"] = {"all_back_and_caught_up_s": 3.0, "failed_to_reconnect": 0, "lost": 0, "duplicates": 1}
    judged = verdicts(results)
    assert judged["KiB per idle stream ≤ 4"][1] is False
    assert judged["streams opened per second ≥ 5,000"][1] is False
    assert judged["5,000 streams, one message to all ≤ 2 x reference"][1] is False
    assert judged["publish round trip p50, subscribers online ≤ 3 ms"][1] is False
    assert judged["reconnect storm: all back and caught up ≤ 5 s, none lost or duplicated"][1] is False
    # A lost message fails the reach target however fast the rest was.
    lossy = one_round(connections={"lost": 1})
    assert verdicts(lossy)["5,000 streams, one message to all ≤ 2 x reference"][1] is False


def test_targets_without_numbers_are_not_measured_rather_than_met() -> None:
    judged = verdicts({"targets": {"pushsite": {}}})
    assert judged["fan-out ≥ 0.7 x reference"] == (None, None)
    assert judged["reconnect storm: all back and caught up ≤ 5 s, none lost or duplicated"] == (None, None)


def test_over_rounds_gives_each_target_its_median_range_and_rounds_met() -> None:
    rounds = [
        report.evaluate(one_round(fanout={"deliveries_per_s": rate})) for rate in (65_000, 72_000, 80_000)
    ]
    summary = {item["target"]: item for item in report.over_rounds(rounds)}
    fanout = summary["fan-out ≥ 0.7 x reference"]
    assert fanout["values"] == [0.65, 0.72, 0.8]
    assert (fanout["median"], fanout["min"], fanout["max"]) == (0.72, 0.65, 0.8)
    assert (fanout["met_rounds"], fanout["measured_rounds"]) == (2, 3)
    table = report.render_over_rounds(list(summary.values()))
    assert "| fan-out ≥ 0.7 x reference | 0.72 (0.65 to 0.8) | ≥ 0.7 | 2 of 3 |" in table
    # A target no round measured is left out of the table rather than shown as met.
    assert "reconnect storm" not in table
