"""The container runtime this machine does not have, at the lowest layer only.

KWOK marks workspace pods Running and gives them a loopback pod IP
(``ControlPlane.pod_cidr``, a free loopback /16). This runner starts each such pod's real single-user
server (``jupyterhub-singleuser`` with the pod's own environment) as a local process
listening on that pod IP and port, and stops it when the pod goes away. The hub
then reaches a real server at the pod IP, exactly as it would in a cluster.
Everything above it (KubeSpawner, the scheduler, quotas) is the production code.

The pods of the people named in :attr:`PodRunner.from_image` run from their actual image instead,
with podman (tests/bed/podman.py): the image's own entry point and command (or the pod's), the
pod's environment, user and home volume, on the host's network so that it listens on the pod IP.
The images tier builds the images (``aidc/base`` among them); the rest of the tier's pods are
local processes, since the framework images are not built in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from kubernetes import client

from sshgateway.workspace import EXTENSION_ARG
from tests.bed import podman

SELECTOR = "component=singleuser-server"
USER_LABEL = "hub.jupyter.org/username"


def _own(folder: Path, uid: int, gid: int) -> None:
    """Give ``folder`` and everything in it to ``uid``:``gid``. In a cluster every pod of a person
    runs as the same user, so the files of their home claim are that user's; here the runner's
    local processes (root) may have written in the same folder before an image-backed pod mounts it."""
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, uid, gid)


class PodRunner:
    def __init__(self, api: client.ApiClient, workdir: Path, interval: float = 0.3):
        self.core = client.CoreV1Api(api)
        self.workdir = workdir
        self.interval = interval
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # pod uid -> process (or podman run)
        self.containers: dict[str, str] = {}  # pod uid -> podman container name
        self.from_image: set[str] = set()  # people whose pods run from their image with podman
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)

    def start(self) -> PodRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for uid in list(self.procs):
            self._kill(uid)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as e:  # the API server may be restarting; report, keep going
                self.errors.append(repr(e))

    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(label_selector=SELECTOR).items
        running = {}
        for pod in pods:
            uid = pod.metadata.uid
            if pod.status.phase == "Running" and pod.status.pod_ip and not pod.metadata.deletion_timestamp:
                running[uid] = pod
        for uid in list(self.procs):
            if uid not in running or self.procs[uid].poll() is not None:
                self._kill(uid)
        for uid, pod in running.items():
            if uid not in self.procs:
                self.procs[uid] = self._run(pod)

    def _run(self, pod: Any) -> subprocess.Popen[bytes]:
        if (pod.metadata.labels or {}).get(USER_LABEL) in self.from_image:
            return self._run_image(pod)
        container = pod.spec.containers[0]
        env = {"PATH": os.environ["PATH"], **self._env(pod)}
        port = container.ports[0].container_port if container.ports else 8888
        ip = pod.status.pod_ip
        home = self.workdir / "homes" / f"{pod.metadata.namespace}-{pod.metadata.name}"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        args = [a for a in (container.args or []) if not a.startswith(("--ip", "--port"))]
        # the workspace images enable the extension that starts sshd with the server
        # (images/base/workspace/aidc-sshd.json); this environment is the repository's
        args.append(EXTENSION_ARG)
        log = open(self.workdir / f"{pod.metadata.namespace}-{pod.metadata.name}.log", "ab")
        with log:
            return subprocess.Popen(
                [sys.executable, "-m", "jupyterhub.singleuser", *args, f"--ip={ip}", f"--port={port}", "--allow-root"],
                env=env,
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _env(self, pod: Any) -> dict[str, str]:
        """The pod's environment (plain values only), its server URL on the pod IP and port."""
        container = pod.spec.containers[0]
        env = {}
        for var in container.env or []:
            if var.value_from is not None:
                raise RuntimeError(
                    f"pod {pod.metadata.name}: env {var.name} uses valueFrom, which the runner cannot resolve"
                )
            env[var.name] = var.value or ""
        port = container.ports[0].container_port if container.ports else 8888
        service = urlparse(env.get("JUPYTERHUB_SERVICE_URL", f"http://0.0.0.0:{port}/"))
        env["JUPYTERHUB_SERVICE_URL"] = urlunparse(service._replace(netloc=f"{pod.status.pod_ip}:{port}"))
        return env

    def _run_image(self, pod: Any) -> subprocess.Popen[bytes]:
        """``podman run`` of the pod's image: its command and args, environment, user and volumes (the
        home claim as a folder of the runner's, emptyDirs as tmpfs), on the host network."""
        container = pod.spec.containers[0]
        name = f"aidc-pod-{pod.metadata.uid}"
        security = pod.spec.security_context
        options = ["--rm", "--name", name, "--network", "host"]
        # the image's own user (aidc/base's jovyan, 1000) unless the pod names one; its group the
        # pod's runAsGroup, else the account's own; fsGroup a supplementary group owning the volumes
        uid, gid = 1000, 1000
        if security is not None and security.run_as_user is not None:
            uid = security.run_as_user
            group = f":{security.run_as_group}" if security.run_as_group is not None else ""
            options += ["--user", f"{uid}{group}"]
        if security is not None and security.fs_group is not None:
            gid = security.fs_group
            options += ["--group-add", str(gid)]
        context = container.security_context
        if context is not None and context.allow_privilege_escalation is False:
            options += ["--security-opt", "no-new-privileges"]
        if context is not None and context.capabilities is not None:
            options += [f"--cap-drop={c}" for c in context.capabilities.drop or []]
        for key, value in self._env(pod).items():
            options += ["--env", f"{key}={value}"]
        volumes = {v.name: v for v in pod.spec.volumes or []}
        home = self.workdir / "homes" / f"{pod.metadata.namespace}-{pod.metadata.name}"
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None or volume.projected is not None or volume.secret is not None:
                continue  # the service account token and secrets: nothing of the pod's server needs them here
            if volume.persistent_volume_claim is not None and mount.mount_path.startswith("/home/"):
                home.mkdir(parents=True, exist_ok=True)
                _own(home, uid, gid)
                options += ["--volume", f"{home}:{mount.mount_path}"]
            elif volume.persistent_volume_claim is not None:  # a data set: the claim's own folder here
                data = (
                    self.workdir / "volumes" / f"{pod.metadata.namespace}-{volume.persistent_volume_claim.claim_name}"
                )
                data.mkdir(parents=True, exist_ok=True)
                options += ["--volume", f"{data}:{mount.mount_path}:{'ro' if mount.read_only else 'rw'}"]
            elif volume.empty_dir is not None:
                options += ["--tmpfs", mount.mount_path]
            else:
                raise RuntimeError(f"pod {pod.metadata.name}: the runner cannot mount volume {mount.name} ({volume})")
        if container.command:
            options += ["--entrypoint", container.command[0]]
        args = [*(container.command or [])[1:], *(container.args or [])]
        log = open(self.workdir / f"{pod.metadata.namespace}-{pod.metadata.name}.log", "ab")
        self.containers[pod.metadata.uid] = name
        with log:
            return subprocess.Popen(
                ["podman", "run", *options, container.image, *args],
                env=podman.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _kill(self, uid: str) -> None:
        """Kill the pod's server at once, as soon as its pod is being deleted: KWOK hands the pod's IP
        to the next pod right after, and a server still shutting down there would answer for it."""
        name = self.containers.pop(uid, None)
        if name is not None:
            podman.podman("rm", "--force", "--ignore", "--time", "0", name, check=False)
        proc = self.procs.pop(uid)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
