"""tests/bed/podman.py: the images tier fails loudly without podman, and podman's settings for
this machine stay within what it allows."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests.bed import podman


def test_without_podman_the_tier_errors_and_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(podman.PodmanMissing) as missing:
        podman.require()
    message = str(missing.value)
    assert "podman, mmdebstrap, runc" in message
    assert "tests/bed/debian-packages.sh podman buildah mmdebstrap runc" in message


def test_container_limits_are_this_processs_and_at_most_pid_max(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(podman, "CACHE", tmp_path)
    env = podman.environment()
    conf = Path(env["CONTAINERS_CONF"]).read_text()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert f'"nofile={soft}:{hard}"' in conf
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = [int(v) for v in conf.split('"nproc=')[1].split('"')[0].split(":")]
    assert all(0 < v <= pid_max for v in nproc)
    assert 'runtime = "runc"' in conf and 'cgroup_manager = "cgroupfs"' in conf
    storage = Path(env["CONTAINERS_STORAGE_CONF"]).read_text()
    assert f'graphroot = "{tmp_path}/storage"' in storage
