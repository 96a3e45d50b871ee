"""Names reach the plots as plain text (issue 11, finding 6): a sweep named ``$\\frac{$`` made
every plot of it a 500, as matplotlib parsed the name in the title as math text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.api import create_app
from service.config import Settings
from service.db import session_factory
from service.plots.render import figure_bytes, new_figure
from service.sweeps.repository import jobs_of
from tests.support.factories import line_data
from tests.support.sweeps import EPOCHS, finish_with_crossing

#: Unbalanced math, a TeX command, and dollars that would pair up into math.
NAMES = ["$\\frac{$", "\\usepackage{x} $x^{2$", "costs $5 and $6"]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("name", NAMES)
def test_every_plot_of_a_sweep_with_a_mathy_name_renders(
    client: TestClient, engine: Engine, name: str
) -> None:
    X, y = line_data(200)
    dataset = client.post("/v1/datasets", json={"name": name, "X": X.tolist(), "y": y.tolist()})
    assert dataset.status_code == 201, dataset.text
    sweep = client.post(
        "/v1/sweeps",
        json={
            "dataset_id": dataset.json()["id"],
            "name": name,
            "base": {"epochs": EPOCHS, "tags": [name[:50]]},
            "batch_sizes": [8, 16, 32],
            "learning_rates": [0.01],
            "target_loss": 0.5,
        },
    )
    assert sweep.status_code == 202, sweep.text
    sweep_id = sweep.json()["id"]
    with session_factory(engine)() as session:
        for job in jobs_of(session, sweep_id):
            finish_with_crossing(session, job, 20.0)
        session.commit()
        point = jobs_of(session, sweep_id)[0].id

    for plot in ("curves", "scaling"):
        for fmt, media_type in (("svg", "image/svg+xml"), ("png", "image/png")):
            response = client.get(f"/v1/sweeps/{sweep_id}/plots/{plot}.{fmt}")
            assert response.status_code == 200, (plot, fmt, response.text)
            assert response.headers["content-type"] == media_type
    loss = client.get(f"/v1/jobs/{point}/plots/loss.svg")  # a point's name carries the sweep's
    assert loss.status_code == 200, loss.text


def test_titles_labels_and_legends_are_drawn_as_plain_text() -> None:
    figure = new_figure(3.0)
    ax = figure.subplots()
    ax.plot([1, 10, 100], [1, 2, 3], label="$\\frac{$")
    ax.set_title("$x^2$")
    ax.set_xlabel("$a$")
    ax.set_ylabel("$b$")
    ax.set_yscale("log")
    ax.legend(title="$\\frac{$")
    figure_bytes(figure, "svg")
    legend = ax.get_legend()
    assert legend is not None
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, legend.get_title(), *legend.get_texts()]
    assert len(texts) == 5
    assert [text.get_parse_math() for text in texts] == [False] * 5
    assert [text.get_usetex() for text in texts] == [False] * 5
    # The ticks keep their math text: a log axis writes 10² with it.
    assert all(tick.get_parse_math() for tick in ax.xaxis.get_ticklabels())
