"""A sweep's typed answers name exactly the fields the science computes: the read schemas forbid
unknown fields, so a field added to a dataclass and not to its schema fails every sweep read;
this says which one, and that nothing is declared that is never sent."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from service.science import (
    CriticalBatchFit,
    Exclusion,
    FastestChoice,
    KneeChoice,
    NoiseScaleSummary,
    Recommendation,
)
from service.sweeps.read_schemas import (
    ExclusionRead,
    FastestRead,
    FitRead,
    KneeRead,
    NoiseSummaryRead,
    RecommendationRead,
)


@pytest.mark.parametrize(
    ("schema", "computed", "added"),
    [
        (FitRead, CriticalBatchFit, {"excluded"}),
        (ExclusionRead, Exclusion, set()),
        (RecommendationRead, Recommendation, set()),
        (FastestRead, FastestChoice, set()),
        (KneeRead, KneeChoice, set()),
        (NoiseSummaryRead, NoiseScaleSummary, {"batch_size", "learning_rate", "seed", "job_id"}),
    ],
)
def test_each_answer_schema_has_exactly_the_computed_fields(
    schema: type[BaseModel], computed: type, added: set[str]
) -> None:
    assert set(schema.model_fields) == {f.name for f in dataclasses.fields(computed)} | added
    assert schema.model_config.get("extra") == "forbid"
