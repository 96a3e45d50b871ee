"""The job page's "Continue training": a form that posts a warm start (``init_from``) from one
of the job's checkpoints, with the job's own settings as the base and a new batch size,
learning rate and length on top."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from service.jobs import checkpoints
from service.jobs.read_schemas import JobRead

__all__ = ["continue_form"]


def continue_form(session: Session, job: JobRead, *, tenant: str) -> dict[str, Any] | None:
    """What the form needs: ``base`` (the job's settings as JSON, written over by the form's
    fields), the ``epochs`` it can start from (newest first) and the ``until`` epoch to offer
    (as many epochs again as the job ran); None when the job has no checkpoint yet."""
    listed = checkpoints.list_checkpoints(session, job.id, tenant=tenant)
    usable = [item for item in listed.items if item.kept or item.latest]
    if not usable:
        return None
    started = job.init_from.epoch if job.init_from is not None else 0
    newest = usable[-1].epoch
    base = {"dataset_id": job.dataset_id, **job.config.model_dump(mode="json")}
    return {
        "base": json.dumps(base),
        "epochs": list(reversed(usable)),
        "until": newest + max(1, job.progress.epochs - started),
    }
