"""The container runtime this machine does not have, at the lowest layer only.

KWOK marks workspace pods Running and gives them a loopback pod IP
(``ControlPlane.pod_cidr``, a free loopback /16). This runner starts each such pod's real single-user
server (``jupyterhub-singleuser`` with the pod's own environment) as a local process
listening on that pod IP and port, and stops it when the pod goes away. The hub
then reaches a real server at the pod IP, exactly as it would in a cluster.
Everything above it (KubeSpawner, the scheduler, quotas) is the production code.
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

SELECTOR = "component=singleuser-server"


class PodRunner:
    def __init__(self, api: client.ApiClient, workdir: Path, interval: float = 0.3):
        self.core = client.CoreV1Api(api)
        self.workdir = workdir
        self.interval = interval
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # pod uid -> process
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
        container = pod.spec.containers[0]
        env = {"PATH": os.environ["PATH"]}
        for var in container.env or []:
            if var.value_from is not None:
                raise RuntimeError(
                    f"pod {pod.metadata.name}: env {var.name} uses valueFrom, which the runner cannot resolve"
                )
            env[var.name] = var.value or ""
        port = container.ports[0].container_port if container.ports else 8888
        ip = pod.status.pod_ip
        service = urlparse(env.get("JUPYTERHUB_SERVICE_URL", f"http://0.0.0.0:{port}/"))
        env["JUPYTERHUB_SERVICE_URL"] = urlunparse(service._replace(netloc=f"{ip}:{port}"))
        home = self.workdir / "homes" / f"{pod.metadata.namespace}-{pod.metadata.name}"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        args = [a for a in (container.args or []) if not a.startswith(("--ip", "--port"))]
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

    def _kill(self, uid: str) -> None:
        """Kill the pod's server at once, as soon as its pod is being deleted: KWOK hands the pod's IP
        to the next pod right after, and a server still shutting down there would answer for it."""
        proc = self.procs.pop(uid)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
