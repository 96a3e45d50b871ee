"""The package list, which ``pyproject.toml`` cannot express: every ``service`` package, plus
the Alembic scripts, which stay in ``migrations/`` at the repository's top level but ship
inside the package as ``service._migrations`` (found by :mod:`service.db.migrate` through
``importlib.resources``, in a wheel and in an editable install alike)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["service", "service.*"]), "service._migrations"],
    package_dir={"service._migrations": "migrations"},
)
