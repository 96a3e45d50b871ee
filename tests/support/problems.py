"""Checks on the problem+json answers (RFC 9457) every error of the API is rendered as."""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    """The problem+json body of ``response``, checked to have ``status`` (and ``type_`` when
    given) and the members every problem of ours carries: a ``type``, a ``title`` and a
    non-empty ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if type_ is not None:
        assert body["type"] == type_
    return body


def locs(problem: dict[str, Any]) -> list[list[Any]]:
    """The ``loc`` of each field error of ``problem`` (none when it lists no errors)."""
    return [error["loc"] for error in problem.get("errors") or []]
