"""The wheel the Docker image installs is self-contained: it carries the Alembic migrations
inside the package (``service/_migrations``), where :mod:`service.db.migrate` finds them through
``importlib.resources``, so ``batchwise migrate`` works from an install with no checkout beside
it; and it installs no top-level package but ``service``.

The wheel is built from a copy of the sources the image's build context holds (as the
Dockerfile's ``pip wheel`` does) and installed with ``--target`` into a folder put first on
``PYTHONPATH``; its dependencies come from the test environment. The full install on a bare
Python — every dependency from wheels, ``migrate`` and ``serve`` — runs in ``.ci/run``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service.db.migrate import current_revision, head_revision

from .files import REPO_ROOT

#: What the Dockerfile's build stage copies (and .dockerignore lets through).
BUILD_CONTEXT = ("pyproject.toml", "setup.py", "README.md", "service", "migrations")

WHERE_AND_MIGRATE = """\
import sys
from service.cli import main
from service.db.migrate import migrations_dir
print(migrations_dir())
sys.exit(main(["migrate"]))
"""


def migration_files() -> set[str]:
    """The repository's migration scripts and template, as paths inside a wheel."""
    root = REPO_ROOT / "migrations"
    return {
        "service/_migrations/" + path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix in (".py", ".mako") and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by pip from a copy of the build context."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in BUILD_CONTEXT:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    pip(["wheel", "--no-deps", "--wheel-dir", work / "wheels", source], timeout=240)
    (built,) = (work / "wheels").glob("batchwise-*.whl")
    return built


def pip(arguments: list[str | Path], *, timeout: float) -> None:
    """Run pip quietly; AssertionError with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "-q", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"pip {arguments[0]} failed:\n{result.stdout}{result.stderr}"


def install(wheel: Path, target: Path) -> None:
    pip(["install", "--no-deps", "--target", target, wheel], timeout=120)


def run_migrate(site: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """``batchwise migrate`` of a SQLite file in ``work``, importing ``service`` from ``site``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env |= {"PYTHONPATH": str(site), "BATCHWISE_DATA_DIR": str(work / "data")}
    return subprocess.run(
        [sys.executable, "-c", WHERE_AND_MIGRATE],
        cwd=work,  # not the checkout: nothing of it may be found by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_carries_every_migration(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = migration_files()
    assert {"service/_migrations/env.py", "service/_migrations/script.py.mako"} <= expected
    assert len([n for n in expected if n.startswith("service/_migrations/versions/")]) >= 3
    assert expected <= names
    assert "service/db/migrate.py" in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("batchwise-")}
    assert top_level == {"service"}  # no top-level `migrations` to merge with another


def test_the_wheel_requires_threadpoolctl_without_extras(wheel: Path) -> None:
    """A plain install caps a worker's BLAS threads with threadpoolctl: it is a dependency of
    the package itself, not of an extra."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    required = [line for line in lines if line.startswith("Requires-Dist: threadpoolctl")]
    assert required
    assert [line for line in required if "extra ==" not in line] == [
        "Requires-Dist: threadpoolctl>=3.5"
    ]


def test_an_installed_wheel_migrates_a_fresh_database_from_its_own_scripts(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    install(wheel, site)
    result = run_migrate(site, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "service" / "_migrations")
    database = tmp_path / "data" / "batchwise.db"
    assert current_revision(f"sqlite:///{database.as_posix()}") == head_revision()


def test_an_install_without_the_migrations_says_where_it_looked(
    wheel: Path, tmp_path: Path
) -> None:
    """What a wheel that left the scripts out of ``service/_migrations`` would do: the error
    names the folder."""
    site = tmp_path / "site"
    install(wheel, site)
    scripts = site / "service" / "_migrations"
    shutil.rmtree(scripts / "versions")
    (scripts / "env.py").unlink()
    result = run_migrate(site, tmp_path)
    assert result.returncode != 0
    assert f"migration scripts not found in {scripts}" in result.stderr
    database = tmp_path / "data" / "batchwise.db"
    assert current_revision(f"sqlite:///{database.as_posix()}") is None  # nothing was migrated
