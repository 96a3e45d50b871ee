"""``batchwise tenants list|set-limits`` as real processes on both backends: a tenant's own
limits are stored, shown (marked ``*``) beside the defaults, and cleared with ``default``."""

from __future__ import annotations

import re
import subprocess

from sqlalchemy import create_engine, text

from tests.support.processes import run_batchwise


def cli(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_batchwise(
        "tenants", *args, env={"BATCHWISE_DATABASE_URL": db_url, **env}, timeout=60
    )


def table(db_url: str) -> dict[str, dict[str, str]]:
    listed = cli(db_url, "list", BATCHWISE_TENANT_MAX_RUNNING_JOBS="5")
    assert listed.returncode == 0, listed.stderr
    header, *rows = [re.split(r"\s{2,}", line.strip()) for line in listed.stdout.splitlines()]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}


def test_set_limits_is_stored_shown_beside_the_defaults_and_cleared(db_url: str) -> None:
    made = run_batchwise(
        "keys", "create", "--tenant", "alpha", env={"BATCHWISE_DATABASE_URL": db_url}, timeout=60
    )
    assert made.returncode == 0, made.stderr
    before = table(db_url)
    assert before["(default)"]["max-running"] == before["alpha"]["max-running"] == "5"

    changed = cli(db_url, "set-limits", "beta", "--max-running", "8", "--max-runtime", "3600")
    assert changed.returncode == 0, changed.stderr
    assert "max_running_jobs 8, max_job_runtime_s 3600" in changed.stdout
    shown = table(db_url)
    assert (shown["beta"]["max-running"], shown["beta"]["max-runtime"]) == ("8*", "3600*")
    assert shown["beta"]["max-queued"] == shown["(default)"]["max-queued"] == "1,000"
    assert shown["alpha"]["max-running"] == "5"

    cleared = cli(db_url, "set-limits", "beta", "--max-running", "default")
    assert cleared.returncode == 0, cleared.stderr
    shown = table(db_url)
    assert (shown["beta"]["max-running"], shown["beta"]["max-runtime"]) == ("5", "3600*")
    cli(db_url, "set-limits", "beta", "--max-runtime", "default")
    assert "beta" not in table(db_url)  # no key and no limits of its own: not a tenant
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tenant_limits")).scalar() == 0
    finally:
        engine.dispose()


def test_set_limits_refuses_nothing_to_set_and_bad_values(db_url: str) -> None:
    nothing = cli(db_url, "set-limits", "alpha")
    assert (nothing.returncode, nothing.stdout) == (2, "")
    assert "name at least one limit (--max-running" in nothing.stderr
    for value, reason in (("0", "0 is not positive"), ("x", "'x' is not a whole number")):
        bad = cli(db_url, "set-limits", "alpha", "--max-running", value)
        assert bad.returncode == 2
        assert f"argument --max-running: {reason}" in bad.stderr
    bad_name = cli(db_url, "set-limits", "Not A Name", "--max-running", "3")
    assert bad_name.returncode == 2
    assert "NAME" in bad_name.stderr
    assert table(db_url).keys() == {"(default)"}
