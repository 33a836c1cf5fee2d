"""aidc/base, built from its recipe, checked as a person uses it: the workspace user, the hub's
jupyterhub-singleuser with the hub's login in force, JupyterLab, the sshd the SSH gateway
reaches (started by the image's Jupyter server), and aidc-gpu-check's CPU path."""

from __future__ import annotations

import json
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import requests

from tests.bed import podman
from tests.images.conftest import HUB_PORT, Container, HubContainer, free_port, run


def test_the_workspace_user_is_uid_1000_and_cannot_become_root(images: dict[str, str]) -> None:
    config = json.loads(podman.podman("image", "inspect", images["base"]).stdout)[0]["Config"]
    assert config["User"] == "1000"
    assert config["Cmd"] == ["jupyterhub-singleuser"] and config["Entrypoint"] == ["tini", "-g", "--"]
    # the labels name this build's commit, even where every step came from the layer cache
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=podman.REPO).stdout.strip()
    assert config["Labels"]["org.opencontainers.image.revision"] == head
    script = (
        "id -u; id -g; echo $HOME;"
        " command -v sudo doas || echo no-sudo;"
        " touch /etc/aidc-test 2>/dev/null || echo etc-closed;"
        " touch /usr/bin/aidc-test 2>/dev/null || echo usr-closed;"
        " touch $HOME/ok /opt/venv/ok && echo home-and-venv-open;"
        " cat /etc/shadow 2>/dev/null || echo shadow-closed"
    )
    out = run(images["base"], "bash", "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "1000",
        "1000",
        "/home/jovyan",
        "no-sudo",
        "etc-closed",
        "usr-closed",
        "home-and-venv-open",
        "shadow-closed",
    ]


def test_jupyterhub_singleuser_is_the_hubs_and_answers_with_the_hubs_login(
    images: dict[str, str], hub_container: HubContainer, containers: list[Container]
) -> None:
    """The image's own command with the environment a spawner gives it, against the hub started
    from the hub image (singleuser exits when it cannot reach its hub, and warns on another version)."""
    out = run(images["base"], "jupyterhub-singleuser", "--version")
    assert out.returncode == 0 and out.stdout.strip() == version("jupyterhub"), out.stdout + out.stderr
    port = free_port()
    prefix = "/user/alice/"
    env = {
        "JUPYTERHUB_API_TOKEN": "a-token-only-the-hub-knows",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{HUB_PORT}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_HOST": "",
    }
    # the image's own command (tini, then jupyterhub-singleuser), as KubeSpawner runs it
    args = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
    server = Container("aidc-test-singleuser", *args, images["base"])
    containers.append(server)
    answer = server.wait_http(f"http://127.0.0.1:{port}{prefix}api")
    assert answer.status_code == 200 and "version" in answer.json()
    # JupyterLab is behind the hub's login: an unknown visitor is sent to the hub's OAuth
    lab = requests.get(f"http://127.0.0.1:{port}{prefix}lab", allow_redirects=False, timeout=10)
    assert lab.status_code == 302, lab.text[:500]
    assert "/hub/api/oauth2/authorize?" in lab.headers["Location"]
    assert "client_id=jupyterhub-user-alice" in lab.headers["Location"]
    assert (
        "!= jupyterhub-singleuser version" not in server.logs() and "Failed to connect to my Hub" not in server.logs()
    )
    extensions = run(images["base"], "jupyter", "server", "extension", "list")
    listing = re.sub(r"\x1b\[[0-9;]*m", "", extensions.stdout + extensions.stderr)  # without colours
    for extension in ("jupyterlab", "jupyter_server_proxy"):
        assert f"{extension} enabled" in listing, listing


def test_jupyterlab_answers(images: dict[str, str], containers: list[Container]) -> None:
    port = free_port()
    lab = Container(
        "aidc-test-lab",
        images["base"],
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--IdentityProvider.token=lab-token",
    )
    containers.append(lab)
    page = lab.wait_http(f"http://127.0.0.1:{port}/lab?token=lab-token")
    assert page.status_code == 200, page.text[:500]
    assert "JupyterLab" in page.text
    settings = requests.get(
        f"http://127.0.0.1:{port}/lab/api/settings", headers={"Authorization": "token lab-token"}, timeout=10
    )
    assert settings.status_code == 200 and settings.json()["settings"]


def test_jupyterlab_opens_in_the_language_chosen_on_the_hub(
    images: dict[str, str], containers: list[Container]
) -> None:
    """The Korean language pack is in the image, and the server extension aidc_jupyterlab makes the
    spawner's ``AIDC_LOCALE`` JupyterLab's default language (labextension/aidc_jupyterlab/language.py)."""
    port = free_port()
    lab = Container(
        "aidc-test-lab-ko",
        "--env",
        "AIDC_LOCALE=ko",
        images["base"],
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--IdentityProvider.token=lab-token",
    )
    containers.append(lab)
    headers = {"Authorization": "token lab-token"}
    answer = lab.wait_http(
        f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/translation-extension:plugin", headers=headers
    )
    assert answer.status_code == 200, answer.text[:500]
    setting = answer.json()
    assert setting["settings"] == {} and setting["schema"]["properties"]["locale"]["default"] == "ko_KR"
    assert setting["schema"]["title"] == "언어"
    korean = requests.get(f"http://127.0.0.1:{port}/lab/api/translations/ko_KR", headers=headers, timeout=10)
    assert korean.status_code == 200, korean.text[:500]
    assert korean.json()["data"]["jupyterlab"]["menu\x04File"] == ["파일"]


def test_the_jupyter_server_starts_sshd_which_takes_only_the_servers_key(
    images: dict[str, str], containers: list[Container], tmp_path: Path
) -> None:
    """The image's own Jupyter configuration enables the extension (KubeSpawner passes no arguments
    to the image's command): a Jupyter server started with the spawner's variables starts sshd on
    its own address, with the host key it was handed."""
    keys = {}
    for name in ("server", "stranger", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
        keys[name] = tmp_path / name
    port, web = free_port(), free_port()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(tmp_path / 'host.pub').read_text()}")
    sshd = Container(
        "aidc-test-sshd",
        "--env",
        f"AIDC_SSH_AUTHORIZED_KEY={(tmp_path / 'server.pub').read_text().strip()}",
        "--env",
        f"AIDC_SSH_HOST_KEY={(tmp_path / 'host').read_text()}",
        "--env",
        f"AIDC_SSHD_PORT={port}",
        images["base"],
        "jupyter",
        "server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={web}",
        "--IdentityProvider.token=sshd-token",
    )
    containers.append(sshd)

    def ssh(key: Path, command: str) -> subprocess.CompletedProcess[str]:
        options = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",  # the host key the server was handed, and no other
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            "-i",
            str(key),
            "-p",
            str(port),
        ]
        return subprocess.run(
            ["ssh", *options, "jovyan@127.0.0.1", command], capture_output=True, text=True, timeout=30
        )

    for _ in range(60):
        out = ssh(keys["server"], "id -u; echo $HOME; python -c 'import numpy; print(numpy.__version__)'")
        if out.returncode != 255 or not sshd.running():
            break
        subprocess.run(["sleep", "0.5"])
    assert out.returncode == 0, f"{out.stderr}\n{sshd.logs()[-3000:]}"
    assert out.stdout.split() == ["1000", "/home/jovyan", "2.3.5"]
    refused = ssh(keys["stranger"], "id")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_aidc_gpu_check_passes_its_cpu_path_and_can_fail(images: dict[str, str]) -> None:
    out = run(images["base"], "aidc-gpu-check", "--cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[  ok] matmul cpu numpy" in out.stdout and "[  ok] all-reduce cpu x2" in out.stdout
    assert "FAIL" not in out.stdout
    corrupt = podman.podman(
        "run", "--rm", "--env", "AIDC_GPU_CHECK_CORRUPT=matmul", images["base"], "aidc-gpu-check", "--cpu", check=False
    )
    assert corrupt.returncode == 1 and "matmul" in corrupt.stdout


def test_no_build_secret_or_pip_configuration_is_left_in_the_images(images: dict[str, str]) -> None:
    """The proxy's CA bundle reached the download steps as a build secret only: no image holds it
    (nor any pip or uv configuration that would name it)."""
    host_bundle = podman.HOST_CA_BUNDLE.read_text() if podman.HOST_CA_BUNDLE.is_file() else ""
    for ident, ref in images.items():
        script = (
            "ls -A /run/secrets 2>/dev/null; cat /etc/pip.conf /etc/xdg/pip/pip.conf ~/.config/pip/pip.conf"
            " /opt/venv/pip.conf ~/.config/uv/uv.toml 2>/dev/null; env | grep -iE 'cert|ca_bundle|index_url|trusted_host'; true"
        )
        leftovers = run(ref, "bash", "-c", script)
        assert leftovers.returncode == 0 and leftovers.stdout.strip() == "", f"{ident}: {leftovers.stdout}"
        bundle = run(ref, "cat", "/etc/ssl/certs/ca-certificates.crt")
        assert bundle.returncode == 0 and bundle.stdout.strip(), f"{ident} has no CA bundle of its own"
        if host_bundle:
            assert bundle.stdout != host_bundle, f"{ident} carries this machine's CA bundle"
