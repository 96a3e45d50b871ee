"""``batchwise keys create|list|revoke`` and ``batchwise serve``'s auth rules, run as real
processes: a key made by the CLI works over HTTP against a real ``batchwise serve`` with auth on
until the CLI revokes it; the database holds no key in plain text; ``serve`` refuses auth off
beyond loopback and warns when it runs with it (both backends where a database is involved)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.cli.server import is_loopback
from service.keys.service import hash_key
from tests.support.data import write_line_csv
from tests.support.processes import run_batchwise

ServeProcess = Callable[..., AbstractContextManager[str]]
REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = re.compile(r"bw_[0-9a-f-]{36}_[A-Za-z0-9_-]{43}")


def cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` with only the given ``BATCHWISE_*`` variables."""
    return run_batchwise(*args, env=env, timeout=60)


def create_key(db_url: str, tenant: str, *extra: str) -> str:
    made = cli("keys", "create", "--tenant", tenant, *extra, env={"BATCHWISE_DATABASE_URL": db_url})
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert KEY.fullmatch(key), made.stdout
    return key


def key_id(key: str) -> str:
    return key[3:39]


def list_rows(db_url: str, *extra: str) -> tuple[list[str], list[list[str]]]:
    listed = cli("keys", "list", *extra, env={"BATCHWISE_DATABASE_URL": db_url})
    assert listed.returncode == 0, listed.stderr
    header, *rows = [re.split(r"\s{2,}", line) for line in listed.stdout.splitlines()]
    return header, rows


def stored_keys(db_url: str) -> int:
    """How many keys the database holds (read directly: no process needed to see none)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(text("SELECT count(*) FROM api_keys")) or 0)
    finally:
        engine.dispose()


# --- keys -------------------------------------------------------------------------------------


def test_create_prints_the_key_once_and_list_shows_it_without_the_secret(db_url: str) -> None:
    env = {"BATCHWISE_DATABASE_URL": db_url}
    made = cli("keys", "create", "--tenant", "research", "--name", "alice laptop", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"  # alone on stdout: `KEY=$(batchwise keys create ...)`
    assert KEY.fullmatch(key)
    assert made.stderr == (
        f"Created API key {key_id(key)} (alice laptop) for tenant 'research'. The key is "
        "printed above, this once: it is stored only as a hash and will not be shown again.\n"
    )
    other = create_key(db_url, "ops")

    header, rows = list_rows(db_url)
    assert header == ["id", "tenant", "name", "created", "revoked"]
    assert [row[:3] for row in rows] == [
        [key_id(key), "research", "alice laptop"],
        [key_id(other), "ops", "-"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[3]) for row in rows)
    assert [row[4] for row in rows] == ["-", "-"]
    listed = cli("keys", "list", env={"BATCHWISE_DATABASE_URL": db_url}).stdout
    for secret in (key, other, key[40:], other[40:], hash_key(key), hash_key(other)):
        assert secret not in listed
    assert [row[0] for row in list_rows(db_url, "--tenant", "ops")[1]] == [key_id(other)]


def test_an_empty_list_says_how_to_make_a_key(db_url: str) -> None:
    listed = cli("keys", "list", "--tenant", "nobody", env={"BATCHWISE_DATABASE_URL": db_url})
    assert listed.returncode == 0
    assert listed.stdout == "id  tenant  name  created  revoked\n"
    assert listed.stderr == (
        "No API keys for tenant 'nobody': make one with `batchwise keys create`.\n"
    )


def test_the_database_stores_no_key_in_plain_text(db_url: str, tmp_path: Path) -> None:
    key = create_key(db_url, "research", "--name", "n")
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hash_key(key)
    stored = json.dumps({name: str(value) for name, value in rows[0].items()})
    assert key not in stored
    assert key[40:] not in stored  # nor the secret alone
    if db_url.startswith("sqlite"):
        # Not in any page of the file either (the WAL included), not even half of it.
        path = Path(db_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert key[40:60].encode() not in raw
        assert hash_key(key).encode() in raw  # the scan does see the row


def test_revoke_makes_the_key_unusable_twice_is_a_no_op_and_unknown_is_an_error(
    db_url: str,
) -> None:
    env = {"BATCHWISE_DATABASE_URL": db_url}
    key = create_key(db_url, "research")
    first = cli("keys", "revoke", key_id(key), env=env)
    assert first.returncode == 0, first.stderr
    assert (
        first.stdout == f"Revoked API key {key_id(key)} of tenant 'research': it now answers 401.\n"
    )
    revoked_at = list_rows(db_url)[1][0][4]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", revoked_at)

    again = cli("keys", "revoke", key_id(key), env=env)
    assert again.returncode == 0
    assert again.stdout == (
        f"API key {key_id(key)} of tenant 'research' was already revoked at {revoked_at}; "
        "nothing changed.\n"
    )
    assert list_rows(db_url)[1][0][4] == revoked_at

    unknown = cli("keys", "revoke", "no-such-id", env=env)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr == (
        "batchwise keys revoke: error: no API key with id 'no-such-id' (`batchwise keys list` "
        "shows the ids)\n"
    )


@pytest.mark.parametrize("tenant", ["Research", "a b", "-x", "x" * 64, ""])
def test_a_bad_tenant_name_is_refused_and_nothing_is_made(db_url: str, tenant: str) -> None:
    # --tenant=VALUE: argparse would read a bare "-x" as an option.
    made = cli("keys", "create", f"--tenant={tenant}", env={"BATCHWISE_DATABASE_URL": db_url})
    assert made.returncode == 2
    assert made.stdout == ""
    assert f"argument --tenant: Invalid tenant name {tenant!r}: use 1 to 63 lower-case " in (
        made.stderr
    )
    assert stored_keys(db_url) == 0


def test_a_name_over_200_characters_is_refused(tmp_path: Path) -> None:
    made = cli(
        "keys", "create", "--tenant", "a", "--name", "x" * 201, env={"BATCHWISE_DATA_DIR": "."}
    )
    assert made.returncode == 2
    assert "argument --name: the name is 201 characters long; at most 200" in made.stderr


def test_keys_refuse_an_unmigrated_database(blank_db_url: str) -> None:
    for args in (("create", "--tenant", "a"), ("list",), ("revoke", "x")):
        result = cli("keys", *args, env={"BATCHWISE_DATABASE_URL": blank_db_url})
        assert result.returncode == 1
        assert "no revision (empty)" in result.stderr
        assert "run `batchwise migrate` first" in result.stderr
        assert result.stdout == ""


def test_keys_help_names_the_actions() -> None:
    result = cli("keys", "--help", env={})
    assert result.returncode == 0
    shown = " ".join(result.stdout.split())  # argparse wraps lines
    for words in ("create", "list", "revoke", "Authorization: Bearer <key>", "batchwise migrate"):
        assert words in shown


# --- serve: auth off only on loopback ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "batchwise.example.com"])
def test_serve_refuses_auth_off_beyond_loopback(tmp_path: Path, host: str) -> None:
    env = {"BATCHWISE_AUTH": "off", "BATCHWISE_DATA_DIR": str(tmp_path / "data")}
    result = cli("serve", "--host", host, "--port", "0", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"batchwise serve: refused: BATCHWISE_AUTH=off is allowed only on a loopback address "
        f"(127.0.0.1, ::1, localhost), not on {host!r}: anyone who reaches it would act as the "
        "tenant 'default' without a key."
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching the database


def test_serve_with_auth_off_on_loopback_starts_and_warns(
    serve_process: ServeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
    with serve_process(database_url=url, data_dir=data_dir) as base_url:  # auth off by default
        assert httpx.get(f"{base_url}/v1/datasets", timeout=10).status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    warnings = [line for line in lines if line["level"] == "WARNING"]
    assert [(line["logger"], line["message"]) for line in warnings] == [
        (
            "service.cli",
            "auth is off (BATCHWISE_AUTH=off): every request acts as the tenant 'default' with "
            "no API key; allowed because the service listens on loopback 127.0.0.1 only",
        )
    ]


# --- end to end: a CLI key against a real server with auth on ---------------------------------


def wait_finished(client: httpx.Client, job_url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(job_url, headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"{job_url} did not finish: {job}")


def test_end_to_end_a_cli_key_on_a_real_server_with_auth_on(
    db_url: str, serve_process: ServeProcess, tmp_path: Path
) -> None:
    key = create_key(db_url, "research")
    other = create_key(db_url, "elsewhere")
    csv_path = write_line_csv(tmp_path / "line.csv", rows=200)
    mine, theirs = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other}"}
    env = {"BATCHWISE_AUTH": "on", "BATCHWISE_WORKERS": "1"}
    with (
        serve_process(database_url=db_url, data_dir=tmp_path / "data", env=env) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        with csv_path.open("rb") as file:
            refused = client.post("/v1/datasets", files={"file": ("line.csv", file)})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="batchwise"'
        with csv_path.open("rb") as file:
            uploaded = client.post(
                "/v1/datasets",
                files={"file": ("line.csv", file)},
                data={"name": "line"},
                headers=mine,
            )
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["id"]

        body = {"dataset_id": dataset_id, "epochs": 3, "batch_size": 16}
        assert client.post("/v1/jobs", json=body).status_code == 401
        submitted = client.post("/v1/jobs", json=body, headers=mine)
        assert submitted.status_code == 202, submitted.text
        job_url = submitted.headers["location"]
        job = wait_finished(client, job_url, mine)
        assert job["status"] == "succeeded", job

        history = client.get(f"{job_url}/history", headers=mine)
        assert history.status_code == 200
        assert history.json()["epoch"] == [1, 2, 3]
        assert client.get(f"{job_url}/history").status_code == 401
        assert client.get(f"{job_url}/history", headers=theirs).status_code == 404
        assert client.get("/v1/jobs", headers=theirs).json()["items"] == []

        revoked = cli("keys", "revoke", key_id(key), env={"BATCHWISE_DATABASE_URL": db_url})
        assert revoked.returncode == 0, revoked.stderr
        # The next request sees it: keys are checked against the database every time.
        after = client.get(f"{job_url}/history", headers=mine)
        assert after.status_code == 401
        assert f"API key {key_id(key)} was revoked at" in after.json()["detail"]
        assert client.get("/healthz").status_code == 200
