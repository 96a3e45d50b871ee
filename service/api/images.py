"""Plot routes, one operation per image format: ``…/loss.svg`` and ``…/loss.png`` are two
operations (``getJobLossPlotSvg``, ``getJobLossPlotPng``), each declaring its one media type as
binary, so a generated client knows what it gets back. The ``…/loss.{fmt}`` form they replace
still answers, undocumented: another extension is a 422 that lists the formats.

A plot's endpoint is written once, with an ``fmt`` path parameter; :func:`add_image_routes`
registers it under each format's own path with ``fmt`` fixed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from typing import Any

from fastapi import APIRouter, Response

from service.api.problems import problem_responses
from service.plots import MEDIA_TYPES, PLOT_FORMATS, PlotFormat

#: What every plot can answer besides the image: unknown id, nothing to plot yet, bad query.
_PLOT_PROBLEMS = problem_responses(404, 409, 422)
BINARY = {"type": "string", "format": "binary"}


def image_response(image: bytes, fmt: PlotFormat) -> Response:
    """The image with its media type. A running job's, sweep's or probe's plot changes with
    every epoch: caches must ask again."""
    return Response(image, media_type=MEDIA_TYPES[fmt], headers={"Cache-Control": "no-cache"})


def add_image_routes(
    router: APIRouter,
    path: str,
    endpoint: Callable[..., Response],
    *,
    operation_id: str,
    summary: str,
    description: str,
    tags: list[str | Enum] | None = None,
) -> None:
    """``GET path`` (which ends in ``.{fmt}``) as one documented operation per format,
    ``operation_id`` + ``Svg`` / ``Png``, and the ``{fmt}`` form, undocumented."""
    for fmt in PLOT_FORMATS:
        router.add_api_route(
            path.replace("{fmt}", fmt),
            _with_format(endpoint, fmt),
            methods=["GET"],
            operation_id=operation_id + fmt.capitalize(),
            response_class=Response,
            summary=f"{summary} ({fmt.upper()})",
            description=description,
            tags=tags,
            responses={
                200: {
                    "description": f"The plot as {fmt.upper()}.",
                    "content": {MEDIA_TYPES[fmt]: {"schema": BINARY}},
                },
                **_PLOT_PROBLEMS,
            },
        )
    router.add_api_route(
        path, endpoint, methods=["GET"], response_class=Response, include_in_schema=False
    )


def _with_format(endpoint: Callable[..., Response], fmt: PlotFormat) -> Callable[..., Response]:
    """``endpoint`` with its ``fmt`` parameter fixed, and a signature without it (FastAPI
    reads the parameters from the signature; annotations evaluated, as they are strings in
    the endpoint's module)."""
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: plot endpoints are sync (they render on a thread)")
    signature = inspect.signature(endpoint, eval_str=True)

    def bound(**kwargs: Any) -> Response:
        return endpoint(fmt=fmt, **kwargs)

    bound.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "fmt"]
    )
    bound.__name__ = f"{endpoint.__name__}_{fmt}"
    bound.__doc__ = endpoint.__doc__
    return bound


__all__ = ["add_image_routes", "image_response"]
