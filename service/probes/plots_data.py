"""A probe's plot as plain data for :mod:`service.plots.probes`: one point per checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.errors import Conflict
from service.plots import CriticalPoint
from service.probes.service import get_probe

__all__ = ["CriticalPlotData", "critical_data"]


@dataclass(frozen=True)
class CriticalPlotData:
    points: list[CriticalPoint]
    title: str
    note: str | None


def critical_data(session: Session, probe_id: str, *, tenant: str) -> CriticalPlotData:
    """The probe's checkpoints as plot points; 409 before any checkpoint has samples seen."""
    probe = get_probe(session, probe_id, tenant=tenant)
    points = [
        CriticalPoint(
            samples=float(c.samples_seen),
            critical=None if c.critical.batch_size is None else float(c.critical.batch_size),
            above=None if c.critical.bracket[1] is None else float(c.critical.bracket[1]),
            b_simple=c.b_simple,
        )
        for c in probe.checkpoints
        if c.samples_seen
    ]
    if not points:
        raise Conflict(
            f"Probe {probe_id!r} has no checkpoint with samples seen yet ({probe.status}): its "
            "plot exists once the source has recorded the checkpoints' epochs."
        )
    label = probe.name or f"probe {probe.id[:8]}"
    missing = [c.epoch for c in probe.checkpoints if c.critical.batch_size is None]
    note = None
    if probe.partial:
        note = "running: figures may still change"
    elif missing:
        note = f"no critical batch at epochs {missing}"
    return CriticalPlotData(
        points=points,
        title=f"Critical batch of {label} (tolerance {probe.tolerance:g})",
        note=note,
    )
