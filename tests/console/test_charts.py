"""Server-drawn SVG line charts: a described image (role, label, title) with its range's ends
labelled, a line broken where a reading is missing or the readings went silent, nothing that
the Content-Security-Policy forbids, and any text escaped."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from appliance.console.charts import line_chart, number

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def minutes(*values: float | None) -> list[tuple[datetime, float | None]]:
    return [(T0 + timedelta(minutes=i), v) for i, v in enumerate(values)]


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in points.split()]  # type: ignore[misc]
        for points in re.findall(r'<polyline class="line" points="([^"]+)"', svg)
    ]


def test_chart_is_an_image_described_by_its_label_and_title() -> None:
    svg = line_chart(minutes(10, 50, 30), title="GPU 0 utilization", unit="%")

    assert svg.startswith('<svg class="chart" role="img" aria-label="GPU 0 utilization, ')
    assert "<title>GPU 0 utilization, " in svg
    assert "3 readings, lowest 10 %, highest 50 %, latest 30 %." in svg


def test_chart_labels_its_value_range_and_time_range() -> None:
    svg = line_chart(minutes(10, 50.25, 30), title="Power", unit="W")

    labels = re.findall(r"<text[^>]*>([^<]+)</text>", svg)
    assert labels == ["50.2 W", "10 W", "2025-03-01 12:00", "2025-03-01 12:02"]


def test_floor_and_ceiling_widen_the_value_axis() -> None:
    svg = line_chart(minutes(10, 50), title="Use", unit="%", floor=0, ceiling=100)

    assert ">100 %</text>" in svg
    assert ">0 %</text>" in svg


def test_a_reading_outside_the_ceiling_still_fits() -> None:
    svg = line_chart(minutes(10, 120), title="Use", unit="%", floor=0, ceiling=100)

    assert ">120 %</text>" in svg
    (line,) = polylines(svg)
    assert all(0 <= y <= 160 for _, y in line)


def test_times_are_labelled_in_the_active_time_zone() -> None:
    with timezone.override(zoneinfo.ZoneInfo("Europe/Paris")):
        svg = line_chart(minutes(1, 2), title="Temperature", unit="°C")

    assert ">2025-03-01 13:00</text>" in svg


def test_a_missing_reading_breaks_the_line() -> None:
    svg = line_chart(minutes(10, 20, None, 30, 40), title="Memory")

    assert len(polylines(svg)) == 2
    assert "4 readings" in svg


def test_a_silence_longer_than_the_gap_breaks_the_line() -> None:
    points = [*minutes(1, 2), (T0 + timedelta(minutes=30), 3), (T0 + timedelta(minutes=31), 4)]

    assert len(polylines(line_chart(points, title="t"))) == 1
    assert len(polylines(line_chart(points, title="t", max_gap=timedelta(minutes=3)))) == 2


def test_a_lone_reading_between_gaps_is_a_dot() -> None:
    svg = line_chart(minutes(None, 5, None), title="Power")

    assert polylines(svg) == []
    assert svg.count('<circle class="line"') == 1


def test_later_readings_are_further_right_and_higher_values_higher_up() -> None:
    svg = line_chart(minutes(10, 20, 30), title="Use", start=T0, end=T0 + timedelta(minutes=2))

    (line,) = polylines(svg)
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs)
    assert ys == sorted(ys, reverse=True)  # SVG's y grows downwards


def test_the_time_axis_spans_the_range_asked_for() -> None:
    start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    svg = line_chart(minutes(1, 2), title="Use", start=start, end=end)

    (line,) = polylines(svg)
    assert 56 + 250 < line[0][0] < 56 + 290  # the middle of the plot: T0 is halfway
    assert ">2025-03-01 11:00</text>" in svg
    assert ">2025-03-01 13:00</text>" in svg


def test_a_flat_line_is_drawn() -> None:
    (line,) = polylines(line_chart(minutes(7, 7, 7), title="Temperature"))

    assert len({y for _, y in line}) == 1


def test_without_readings_the_chart_says_so() -> None:
    for points in ([], minutes(None, None)):
        svg = line_chart(points, title="GPU 1 power", start=T0, end=T0 + timedelta(hours=1))

        assert 'aria-label="GPU 1 power: no readings in this period."' in svg
        assert ">No readings in this period</text>" in svg
        assert "<polyline" not in svg


def test_text_is_escaped() -> None:
    svg = line_chart(minutes(1, 2), title='<script>alert("x")</script>', unit="<b>")

    assert "<script>" not in svg
    assert "<b>" not in svg
    assert "&lt;script&gt;" in svg


def test_nothing_the_content_security_policy_forbids() -> None:
    svg = line_chart(minutes(1, None, 3, 4), title="Use", unit="%")

    assert "style" not in svg
    assert "<script" not in svg
    assert not re.search(r"\son\w+=", svg)  # no event handler attributes
    assert "href" not in svg


def test_numbers_show_at_most_one_decimal() -> None:
    assert number(40.0) == "40"
    assert number(90.54) == "90.5"
    assert number(1234.5) == "1,234.5"
