"""Podman on this machine, for the `images` tier and the pod runner's image-backed pods.

The images are the shipped recipes (images/<id>/Dockerfile) built by ``images/build`` itself, with
``--local-base``: no registry is reachable from here, so ``debian:<release>-slim`` is made from
Debian's packages with mmdebstrap. Podman's own settings for a machine like this one (no systemd,
limits lower than podman's defaults, crun unusable with hybrid cgroups) are not the host's: they are
written under the cache (``~/.cache/aidc/containers``) and named by ``CONTAINERS_CONF`` and
``CONTAINERS_STORAGE_CONF`` for every podman this bed runs. Images stay there between runs, so a
second run rebuilds only what changed (the engine's layer cache).
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aidc" / "containers"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PACKAGES = ("podman", "buildah", "mmdebstrap", "runc")

CONTAINERS_CONF = """\
# Written by tests/bed/podman.py for the test bed's podman (CONTAINERS_CONF).
[containers]
# podman's default limits (nofile 1048576) are above what this machine lets a process set: the
# containers get the limits of the process that wrote this file (processes: at most pid_max)
default_ulimits = ["nofile={nofile}", "nproc={nproc}"]
netns = "host"
log_driver = "k8s-file"

[engine]
# crun refuses hybrid cgroups ("cgroups in hybrid mode not supported"); there is no systemd
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = """\
# Written by tests/bed/podman.py for the test bed's podman (CONTAINERS_STORAGE_CONF).
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


class PodmanMissing(RuntimeError):
    pass


def environment() -> dict[str, str]:
    """os.environ with the bed's podman settings; writes them the first time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf, storage = CACHE / "containers.conf", CACHE / "storage.conf"
    # the container's limits: this process's (runc may not raise them), processes also at most pid_max
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limits = {
        "nofile": ":".join(str(v) for v in resource.getrlimit(resource.RLIMIT_NOFILE)),
        "nproc": ":".join(
            str(pid_max if v < 0 else min(v, pid_max)) for v in resource.getrlimit(resource.RLIMIT_NPROC)
        ),
    }
    for path, text in ((conf, CONTAINERS_CONF.format(**limits)), (storage, STORAGE_CONF.format(root=CACHE))):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return dict(os.environ, CONTAINERS_CONF=str(conf), CONTAINERS_STORAGE_CONF=str(storage))


def require() -> None:
    """Fail loudly (never skip) when podman or what images/build needs with it is missing."""
    missing = [p for p in ("podman", "mmdebstrap", "runc") if shutil.which(p) is None]
    if missing:
        raise PodmanMissing(
            f"the images tier needs {', '.join(missing)}, which is not on PATH: `make test` installs them"
            f" (tests/bed/debian-packages.sh {' '.join(PACKAGES)})"
        )


def podman(
    *args: str, check: bool = True, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    require()
    out = subprocess.run(
        ["podman", *args], env=environment(), capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and out.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    return out


def catalog_ref(ident: str) -> str:
    """The reference the catalog gives image ``ident`` (aidc/base:2026.11)."""
    catalog = yaml.safe_load((REPO / "images" / "catalog.yaml").read_text())
    for entry in [*catalog["images"], *catalog["platform"]]:
        if entry["id"] == ident:
            return str(entry["image"])
    raise KeyError(ident)


@contextmanager
def _build_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(*ids: str, log: Path) -> float:
    """Build catalog images ``ids`` (and what they are built from) with ``images/build``, as shipped,
    with a local Debian base; returns the seconds it took. The build's output goes to ``log``."""
    require()
    command = [sys.executable, str(REPO / "images" / "build"), "--engine", "podman", "--local-base"]
    if HOST_CA_BUNDLE.is_file():  # downloads inside the build pass the host's TLS proxy
        command += ["--ca-bundle", str(HOST_CA_BUNDLE)]
    command += ids
    with _build_lock(), open(log, "ab") as out:
        started = time.monotonic()  # not the wait for another build's lock
        status = subprocess.run(command, cwd=REPO, env=environment(), stdout=out, stderr=subprocess.STDOUT).returncode
        seconds = time.monotonic() - started
    if status != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"images/build {' '.join(ids)} failed ({status}); the end of {log}:\n" + "\n".join(tail))
    return seconds
