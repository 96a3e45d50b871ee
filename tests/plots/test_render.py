"""What every plot shares: formats, the log-axis rule, bytes that depend on the data only,
no pyplot, and matplotlib loaded only by the first plot."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from service.plots import MEDIA_TYPES, PLOT_FORMATS, LossHistory, render_job_loss
from service.plots.render import figure_bytes, new_figure, spans_decades

SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    from service.plots import LossHistory, render_job_loss
    history = LossHistory(epoch=[1, 2], train_loss=[1.0, 0.5], val_loss=[1.1, 0.6],
                          steps_per_epoch=[2, 2], step=[1, 2, 3, 4], step_loss=[1.2, 0.9, 0.6, 0.4])
    for fmt in ("svg", "png"):
        print(hashlib.sha256(render_job_loss(history, fmt)).hexdigest())
    print("matplotlib.pyplot" in sys.modules)
    """
)


def test_another_process_draws_the_same_bytes_without_pyplot() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    svg_sha, png_sha, pyplot_loaded = done.stdout.split()
    history = LossHistory(
        epoch=[1, 2],
        train_loss=[1.0, 0.5],
        val_loss=[1.1, 0.6],
        steps_per_epoch=[2, 2],
        step=[1, 2, 3, 4],
        step_loss=[1.2, 0.9, 0.6, 0.4],
    )
    assert hashlib.sha256(render_job_loss(history, "svg")).hexdigest() == svg_sha
    assert hashlib.sha256(render_job_loss(history, "png")).hexdigest() == png_sha
    assert pyplot_loaded == "False"  # pyplot (global figures, not thread-safe) never loaded


@pytest.mark.parametrize("module", ["service.api.app", "service.worker.loop", "service.plots"])
def test_matplotlib_is_imported_by_the_first_plot_not_at_start(module: str) -> None:
    script = (
        f"import sys, {module}; from service.plots import LossHistory, render_job_loss; "
        "before = 'matplotlib' in sys.modules; "
        "render_job_loss(LossHistory(epoch=[1], train_loss=[1.0], val_loss=[None], "
        "steps_per_epoch=[1], step=[1], step_loss=[1.0]), 'svg'); "
        "print(before, 'matplotlib' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "True"]


FIRST_PLOTS_AT_ONCE = textwrap.dedent(
    """
    import threading
    from service.plots import LossHistory, ScalingPoint, render_job_loss, render_sweep_scaling
    from service.plots.sweeps import batch_colors
    from service.plots.render import new_figure
    history = LossHistory(epoch=[1], train_loss=[1.0], val_loss=[None], steps_per_epoch=[1],
                          step=[1], step_loss=[1.0])
    points = [ScalingPoint(batch_size=8, steps_to_target=10), ScalingPoint(16, 6)]
    calls = [lambda: render_job_loss(history, "svg"), lambda: batch_colors([8, 16]),
             lambda: render_sweep_scaling(points, None, fmt="svg"), lambda: new_figure(3.0)]
    start, errors = threading.Barrier(8), []
    def first_plot(call):
        start.wait()
        try:
            call()
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=first_plot, args=(calls[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(errors)
    """
)


def test_first_plots_drawn_at_once_by_threads_all_import_matplotlib_whole() -> None:
    """The API draws plots in its thread pool: the first ones of a process, at once, must not
    see each other's half-imported matplotlib (they did: ImportError, a 500 for each)."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PLOTS_AT_ONCE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[]"


def test_formats_and_media_types() -> None:
    assert PLOT_FORMATS == ("svg", "png")
    assert MEDIA_TYPES == {"svg": "image/svg+xml", "png": "image/png"}
    with pytest.raises(ValueError, match="unknown plot format 'jpg'"):
        figure_bytes(new_figure(3.0), "jpg")  # type: ignore[arg-type]


def test_svg_carries_no_date_and_png_no_software_chunk() -> None:
    figure = new_figure(3.0)
    figure.add_subplot().plot([1, 2], [3, 4])
    svg = figure_bytes(figure, "svg")
    assert b"<dc:date>" not in svg
    png = figure_bytes(figure, "png")
    assert b"Software" not in png
    assert hashlib.sha256(figure_bytes(figure, "png")).digest() == hashlib.sha256(png).digest()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 0.011], False),  # 91×: under two decades
        ([1.0, 0.009], True),  # 111×
        ([1.0, None, 0.001, float("nan")], True),  # missing and non-finite values ignored
        ([5.0, 0.0, 0.001], False),  # a zero cannot go on a log axis
        ([5.0, -1.0, 0.001], False),
        ([], False),
        ([None], False),
    ],
)
def test_log_axis_rule(values: list[float | None], expected: bool) -> None:
    assert spans_decades(values) is expected
