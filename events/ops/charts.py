"""Charts for the live operations page: the last hour, minute by minute, as server-rendered SVG.

Messages per minute come from the database (every process); open streams per
channel from the processes' census. Delivery latency and evictions are sampled
in memory by each process (events/ops/samples.py), so they describe the process
that renders the page; with several processes, each shows its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from events.models import Message
from events.ops.samples import WINDOW_MINUTES, recorder


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str


MAX_BAR_WIDTH = 48.0
# Up to this many bars (channels, say) each gets its label; more (minutes) show the ends.
LABEL_EACH_UP_TO = 12


def bar_chart(
    chart_id: str, title: str, bars: list[Bar], *, width: int = 640, height: int = 140
) -> SafeString:
    """An accessible SVG bar chart; every value and label is escaped, nothing runs."""
    top = max((bar.value for bar in bars), default=0.0)
    scale = _nice_ceiling(top)
    plot_height = height - 30
    slot = width / max(len(bars), 1)
    bar_width = min(slot * 0.8, MAX_BAR_WIDTH)
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#0b3d91" data-value="{}"><title>{}</title></rect>',
        (
            (
                f"{index * slot + (slot - bar_width) / 2:.1f}",
                f"{plot_height - plot_height * bar.value / scale:.1f}",
                f"{bar_width:.1f}",
                f"{plot_height * bar.value / scale:.1f}",
                f"{bar.value:g}",
                f"{bar.label}: {bar.text}",
            )
            for index, bar in enumerate(bars)
        ),
    )
    if len(bars) <= LABEL_EACH_UP_TO:
        labels = format_html_join(
            "",
            '<text x="{}" y="{}" font-size="11" fill="#555" text-anchor="middle">{}</text>',
            ((f"{index * slot + slot / 2:.1f}", height - 8, bar.label) for index, bar in enumerate(bars)),
        )
    else:
        labels = format_html(
            '<text x="0" y="{}" font-size="11" fill="#555">{}</text>'
            '<text x="{}" y="{}" font-size="11" fill="#555" text-anchor="end">{}</text>',
            height - 8,
            bars[0].label,
            width,
            height - 8,
            bars[-1].label,
        )
    empty = format_html(
        '<text x="{}" y="{}" font-size="12" fill="#555" text-anchor="middle">none</text>',
        width / 2,
        plot_height / 2,
    )
    return format_html(
        '<figure class="pushsite-chart" id="{}"><figcaption>{}</figcaption>'
        '<svg viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#999"/>{}{}'
        '<text x="{}" y="11" font-size="11" fill="#555" text-anchor="end">max {}</text>'
        "</svg></figure>",
        chart_id,
        title,
        width,
        height,
        f"{title}, highest {top:g}",
        plot_height,
        width,
        plot_height,
        rects if bars else empty,
        labels if bars else "",
        width,
        f"{top:g}",
    )


def _nice_ceiling(value: float) -> float:
    """The axis top: the value rounded up to 1, 2 or 5 times a power of ten (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def messages_per_minute(now: datetime) -> list[Bar]:
    """Messages stored in each minute of the last hour, by every process."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
    counts = {
        row["minute"]: row["count"]
        for row in Message.objects.filter(created_at__gte=start)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(count=Count("id"))
    }
    bars = []
    for offset in range(WINDOW_MINUTES):
        minute = start + timedelta(minutes=offset)
        count = counts.get(minute, 0)
        bars.append(Bar(minute.strftime("%H:%M"), count, f"{count} message{'' if count == 1 else 's'}"))
    return bars


def operations_charts(now: datetime, per_channel: dict[str, int]) -> dict[str, SafeString]:
    """The operations page's charts, ready for the template."""
    sampled = recorder.last_hour(now.timestamp())

    def label(key: int) -> str:
        return datetime.fromtimestamp(key * 60, tz=now.tzinfo).strftime("%H:%M")

    return {
        "messages_chart": bar_chart(
            "chart-messages", "Messages per minute, last hour (all processes)", messages_per_minute(now)
        ),
        "streams_chart": bar_chart(
            "chart-streams",
            "Open streams per channel, now (all processes)",
            [Bar(slug, count, f"{count} open") for slug, count in sorted(per_channel.items())],
        ),
        "latency_chart": bar_chart(
            "chart-latency",
            "Delivery latency per minute, mean in ms, last hour (this process)",
            [
                Bar(
                    label(key),
                    round(m.lag_mean * 1000, 1),
                    f"mean {m.lag_mean * 1000:.1f} ms, max {m.lag_max * 1000:.1f} ms, {m.lag_count} messages",
                )
                for key, m in sampled
            ],
        ),
        "evictions_chart": bar_chart(
            "chart-evictions",
            "Slow readers evicted per minute, last hour (this process)",
            [
                Bar(label(key), m.evictions, f"{m.evictions} evicted, {m.streams} streams open")
                for key, m in sampled
            ],
        ),
    }
