"""The operations page's charts: the samples, the SVG, the page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.test import Client

from events.ops.charts import Bar, _nice_ceiling, bar_chart, messages_per_minute
from events.ops.samples import WINDOW_MINUTES, Recorder
from events.provisioning import upsert_channel
from events.publish.store import publish


def test_the_recorder_keeps_minutes_of_the_last_hour_only() -> None:
    recorder = Recorder()
    start = 1_000_000 * 60.0
    recorder.record_lag(0.010, start)
    recorder.record_lag(0.030, start + 5)
    recorder.sample(start + 1, evictions_total=4, streams=7)  # the first sample is the baseline
    recorder.sample(start + 2, evictions_total=6, streams=3)
    minutes = recorder.last_hour(start + 30)
    assert len(minutes) == WINDOW_MINUTES
    key, now = minutes[-1]
    assert key == 1_000_000
    assert (now.lag_count, round(now.lag_mean, 3), now.lag_max) == (2, 0.02, 0.030)
    assert (now.evictions, now.streams) == (2, 7)
    assert all(m.lag_count == 0 for _, m in minutes[:-1])
    recorder.record_lag(0.5, start + 60 * WINDOW_MINUTES)  # an hour later
    assert set(recorder.minutes) == {1_000_000 + WINDOW_MINUTES}


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (250, 500), (1000, 1000)]
)
def test_axis_tops_are_round(value: float, ceiling: float) -> None:
    assert _nice_ceiling(value) == pytest.approx(ceiling)


def test_a_bar_chart_is_svg_with_escaped_text_and_values() -> None:
    svg = bar_chart(
        "chart-x",
        "Per <minute>",
        [Bar("<script>", 2, "two & more"), Bar("b", 4, "four")],
        width=100,
        height=60,
    )
    assert svg.startswith(
        '<figure class="pushsite-chart" id="chart-x"><figcaption>Per &lt;minute&gt;</figcaption><svg'
    )
    assert "<script>" not in svg
    assert "<title>&lt;script&gt;: two &amp; more</title>" in svg
    # Heights scale to a round top (4 -> 5) over a 30-pixel plot.
    assert '<rect x="5.0" y="18.0" width="40.0" height="12.0" fill="#0b3d91" data-value="2">' in svg
    assert '<rect x="55.0" y="6.0" width="40.0" height="24.0" fill="#0b3d91" data-value="4">' in svg
    assert 'aria-label="Per &lt;minute&gt;, highest 4"' in svg


@pytest.mark.django_db
def test_messages_per_minute_covers_the_hour_up_to_now() -> None:
    upsert_channel("ticks")
    for n in range(3):
        publish("ticks", n)
    now = datetime.now(UTC)
    bars = messages_per_minute(now)
    assert len(bars) == WINDOW_MINUTES
    assert bars[-1].label == now.strftime("%H:%M")
    assert bars[-1].value == 3
    assert bars[-1].text == "3 messages"
    assert sum(bar.value for bar in bars[:-1]) == 0


@pytest.mark.django_db
def test_the_operations_page_draws_four_charts(client: Client) -> None:
    client.force_login(User.objects.create_superuser("boss", "", "pw"))
    page = client.get("/admin/events/channel/operations/").content.decode()
    for chart in ["chart-messages", "chart-streams", "chart-latency", "chart-evictions"]:
        assert f'<figure class="pushsite-chart" id="{chart}">' in page
    assert page.count("<svg viewBox=") == 4


def test_few_bars_are_each_labelled_and_no_bars_say_none() -> None:
    svg = bar_chart(
        "c", "Streams", [Bar("news", 3, "3 open"), Bar("scores", 1, "1 open")], width=200, height=60
    )
    assert '<text x="50.0" y="52" font-size="11" fill="#555" text-anchor="middle">news</text>' in svg
    assert '<text x="150.0" y="52" font-size="11" fill="#555" text-anchor="middle">scores</text>' in svg
    assert 'width="48.0"' in svg  # wide slots keep slim bars
    assert ">none</text>" in bar_chart("c", "Streams", [])
