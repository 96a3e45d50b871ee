"""Alembic's scripts, shipped inside the package as ``service._migrations`` (see setup.py)."""
