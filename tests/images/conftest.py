"""The `images` tier: the shipped recipes built with podman here, and run as people run them.

``images/build --engine podman --local-base base hub`` builds them (tests/bed/podman.py: the Debian
base made with mmdebstrap, podman's settings for this machine); the checks run containers of the
built images. Without podman, mmdebstrap or runc the tier errors, never skips (`make test`
installs them).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.bed import podman
from tests.bed.procs import spawn, terminate
from tests.chart.conftest import Helm, build_helm, find

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Catalog id -> reference of the built base and hub images."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    podman.build("base", "hub", log=ARTIFACTS / "images-build.log")
    refs = {ident: podman.catalog_ref(ident) for ident in ("base", "hub")}
    for ref in refs.values():
        podman.podman("image", "inspect", ref)
    return refs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Container:
    """A detached container (host network, as every container of this bed), removed at exit."""

    def __init__(self, name: str, *args: str):
        self.name = name
        podman.podman("rm", "--force", "--ignore", name)
        podman.podman("run", "--detach", "--name", name, *args)

    def logs(self) -> str:
        out = podman.podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def running(self) -> bool:
        out = podman.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def wait_http(self, url: str, timeout: float = 60, **kwargs: object) -> requests.Response:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return requests.get(url, timeout=5, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
            except requests.ConnectionError:
                if not self.running() or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{url} did not answer; container {self.name}:\n{self.logs()[-4000:]}"
                    ) from None
                time.sleep(0.5)

    def remove(self) -> None:
        (ARTIFACTS / f"container-{self.name}.log").write_text(self.logs())
        podman.podman("rm", "--force", "--ignore", "--time", "5", self.name, check=False)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for c in started:
        c.remove()


def run(ref: str, *command: str, user: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``podman run --rm ref command``, as the image's own user unless ``user`` is given."""
    options = ["--rm", *(["--user", user] if user else [])]
    return podman.podman("run", *options, ref, *command, check=False, timeout=timeout)


REPO = Path(__file__).resolve().parents[2]
HUB_PORT, QUOTAS_PORT, PROXY_API_PORT = 8081, 8002, 8001  # the chart's ports
SECRET_VALUES = {
    "JPY_COOKIE_SECRET": secrets.token_hex(32),
    "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
    "AIDC_SSHGATEWAY_API_TOKEN": secrets.token_hex(16),
    "AIDC_SSH_SECRET": secrets.token_hex(16),
    "AIDC_POD_IP": "127.0.0.1",  # the pod's address: here, the host network's loopback
}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def podman_args(deployment: dict[str, Any], config: Path, data: Path) -> list[str]:
    """The hub Deployment's pod as `podman run` options: user, read-only root, capabilities,
    environment (valueFrom from SECRET_VALUES), volumes; then the image and the command."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security, pod_security = container["securityContext"], pod["securityContext"]
    args = ["--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += [f"--cap-drop={c}" for c in security["capabilities"]["drop"]]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for item in container["env"]:
        value = item["value"] if "value" in item else SECRET_VALUES[item["name"]]
        args += ["--env", f"{item['name']}={value}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]]
        if "configMap" in source:
            args += ["--volume", f"{config}:{mount['mountPath']}:ro"]
        elif "persistentVolumeClaim" in source:
            args += ["--volume", f"{data}:{mount['mountPath']}"]
        else:
            assert "emptyDir" in source, source
            args += ["--tmpfs", mount["mountPath"]]
    # the Services' names, on this host's loopback
    args += ["--add-host", "proxy-api.aidc.svc:127.0.0.1", "--add-host", "hub.aidc.svc:127.0.0.1"]
    return [*args, container["image"], *container["command"]]


@pytest.fixture(scope="session")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("proxy")
    """configurable-http-proxy with the chart's API port and the hub's proxy token."""
    public = 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        public = s.getsockname()[1]
    proc = spawn(
        REPO / "node_modules" / ".bin" / "configurable-http-proxy",
        [
            "--ip",
            "127.0.0.1",
            "--port",
            str(public),
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            str(PROXY_API_PORT),
            "--log-level",
            "warn",
        ],
        log_path=tmp_path / "proxy.log",
        cwd=tmp_path,
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": SECRET_VALUES["CONFIGPROXY_AUTH_TOKEN"]},
    )
    yield public
    terminate(proc)


@dataclass
class HubContainer:
    container: Container
    data: Path  # its /srv/aidc volume


@pytest.fixture(scope="session")
def hub_container(
    images: dict[str, str], proxy: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubContainer]:
    """The hub image, started with the chart's default values as its Deployment starts it; /hub/health answered."""
    busy = [p for p in (HUB_PORT, QUOTAS_PORT) if not _port_free(p)]
    assert not busy, f"ports {busy} of the chart's hub are taken on 127.0.0.1; stop what listens there"
    objects = Helm(build_helm()).objects()
    deployment = find(objects, "Deployment", "hub")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == images["hub"]
    tmp_path = tmp_path_factory.mktemp("hub-container")
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    for name, text in find(objects, "ConfigMap", "hub")["data"].items():
        (config / name).write_text(text)
    os.chown(data, 1000, 1000)  # the PVC, writable by the pod's fsGroup
    hub = Container("aidc-test-hub", *podman_args(deployment, config, data))
    try:
        health = hub.wait_http(f"http://127.0.0.1:{HUB_PORT}/hub/health", timeout=90)
        assert health.status_code == 200, hub.logs()[-3000:]
        yield HubContainer(hub, data)
    finally:
        hub.remove()
