"""The workspaces' JupyterLab extension (labextension/) is built and installed where JupyterLab and
the Jupyter server find it: in this venv by `make setup` (the embedded mode's workspaces run it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from aidc_jupyterlab import LABEXTENSION, _jupyter_labextension_paths, _jupyter_server_extension_points
from aidc_jupyterlab.handlers import quotas_request

REPO = Path(__file__).resolve().parents[2]
SOURCE = json.loads((REPO / "labextension" / "package.json").read_text())


def test_the_prebuilt_extension_is_installed_in_this_environment() -> None:
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / LABEXTENSION
    built = json.loads((installed / "package.json").read_text())
    assert (built["name"], built["version"]) == (SOURCE["name"], SOURCE["version"]) == ("aidc-hub-lab", "0.1.0")
    assert (installed / built["jupyterlab"]["_build"]["load"]).is_file(), "the remote entry was not installed"
    assert _jupyter_labextension_paths() == [{"src": "labextension", "dest": "aidc-hub-lab"}]


def test_the_server_extension_is_enabled_for_every_jupyter_server() -> None:
    config = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "aidc_jupyterlab.json"
    assert json.loads(config.read_text()) == {"ServerApp": {"jpserver_extensions": {"aidc_jupyterlab": True}}}
    assert _jupyter_server_extension_points() == [{"module": "aidc_jupyterlab"}]


def test_the_build_uses_jupyterlab_s_own_packages_at_its_versions() -> None:
    """The shared packages are JupyterLab's (singletons at run time): their ranges must admit the
    versions of the JupyterLab in this environment, which the lock pins."""
    staging = json.loads(
        (Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
        .joinpath("jupyterlab", "staging", "package.json")
        .read_text()
    )
    for name, wanted in SOURCE["dependencies"].items():
        assert wanted.startswith("^"), name
        core = staging["resolutions"][name].lstrip("~^")
        assert tuple(map(int, core.split(".")[:2])) >= tuple(map(int, wanted[1:].split(".")[:2])), name
    assert (REPO / "labextension" / "package-lock.json").is_file(), "npm ci needs the committed lock"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),  # not in a hub: the extension says so
        ({"AIDC_QUOTAS_URL": "http://127.0.0.1:8002/services/quotas/"}, None),  # no token
        (
            {
                "AIDC_QUOTAS_URL": "http://127.0.0.1:8002/services/quotas/",
                "JUPYTERHUB_API_TOKEN": "secret",
                "JUPYTERHUB_SERVER_NAME": "gpu 1",
            },
            (
                "http://127.0.0.1:8002/services/quotas/api/me/workspace?server=gpu+1",
                {"Authorization": "token secret"},
            ),
        ),
        (
            {"AIDC_QUOTAS_URL": "http://proxy-public.aidc.svc:80/services/quotas", "JUPYTERHUB_API_TOKEN": "t"},
            ("http://proxy-public.aidc.svc:80/services/quotas/api/me/workspace?server=", {"Authorization": "token t"}),
        ),
    ],
)
def test_the_workspace_asks_with_its_own_token_for_its_own_server(
    environ: dict[str, str], expected: tuple[str, dict[str, str]] | None
) -> None:
    assert quotas_request(environ) == expected
