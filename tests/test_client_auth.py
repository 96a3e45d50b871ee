"""The clients carry the API key: :class:`service.client.BatchwiseClient` (``api_key=``, else
``BATCHWISE_API_KEY``) and ``batchwise datasets|jobs`` (``--api-key``, else the variable),
against a real ``batchwise serve`` with auth on and a key made by ``batchwise keys create``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from service.client import API_KEY_ENV, BatchwiseAPIError, BatchwiseClient
from tests.support.processes import run_batchwise, run_server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, str]]:
    """A server with auth on, shared by this file's tests (each works as tenants of its own:
    ``a`` and ``b`` for the Python client, ``c`` for the terminal one); its URL and the keys."""
    data_dir = tmp_path_factory.mktemp("client-auth") / "data"
    database = {"BATCHWISE_DATABASE_URL": f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"}
    with run_server(
        database_url=database["BATCHWISE_DATABASE_URL"],
        data_dir=data_dir,
        env={"BATCHWISE_AUTH": "on"},
    ) as base_url:
        keys = []
        for tenant in ("a", "b", "c"):
            made = run_batchwise("keys", "create", "--tenant", tenant, env=database)
            assert made.returncode == 0, made.stderr
            keys.append(made.stdout.strip())
        yield base_url, keys[0], keys[1], keys[2]


def test_the_python_client_sends_its_key_or_the_environments(
    service: tuple[str, str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, key_a, key_b, _ = service
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with BatchwiseClient(base_url, api_key=key_a) as client:
        dataset = client.create_dataset_inline(np.eye(3), np.arange(3.0), name="mine")
        assert [d["id"] for d in client.list_datasets()["items"]] == [dataset["id"]]

    with BatchwiseClient(base_url) as client, pytest.raises(BatchwiseAPIError) as refused:
        client.list_datasets()
    assert refused.value.status == 401
    assert refused.value.detail is not None
    assert "No API key" in refused.value.detail

    monkeypatch.setenv(API_KEY_ENV, key_b)
    with BatchwiseClient(base_url) as client:  # tenant b, from the environment
        assert client.list_datasets()["items"] == []
        with pytest.raises(BatchwiseAPIError) as hidden:
            client.get_dataset(dataset["id"])
        assert hidden.value.status == 404
    with BatchwiseClient(base_url, api_key=key_a) as client:  # the argument wins
        assert client.get_dataset(dataset["id"])["name"] == "mine"


def test_the_terminal_client_takes_the_flag_or_the_environment_and_says_how_on_401(
    service: tuple[str, str, str, str],
) -> None:
    base_url, _, _, key_c = service
    listed = ("datasets", "list", "--url", base_url, "--json")

    refused = run_batchwise(*listed, env={})
    assert refused.returncode == 1
    assert "401 Unauthorized" in refused.stderr
    assert f"give an API key with --api-key or ${API_KEY_ENV}" in refused.stderr

    by_flag = run_batchwise(*listed, "--api-key", key_c, env={})
    by_env = run_batchwise(*listed, env={API_KEY_ENV: key_c})
    for result in (by_flag, by_env):
        assert result.returncode == 0, result.stderr
        assert '"items": []' in result.stdout
