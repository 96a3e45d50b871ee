"""A probe's plot: the critical batch with its brackets, and B_simple, log–log."""

from __future__ import annotations

import pytest

from service.plots import CriticalPoint, render_probe_critical
from tests.support.images import svg_root

POINTS = [
    CriticalPoint(samples=1000.0, critical=8.0, above=16.0, b_simple=20.0),
    CriticalPoint(samples=4000.0, critical=32.0, above=64.0, b_simple=90.0),
    CriticalPoint(samples=16000.0, critical=128.0, above=None, b_simple=None),
    CriticalPoint(samples=64000.0, critical=None, above=None, b_simple=400.0),
]


def _ids(svg: bytes) -> set[str]:
    return {element.get("id", "") for element in svg_root(svg).iter()}


def test_the_svg_draws_each_series_and_the_same_data_gives_the_same_bytes() -> None:
    svg = render_probe_critical(POINTS, fmt="svg", title="probe")
    assert {"critical", "brackets", "open_ended", "b_simple"} <= _ids(svg)
    assert render_probe_critical(POINTS, fmt="svg", title="probe") == svg
    png = render_probe_critical(POINTS, fmt="png")
    assert png.startswith(b"\x89PNG")


def test_without_measurements_only_the_axes_and_without_points_an_error() -> None:
    bare = render_probe_critical(
        [CriticalPoint(samples=10.0, critical=None, above=None, b_simple=None)], fmt="svg"
    )
    assert not {"critical", "brackets", "open_ended", "b_simple"} & _ids(bare)
    with pytest.raises(ValueError, match="no checkpoint"):
        render_probe_critical([], fmt="svg")
