"""AIDC Hub inside JupyterLab (``labextension/``): the prebuilt JupyterLab extension ``aidc-hub-lab``,
the Jupyter server extension it reads from (:mod:`aidc_jupyterlab.handlers`), and JupyterLab's
default language from the hub (:mod:`aidc_jupyterlab.language`).

Installed in every workspace's environment (the base image; the venv in the embedded mode).
Standard library and jupyter_server only: it runs in the person's own workspace.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
LABEXTENSION = "aidc-hub-lab"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": LABEXTENSION}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aidc_jupyterlab"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    from .language import link

    link(serverapp)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
