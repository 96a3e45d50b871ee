"""Fixtures of the fault tests: a private PostgreSQL server that a test may stop and restart
(see :class:`tests.support.private_postgres.PrivatePostgres`). Missing binaries skip its tests,
or fail them when ``CI`` is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import in_ci
from tests.support.private_postgres import SERVER_USER, PrivatePostgres, postgres_bindir
from tests.support.processes import find_free_port


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI is set but {reason}: the PostgreSQL fault tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this run's own, running; removed at the end of the run."""
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) were found")
        raise AssertionError("unreachable")  # pytest.skip/fail raise; this tells mypy
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            _unavailable(f"running as root and there is no {SERVER_USER!r} OS user to run as")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root and there is no runuser to drop privileges with")
        run_as = [str(runuser), "-u", SERVER_USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="batchwise-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bindir=bindir, root=root, port=find_free_port(), run_as=run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_postgres_url(private_postgres: PrivatePostgres) -> Iterator[str]:
    """URL of a new, migrated database on :func:`private_postgres`, dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    url = private_postgres.create_database(name)
    try:
        yield url
    finally:
        if not private_postgres.is_running():  # a test that failed while it was stopped
            private_postgres.start()
        private_postgres.drop_database(name)
