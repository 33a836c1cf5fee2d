"""Where the platform's files are unless configured: one place for the defaults and
the environment variables that override them (``AIDC_TENANTS``, ``AIDC_CATALOG``,
``AIDC_DATA_DIR``, ``AIDC_DB_URL``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tenants_file() -> str:
    """``$AIDC_TENANTS``, or the example ``hub_config/tenants.yaml``."""
    return os.environ.get("AIDC_TENANTS", str(REPO / "hub_config" / "tenants.yaml"))


def catalog_file() -> str:
    """``$AIDC_CATALOG``, or ``images/catalog.yaml``."""
    return os.environ.get("AIDC_CATALOG", str(REPO / "images" / "catalog.yaml"))


def data_dir() -> str:
    """``$AIDC_DATA_DIR``, or ``.aidc`` in the repository."""
    return os.environ.get("AIDC_DATA_DIR", str(REPO / ".aidc"))


def db_url(data_dir_path: str | None = None) -> str:
    """``$AIDC_DB_URL``, or the SQLite file ``quotas.sqlite`` in the data directory."""
    url = os.environ.get("AIDC_DB_URL")
    if url:
        return url
    return f"sqlite:///{Path(data_dir_path or data_dir()).resolve() / 'quotas.sqlite'}"
