"""A workspace pod from the real image: the pod runner starts dave's pod from aidc/base (built by
images/build as the images tier builds it) with podman, instead of a local process. The hub
reaches JupyterLab in it through the proxy, a kernel runs in the image's Python as its user, and
an SSH gateway configured as the chart runs it (its own process, ``workspaceUser: jovyan``, the
images' account) reaches the sshd inside it. (The hub-run gateway of this tier logs in as the
account of the runner's local processes, which is root here.)"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client

from tests.bed import podman
from tests.bed.hub import Client, Hub, free_port
from tests.bed.podrunner import PodRunner
from tests.bed.procs import log_tail, spawn, terminate
from tests.bed.ssh import SSH, keygen, register
from tests.images.conftest import ARTIFACTS
from tests.k8s.conftest import GATEWAY_TOKEN
from tests.k8s.test_kube_spawner import pod_of

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("no_servers_left")


@pytest.fixture
def chart_gateway(hub: Hub, tmp_path: Path) -> Iterator[int]:
    """`python -m sshgateway` as the chart's gateway Deployment runs it: its own process with the
    gateway's token, the hub's proxy, and the images' Unix account; returns its port."""
    port = free_port()
    args = [
        "-m", "sshgateway", f"--SSHGateway.port={port}", f"--SSHGateway.proxy_url={hub.url}",
        "--SSHGateway.workspace_user=jovyan",
    ]  # fmt: skip
    env = {
        "JUPYTERHUB_API_URL": f"{hub.url}/hub/api",
        "JUPYTERHUB_API_TOKEN": GATEWAY_TOKEN,
        "AIDC_DATA_DIR": hub.env["AIDC_DATA_DIR"],
    }
    proc = spawn(Path(sys.executable), args, log_path=ARTIFACTS / "chart-gateway.log", cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, log_tail(ARTIFACTS / "chart-gateway.log", proc, 40)
        time.sleep(0.2)
    yield port
    terminate(proc)


@pytest.fixture
def from_image(runner: PodRunner) -> Iterator[str]:
    """dave's pods run from their image; the base image is built first (cached after the images tier)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    podman.build("base", log=ARTIFACTS / "images-build.log")
    ref = podman.catalog_ref("base")
    # as on a node that has pulled and run the image: its files in the page cache, so that the
    # server answers within the hub's http_timeout (20 s in this tier) on a loaded machine too
    podman.podman("run", "--rm", ref, "python", "-c", "import jupyterhub.singleuser, jupyterlab, jupyter_server_proxy")
    runner.from_image.add("dave")
    yield ref
    runner.from_image.discard("dave")


def test_a_workspace_pod_runs_from_the_real_image(
    api: client.ApiClient,
    hub: Hub,
    runner: PodRunner,
    clients: dict[str, Client],
    from_image: str,
    chart_gateway: int,
    tmp_path: Path,
) -> None:
    dave = clients["dave"]
    # his home as an earlier pod of this tier's runner left it (a local process, root): a runtime
    # folder of Jupyter's, mode 0700
    runtime = runner.workdir / "homes" / "aidc-startup-jupyter-dave" / ".local" / "share" / "jupyter" / "runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    (runtime / "jupyter_cookie_secret").write_text("written by an earlier pod\n")
    started = time.monotonic()
    assert dave.spawn(tenant="startup", profile="cpu").status_code in (201, 202)
    ready = dave.wait_ready(timeout=240)
    print(f"dave's pod from {from_image} was ready in {time.monotonic() - started:.1f} s")
    pod = pod_of(api, "aidc-startup", "dave")
    assert pod.spec.containers[0].image == from_image
    name = runner.containers[pod.metadata.uid]
    state = podman.podman("inspect", "--format", "{{.State.Running}} {{.ImageName}}", name).stdout.split()
    assert state[0] == "true" and state[1].endswith(from_image), state

    # JupyterLab, through the hub's proxy, with dave's login
    lab = dave.session.get(f"{hub.url}{ready['url']}lab", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text, lab.text[:500]
    # a kernel in the image's Python, as its user, in Debian
    out = dave.run_in_kernel(
        ready["url"],
        "import os, sys, platform; print(os.getuid(), os.environ['HOME'], sys.prefix,"
        " platform.freedesktop_os_release()['ID'])",
    )
    assert out.split() == ["1000", "/home/jovyan", "/opt/venv", "debian"], out

    # the SSH gateway reaches the sshd inside the image (jupyter-server-proxy's sshd entry)
    key = keygen(tmp_path / "dave_ed25519")
    key_id = register(dave, key, title="image test")
    try:
        ssh = SSH(hub, tmp_path)
        ssh.port = chart_gateway
        r = ssh.ssh("dave", "id -u; echo $HOME; . /etc/os-release; echo $ID; command -v aidc-gpu-check", key)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["1000", "/home/jovyan", "debian", "/usr/local/bin/aidc-gpu-check"], r.stdout
    finally:
        requests.delete(
            f"{hub.url}/services/quotas/api/ssh-keys/{key_id}",
            headers={"Authorization": f"token {dave.token}"},
            timeout=30,
        )
