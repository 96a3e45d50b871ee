"""The links a read schema carries: where the resource is, its sub-resources, its dataset."""

from __future__ import annotations

from collections.abc import Iterable

DATASETS_PATH = "/v1/datasets"


def links(
    collection: str,
    row_id: str,
    *,
    dataset_id: str,
    subresources: Iterable[str] = (),
    **others: str,
) -> dict[str, str]:
    """``self`` = ``{collection}/{row_id}``, ``{self}/{name}`` for each of ``subresources``,
    the ``others`` as given, and ``dataset`` = ``/v1/datasets/{dataset_id}``."""
    base = f"{collection}/{row_id}"
    return {
        "self": base,
        **{name: f"{base}/{name}" for name in subresources},
        **others,
        "dataset": f"{DATASETS_PATH}/{dataset_id}",
    }


__all__ = ["DATASETS_PATH", "links"]
