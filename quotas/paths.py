"""Where the platform's files are unless configured: one place for the defaults and
the environment variables that override them (``AIDC_TENANTS``, ``AIDC_CATALOG``,
``AIDC_DATA_DIR``, ``AIDC_DB_URL``), and the configurable traits that carry them
(:class:`PlatformFiles`, :class:`PlatformState`)."""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

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


class PlatformFiles(LoggingConfigurable):
    """``tenants_file`` and ``catalog_file`` as config traits, for everything that reads the
    platform config (spawners, authenticators, the quotas service). Set them per class
    (``TenantSpawnerMixin.tenants_file``) or for all at once (``PlatformFiles.tenants_file``)."""

    tenants_file = Unicode(
        help="""Path of the platform's tenants.yaml (tenants, their ceilings, profiles, GPU types).

        For example ``/etc/aidc/tenants.yaml``. Defaults to ``$AIDC_TENANTS`` or the example
        ``hub_config/tenants.yaml``.
        """,
    ).tag(config=True)

    catalog_file = Unicode(
        help="""Path of the image catalog that profiles name (``images/catalog.yaml``). Defaults to
        ``$AIDC_CATALOG`` or the repository's.""",
    ).tag(config=True)

    @default("tenants_file")
    def _default_tenants_file(self) -> str:
        return tenants_file()

    @default("catalog_file")
    def _default_catalog_file(self) -> str:
        return catalog_file()


class PlatformState(PlatformFiles):
    """:class:`PlatformFiles` and where the platform's state is: ``data_dir`` and ``db_url``, for
    the hub's spawners and the quotas service, which share the quotas database."""

    data_dir = Unicode(
        help="""The platform's state directory: the SQLite quotas database (by default), the quotas
        service's cookie secret, homes in the embedded mode. Defaults to ``$AIDC_DATA_DIR`` or
        ``.aidc`` in the repository.
        """,
    ).tag(config=True)

    db_url = Unicode(
        help="""SQLAlchemy URL of the quotas database (reservations, usage ledger, delegated limits),
        shared by the hub's spawners and the quotas service. For example
        ``postgresql+psycopg://aidc@db/aidc``. Defaults to ``$AIDC_DB_URL`` or
        ``sqlite:///<data_dir>/quotas.sqlite``.
        """,
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return data_dir()

    @default("db_url")
    def _default_db_url(self) -> str:
        return db_url(self.data_dir)
