"""A sweep's plots from plain data: overlaid curves coloured by batch size with the target,
and steps and samples to target against batch size with the fitted model."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_hex

from service.plots import (
    PLOT_FORMATS,
    ScalingFit,
    ScalingPoint,
    SweepCurve,
    render_sweep_curves,
    render_sweep_scaling,
)
from service.plots.sweeps import batch_colors, short_number
from tests.support.images import (
    markers,
    path_vertices,
    png_size,
    stroke,
    svg_group,
    svg_ids,
    svg_root,
)

BATCHES = [8, 64, 512]


def curve(batch_size: int, seed: int = 0, n: int = 6) -> SweepCurve:
    """Loss 1/(1 + samples/500) at steps 1, 2, 4, … (powers of two), epochs of 1,000 rows."""
    step = 2.0 ** np.arange(n)
    samples = step * batch_size
    loss = 1.0 / (1.0 + samples / 500.0) + 0.01 * seed
    return SweepCurve(
        batch_size=batch_size,
        loss=loss.tolist(),
        x={
            "step": step.tolist(),
            "samples": samples.tolist(),
            "epoch": (samples / 1000.0).tolist(),
            "time": (step * 0.01).tolist(),
        },
        seed=seed,
    )


def curves() -> list[SweepCurve]:
    return [curve(b, seed) for b in BATCHES for seed in (0, 1)]


def test_every_curve_is_drawn_with_one_colour_per_batch_size_in_colormap_order() -> None:
    svg = render_sweep_curves(curves(), x="epoch", target=0.2, fmt="svg")
    root = svg_root(svg)
    ids = svg_ids(svg)
    assert {"curve_B8", "curve_B8_2", "curve_B64", "curve_B64_2", "curve_B512"} <= ids
    assert {"curve_B512_2", "target"} <= ids
    colours = {
        gid: stroke(g)
        for gid in ids
        if gid.startswith("curve_")
        if (g := svg_group(root, gid)) is not None
    }
    assert colours["curve_B8"] == colours["curve_B8_2"] == to_hex(colormaps["viridis"](0.0))
    assert colours["curve_B512"] == to_hex(colormaps["viridis"](0.85))
    assert len({colours["curve_B8"], colours["curve_B64"], colours["curve_B512"]}) == 3


def test_the_legend_names_each_batch_size_once_and_the_target() -> None:
    root = svg_root(render_sweep_curves(curves(), target=0.2, fmt="svg"))
    legend = svg_group(root, "legend_1")
    assert legend is not None
    texts = [g for g in legend.iter() if g.attrib.get("id", "").startswith("text_")]
    assert len(texts) == len(BATCHES) + 1  # "B = 8", "B = 64", "B = 512", "target 0.2"


def test_without_a_target_no_line_is_drawn() -> None:
    assert "target" not in svg_ids(render_sweep_curves(curves(), fmt="svg"))


def test_steps_across_batch_sizes_go_on_a_log_axis() -> None:
    # Steps 1 … 32: 1.5 decades, linear; stretched to 1 … 1024 they span three: log.
    short = svg_group(render_sweep_curves([curve(8, n=6)], x="step", fmt="svg"), "curve_B8")
    long = svg_group(render_sweep_curves([curve(8, n=11)], x="step", fmt="svg"), "curve_B8")
    assert short is not None
    assert long is not None
    xs_short = [x for x, _ in path_vertices(short)]
    xs_long = [x for x, _ in path_vertices(long)]
    long_gaps = np.diff(xs_long)
    assert long_gaps == pytest.approx([long_gaps[0]] * 10, rel=1e-4)  # doublings: equal steps
    short_gaps = np.diff(xs_short)
    assert short_gaps[-1] == pytest.approx(16 * short_gaps[0], rel=1e-4)  # linear


def test_on_a_log_axis_points_at_zero_are_left_out() -> None:
    data = SweepCurve(8, [1.0, 0.5, 0.1, 0.01], {"step": [0.0, 10.0, 100.0, 10_000.0]})
    line = svg_group(render_sweep_curves([data], x="step", fmt="svg"), "curve_B8")
    assert line is not None
    assert len(path_vertices(line)) == 3


@pytest.mark.parametrize("x", ["epoch", "step", "samples", "time"])
def test_every_x_axis_renders_a_wide_png(x: str) -> None:
    width, _ = png_size(render_sweep_curves(curves(), x=x, target=0.2, fmt="png"))  # type: ignore[arg-type]
    assert width == 1200


def test_curves_are_deterministic() -> None:
    for fmt in PLOT_FORMATS:
        first = render_sweep_curves(curves(), target=0.2, fmt=fmt)
        assert render_sweep_curves(curves(), target=0.2, fmt=fmt) == first


def test_curve_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown x axis 'loss'; expected one of epoch, step"):
        render_sweep_curves(curves(), x="loss", fmt="svg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no curves"):
        render_sweep_curves([], fmt="svg")
    missing = SweepCurve(32, [1.0, 0.5], {"epoch": [1.0, 2.0]})
    with pytest.raises(ValueError, match="batch size 32 has no 'time' axis \\(it has: epoch\\)"):
        render_sweep_curves([missing], x="time", fmt="svg")
    short = SweepCurve(32, [1.0, 0.5], {"epoch": [1.0]})
    with pytest.raises(ValueError, match="has 2 losses and 1 'epoch' positions"):
        render_sweep_curves([short], fmt="svg")


def test_batch_colours_follow_the_sorted_batch_sizes() -> None:
    colours = batch_colors([512, 8, 64, 8])
    assert list(colours) == [8, 64, 512]
    cmap = colormaps["viridis"]
    assert colours[8] == cmap(0.0)
    assert colours[64] == cmap(0.425)
    assert colours[512] == cmap(0.85)
    assert batch_colors([32]) == {32: cmap(0.0)}


# --- scaling -------------------------------------------------------------------------------

FIT = ScalingFit(s_min=100.0, b_noise=600.0, b_noise_low=450.0, b_noise_high=800.0)


def points(reached: int = 6) -> list[ScalingPoint]:
    """S(B) of FIT exactly at B = 8 … 256; the largest batch sizes never reach the target."""
    sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
    return [
        ScalingPoint(b, float(FIT.steps(np.array(b))) if i < reached else None)
        for i, b in enumerate(sizes)
    ]


def test_the_fitted_model_in_closed_form() -> None:
    assert FIT.e_min == 60_000.0
    # S(B_noise) = 2 S_min; E(B_noise) = B_noise · S(B_noise) = 2 E_min.
    assert float(FIT.steps(np.array(600.0))) == 200.0
    assert 600.0 * float(FIT.steps(np.array(600.0))) == 2 * FIT.e_min
    assert FIT.steps(np.array([8.0]), 450.0).tolist() == [100.0 * (1 + 450.0 / 8.0)]
    assert ScalingPoint(8, 10.0).samples == 80.0
    assert ScalingPoint(8, 10.0, samples_to_target=75.0).samples == 75.0
    assert ScalingPoint(8, None).samples is None


def test_scaling_draws_points_fit_band_asymptotes_and_b_noise_in_both_panels() -> None:
    svg = render_sweep_scaling(points(), FIT, fmt="svg")
    ids = svg_ids(svg)
    for panel in ("steps", "samples"):
        for series in ("points", "unreached", "fit", "band", "b_noise"):
            assert f"{series}_{panel}" in ids, (series, panel)
    assert {"s_min", "e_min"} <= ids
    root = svg_root(svg)
    measured, missed = svg_group(root, "points_steps"), svg_group(root, "unreached_steps")
    assert measured is not None
    assert missed is not None
    assert len(markers(measured)) == 6
    assert len(markers(missed)) == 2
    # Never reached: at the top edge, above every measured point (SVG y points down).
    assert max(y for _, y in markers(missed)) < min(y for _, y in markers(measured))


def test_the_measured_points_lie_on_the_fitted_curve() -> None:
    # On the log-log panel the fit line passes through the exact S(B) points: the marker at
    # B = 64 sits between the two nearest vertices of the fit's 200-point polyline.
    root = svg_root(render_sweep_scaling(points(), FIT, fmt="svg"))
    measured, fitted = svg_group(root, "points_steps"), svg_group(root, "fit_steps")
    assert measured is not None
    assert fitted is not None
    line = np.array(path_vertices(fitted))
    for x, y in markers(measured):
        assert float(np.interp(x, line[:, 0], line[:, 1])) == pytest.approx(y, abs=0.5)


def test_without_a_fit_only_the_points_and_the_note_are_drawn() -> None:
    svg = render_sweep_scaling(
        points(reached=2), None, fmt="svg", note="No fit: fewer than three points reached it."
    )
    ids = svg_ids(svg)
    assert {"points_steps", "unreached_samples"} <= ids
    assert not {"fit_steps", "band_steps", "b_noise_steps", "s_min"} & ids
    # Nothing reached and nothing fitted still renders (a fixed log range).
    nothing = render_sweep_scaling([ScalingPoint(64, None)], None, fmt="png")
    assert png_size(nothing)[0] == 1200


def test_a_fit_without_an_interval_has_no_band() -> None:
    ids = svg_ids(render_sweep_scaling(points(), ScalingFit(100.0, 600.0), fmt="svg"))
    assert "fit_steps" in ids
    assert "band_steps" not in ids


def test_scaling_png_is_wide_and_deterministic() -> None:
    png = render_sweep_scaling(points(), FIT, fmt="png")
    assert png_size(png) == (1200, 1050)
    assert render_sweep_scaling(points(), FIT, fmt="png") == png
    assert render_sweep_scaling(points(), FIT, fmt="svg") == render_sweep_scaling(
        points(), FIT, fmt="svg"
    )


def test_scaling_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="no sweep points"):
        render_sweep_scaling([], FIT, fmt="svg")
    with pytest.raises(ValueError, match="batch sizes must be at least 1"):
        render_sweep_scaling([ScalingPoint(0, 5.0)], None, fmt="svg")
    with pytest.raises(ValueError, match=r"b_noise must be a positive finite number, got -3\.0"):
        ScalingFit(100.0, -3.0)
    with pytest.raises(ValueError, match="s_min must be a positive finite number, got nan"):
        ScalingFit(float("nan"), 3.0)
    with pytest.raises(ValueError, match="give both b_noise_low and b_noise_high"):
        ScalingFit(100.0, 600.0, b_noise_low=400.0)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1234.5, "1,230"), (600.0, "600"), (0.04567, "0.0457"), (12.34, "12.3"), (2e6, "2,000,000")],
)
def test_short_number(value: float, text: str) -> None:
    assert short_number(value) == text
