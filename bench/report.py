"""Progress display, the results table and the target checks."""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
from typing import Any, TextIO

# The issues' targets; "pushsite" numbers against "reference" / "eventstream" in one run.
FANOUT_VS_REFERENCE = 0.7
FANOUT_VS_EVENTSTREAM = 10.0
LATENCY_P99_VS_REFERENCE = 1.5
# Issue 16 (the delivery path below ASGI).
MAX_KIB_PER_CONNECTION = 4.0
MIN_OPENS_PER_S = 5000
REACH_ALL_VS_REFERENCE = 2.0
MAX_PUBLISH_WITH_SUBSCRIBERS_P50_MS = 3.0
MAX_STORM_SECONDS = 5.0
CROSS_P99_VS_SINGLE = 2.0
MAX_PUBLISH_P50_MS = 5.0
MAX_CROSS_P99_MS = 50.0
MAX_STEADY_OPEN_P99_MS = 50.0
MAX_STEADY_DELIVERY_P99_MS = 100.0


class Progress:
    """One self-rewriting status line on a terminal; plain lines otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.target = ""
        self._last_draw = 0.0
        self._last_plain = ""

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        line = f"[{now - self.started:5.0f}s] {self.target}: {text}"
        if self.tty:
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self.stream.flush()
        else:
            # Without a terminal, one line per step (the text before its counters).
            step = text.split(":")[0]
            if step != self._last_plain:
                self._last_plain = step
                self.stream.write(line + "\n")
                self.stream.flush()

    def note(self, text: str) -> None:
        """A line that stays."""
        if self.tty:
            self.stream.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
        self.stream.write(f"[{time.monotonic() - self.started:5.0f}s] {text}\n")
        self.stream.flush()


def _get(results: dict[str, Any], target: str, *path: str) -> Any:
    value: Any = results.get("targets", {}).get(target, {})
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("(a) latency p50 ms", ("latency", "p50_ms")),
    ("(a) latency p99 ms", ("latency", "p99_ms")),
    ("(a) latency max ms", ("latency", "max_ms")),
    ("(a) lost / duplicates", ("latency", "lost+duplicates")),
    ("(b) fan-out deliveries/s", ("fanout", "deliveries_per_s")),
    ("(b) deliveries per server CPU-second", ("fanout", "deliveries_per_cpu_s")),
    ("(b) fan-out p99 ms", ("fanout", "p99_ms")),
    ("(b) lost / duplicates / reordered", ("fanout", "lost+duplicates+reordered")),
    ("(b) server CPU % / client CPU %", ("fanout", "server_cpu_pct+client_cpu_pct")),
    ("(c) open connections s", ("connections", "open_seconds")),
    ("(c) opens per second", ("connections", "opens_per_s")),
    ("(c) server CPU per open µs", ("connections", "cpu_us_per_open")),
    ("(c) server KiB per connection", ("connections", "kib_per_connection")),
    ("(c) one message to all ms", ("connections", "reach_all_ms")),
    ("(c) one message to all: server CPU ms", ("connections", "reach_server_cpu_ms")),
    ("(c) lost / duplicates", ("connections", "lost+duplicates")),
    ("(d) publish round trip p50 ms", ("publish", "p50_ms")),
    ("(d) publish round trip p99 ms", ("publish", "p99_ms")),
    ("(e) cross-process p50 ms", ("cross_process", "p50_ms")),
    ("(e) cross-process p99 ms", ("cross_process", "p99_ms")),
    ("(e) lost / duplicates", ("cross_process", "lost+duplicates")),
    ("(h) steady: messages/s achieved", ("steady", "achieved_rate_per_s")),
    ("(h) steady: stream open p50 ms", ("steady", "open_p50_ms")),
    ("(h) steady: stream open p99 ms", ("steady", "open_p99_ms")),
    ("(h) steady: delivery p50 ms", ("steady", "p50_ms")),
    ("(h) steady: delivery p99 ms", ("steady", "p99_ms")),
    ("(h) lost / duplicates", ("steady", "lost+duplicates")),
]


def render_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table, one column per server."""
    targets = list(results.get("targets", {}))
    lines = [
        "| scenario | " + " | ".join(targets) + " |",
        "| --- | " + " | ".join("---:" for _ in targets) + " |",
    ]
    for label, (scenario, key) in ROWS:
        cells = []
        for target in targets:
            if _get(results, target, "error") and _get(results, target, scenario) is None:
                cells.append("error")
                continue
            parts = [_fmt(_get(results, target, scenario, part)) for part in key.split("+")]
            cells.append(" / ".join(parts) if any(p != "-" for p in parts) else "-")
        if any(cell not in {"-", "error"} for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    scale = results.get("sizes", {})
    lines.append("")
    lines.append(
        f"Sizes: {scale.get('subscribers')} subscribers; (a) {scale.get('latency_messages')} messages at "
        f"{scale.get('latency_rate')}/s; (b) burst of {scale.get('burst_messages')}; "
        f"(c) {scale.get('connections'):,} connections; (d) {scale.get('round_trips')} publishes; "
        f"(e) {scale.get('cross_messages')} messages."
    )
    return "\n".join(lines)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the measured value, the limit, met or not."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: str, met: bool | None) -> None:
        checks.append({"target": name, "value": value, "limit": limit, "met": met})

    def ratio(a: Any, b: Any) -> float | None:
        if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
            return None
        return round(a / b, 2)

    push_rate = _get(results, "pushsite", "fanout", "deliveries_per_s")
    vs_ref = ratio(push_rate, _get(results, "reference", "fanout", "deliveries_per_s"))
    check(
        "fan-out ≥ 0.7 x reference",
        vs_ref,
        "≥ 0.7",
        None if vs_ref is None else vs_ref >= FANOUT_VS_REFERENCE,
    )
    vs_es = ratio(push_rate, _get(results, "eventstream", "fanout", "deliveries_per_s"))
    check(
        "fan-out ≥ 10 x django-eventstream",
        vs_es,
        "≥ 10",
        None if vs_es is None else vs_es >= FANOUT_VS_EVENTSTREAM,
    )
    # The same two ratios per second of server CPU: robust to other work on a shared machine.
    push_cpu = _get(results, "pushsite", "fanout", "deliveries_per_cpu_s")
    cpu_ref = ratio(push_cpu, _get(results, "reference", "fanout", "deliveries_per_cpu_s"))
    check(
        "(same, per server CPU-second) vs reference",
        cpu_ref,
        "≥ 0.7",
        None if cpu_ref is None else cpu_ref >= FANOUT_VS_REFERENCE,
    )
    cpu_es = ratio(push_cpu, _get(results, "eventstream", "fanout", "deliveries_per_cpu_s"))
    check(
        "(same, per server CPU-second) vs django-eventstream",
        cpu_es,
        "≥ 10",
        None if cpu_es is None else cpu_es >= FANOUT_VS_EVENTSTREAM,
    )
    p99 = ratio(
        _get(results, "pushsite", "latency", "p99_ms"), _get(results, "reference", "latency", "p99_ms")
    )
    check(
        "latency p99 ≤ 1.5 x reference",
        p99,
        "≤ 1.5",
        None if p99 is None else p99 <= LATENCY_P99_VS_REFERENCE,
    )
    kib = _get(results, "pushsite", "connections", "kib_per_connection")
    check("KiB per idle stream ≤ 4", kib, "≤ 4", None if kib is None else kib <= MAX_KIB_PER_CONNECTION)
    opens = _get(results, "pushsite", "connections", "opens_per_s")
    check(
        "streams opened per second ≥ 5,000",
        opens,
        "≥ 5,000",
        None if opens is None else opens >= MIN_OPENS_PER_S,
    )
    held = _get(results, "pushsite", "connections", "connections")
    reach = ratio(
        _get(results, "pushsite", "connections", "reach_all_ms"),
        _get(results, "reference", "connections", "reach_all_ms"),
    )
    lost_c = _get(results, "pushsite", "connections", "lost")
    check(
        f"{_fmt(held)} streams, one message to all ≤ 2 x reference",
        reach,
        "≤ 2",
        None if reach is None else reach <= REACH_ALL_VS_REFERENCE and lost_c == 0,
    )
    busy = _get(results, "pushsite", "latency", "publish_p50_ms")
    check(
        "publish round trip p50, subscribers online ≤ 3 ms",
        busy,
        "≤ 3",
        None if busy is None else busy <= MAX_PUBLISH_WITH_SUBSCRIBERS_P50_MS,
    )
    storm: dict[str, Any] = results.get("storm") or {}
    storm_s = storm.get("all_back_and_caught_up_s")
    check(
        "reconnect storm: all back and caught up ≤ 5 s, none lost or duplicated",
        storm_s,
        "≤ 5",
        None
        if storm_s is None
        else storm_s <= MAX_STORM_SECONDS
        and storm.get("failed_to_reconnect") == 0
        and storm.get("lost") == 0
        and storm.get("duplicates") == 0,
    )
    pub = _get(results, "pushsite", "publish", "p50_ms")
    check(
        "publish round trip p50 ≤ 5 ms (stored)",
        pub,
        "≤ 5",
        None if pub is None else pub <= MAX_PUBLISH_P50_MS,
    )
    cross = _get(results, "pushsite", "cross_process", "p99_ms")
    check("cross-process p99 ≤ 50 ms", cross, "≤ 50", None if cross is None else cross <= MAX_CROSS_P99_MS)
    cross_vs = ratio(cross, _get(results, "pushsite", "latency", "p99_ms"))
    check(
        "cross-process p99 ≤ 2 x single-process (a) p99",
        cross_vs,
        "≤ 2",
        None if cross_vs is None else cross_vs <= CROSS_P99_VS_SINGLE,
    )
    opening = _get(results, "pushsite", "steady", "open_p99_ms")
    check(
        "steady 200 msg/s, two processes: stream open p99 < 50 ms",
        opening,
        "< 50",
        None if opening is None else opening < MAX_STEADY_OPEN_P99_MS,
    )
    steady_p99 = _get(results, "pushsite", "steady", "p99_ms")
    check(
        "steady 200 msg/s, two processes: delivery p99 < 100 ms",
        steady_p99,
        "< 100",
        None if steady_p99 is None else steady_p99 < MAX_STEADY_DELIVERY_P99_MS,
    )
    faults = 0
    seen = 0
    for scenario in ("latency", "fanout", "connections", "cross_process", "steady"):
        for key in ("lost", "duplicates", "reordered", "stale"):
            value = _get(results, "pushsite", scenario, key)
            if isinstance(value, int):
                seen += 1
                faults += value
    check(
        "zero loss, duplicates, reordering (Pushsite, every scenario)",
        faults,
        "= 0",
        None if not seen else faults == 0,
    )
    return checks


def over_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each check across rounds: its values in round order, their median and range, and how often met."""
    summary: list[dict[str, Any]] = []
    names = [item["target"] for item in rounds[0]] if rounds else []
    for index, name in enumerate(names):
        items = [
            checks[index] for checks in rounds if index < len(checks) and checks[index]["target"] == name
        ]
        values = [item["value"] for item in items if isinstance(item["value"], int | float)]
        verdicts = [item["met"] for item in items if item["met"] is not None]
        summary.append(
            {
                "target": name,
                "limit": items[0]["limit"],
                "values": [item["value"] for item in items],
                "median": statistics.median(values) if values else None,
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "met_rounds": sum(verdicts),
                "measured_rounds": len(verdicts),
            }
        )
    return summary


def render_over_rounds(summary: list[dict[str, Any]]) -> str:
    """The checks over rounds: median (min to max), and in how many rounds each was met."""
    lines = ["| target | median (min to max) | limit | met in |", "| --- | ---: | ---: | :---: |"]
    for item in summary:
        if not item["measured_rounds"]:
            continue
        spread = f"{_fmt(item['median'])} ({_fmt(item['min'])} to {_fmt(item['max'])})"
        lines.append(
            f"| {item['target']} | {spread} | {item['limit']} | {item['met_rounds']} of {item['measured_rounds']} |"
        )
    return "\n".join(lines)


def render_checks(checks: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | met |", "| --- | ---: | ---: | :---: |"]
    for item in checks:
        met = {True: "yes", False: "**no**", None: "not measured"}[item["met"]]
        lines.append(f"| {item['target']} | {_fmt(item['value'])} | {item['limit']} | {met} |")
    return "\n".join(lines)


def render_design(results: dict[str, Any]) -> str:
    """The design-choice measurements of this run (variants and micro-measurements)."""
    lines = ["| design choice | measured in this run |", "| --- | --- |"]
    uvicorn = _get(results, "pushsite", "fanout", "deliveries_per_s")
    daphne = _get(results, "pushsite-daphne", "fanout", "deliveries_per_s")
    if uvicorn and daphne:
        lines.append(
            f"| ASGI server: uvicorn+uvloop+httptools vs daphne | fan-out {_fmt(uvicorn)} vs {_fmt(daphne)}"
            f" deliveries/s; latency p99 {_fmt(_get(results, 'pushsite', 'latency', 'p99_ms'))} vs "
            f"{_fmt(_get(results, 'pushsite-daphne', 'latency', 'p99_ms'))} ms |"
        )
    floor_kib = _get(results, "uvicorn-floor", "connections", "kib_per_connection")
    if floor_kib is not None:
        lines.append(
            f"| uvicorn's own share (cheapest ASGI app) | {_fmt(floor_kib)} KiB per idle connection; "
            f"{_fmt(_get(results, 'uvicorn-floor', 'fanout', 'deliveries_per_cpu_s'))} deliveries per server "
            "CPU-second |"
        )
    encode = results.get("design", {}).get("encode_once")
    if encode:
        lines.append(
            f"| encode once per message | one frame costs {encode['encode_us']} µs to encode: "
            f"{encode['per_1000_connections_ms']} ms per message if done per connection at 1000 |"
        )
    layer = results.get("design", {}).get("header_layer")
    if layer:
        lines.append(
            f"| security headers from one ASGI layer (pushsite/headers.py) | each stream frame passes its `send`: "
            f"{layer['with_layer_ns']} ns against {layer['bare_send_ns']} ns bare, +{layer['extra_ns']} ns of CPU |"
        )
    slow = results.get("design", {}).get("slow_reader", {})
    bounded, unbounded = slow.get("bounded_1mib"), slow.get("unbounded_1gib")
    if bounded and unbounded and "error" not in bounded and "error" not in unbounded:
        lines.append(
            "| backlog bound (1 MiB) vs 1 GiB, one stalled reader, 1000 x 16 KB | "
            f"RSS +{_fmt(bounded['rss_growth_kib'])} vs +{_fmt(unbounded['rss_growth_kib'])} KiB; stalled reader "
            f"evicted: {_fmt(bounded['stalled_reader_evicted'])} vs {_fmt(unbounded['stalled_reader_evicted'])}; "
            f"50 other readers lost {bounded['readers_lost']} / {unbounded['readers_lost']} |"
        )
    return "\n".join(lines)


def render_publish_paths(results: dict[str, Any]) -> str:
    """(g) one row per server and road: medians over rounds, ratios with their spread."""
    paths = results.get("publish_paths")
    if not paths:
        return ""
    if "error" in paths:
        return f"(g) publish roads: {paths['error']}"

    def spread(value: dict[str, float], digits: int = 2) -> str:
        return f"{value['median']:.{digits}f} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"

    lines = [
        f"(g) publish roads: {paths['rounds']} interleaved rounds of {paths['publishes_per_round']} stored "
        f"publishes; ratios against {paths['reference']} in the same round, median (min-max)",
        "",
        "| server/road | round trip p50 ms | p99 ms | publishes/s | CPU ms per publish "
        "| p50 x ref | publishes/s x ref | CPU x ref |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, road in paths["roads"].items():
        lines.append(
            f"| {label} | {road['p50_ms']} | {road['p99_ms']} | {road['publishes_per_s']['median']:,.0f} "
            f"| {road['cpu_ms_per_publish']['median']:.2f} | {spread(road['p50_vs_reference'])} "
            f"| {spread(road['publishes_per_s_vs_reference'])} "
            f"| {spread(road['cpu_vs_reference'])} |"
        )
    return "\n".join(lines)
