"""`aidc reload`: finds the hub of a data directory by its state file, signals only a process that
runs JupyterHub, and prints the outcome of the reload that read the files as they are now.

The hub here is a stand-in (a process named like JupyterHub that reloads a PlatformHolder at
SIGHUP, as aidc/reload.py does); tests/hub/test_reload.py runs the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aidc.cli import main
from quotas.snapshot import HUB_STATE, PlatformHolder, platform_dir, read_state, write_state

from .conftest import EXAMPLE_CATALOG, REPO

FAKE_HUB = """
import signal, sys, time
from pathlib import Path
from quotas.snapshot import HUB_STATE, PlatformHolder, platform_dir, write_state
tenants, catalog, data = sys.argv[1:4]
holder = PlatformHolder.from_files(tenants, catalog)
reloads = 0
def reload(*_):
    global reloads
    reloads += 1
    write_state(platform_dir(data) / HUB_STATE, holder, reloads, holder.reload(), quotas_pid=None)
signal.signal(signal.SIGHUP, reload)
write_state(platform_dir(data) / HUB_STATE, holder, 0, None, quotas_pid=None)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text((REPO / "tests" / "hub" / "tenants.yaml").read_text())
    return path


@pytest.fixture
def fake_hub(tmp_path: Path, tenants: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_HUB, str(tenants), str(EXAMPLE_CATALOG), str(data), "jupyterhub"], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while read_state(platform_dir(data) / HUB_STATE) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the stand-in hub did not start"
            time.sleep(0.1)
        yield data
    finally:
        proc.kill()
        proc.wait()


def test_reload_prints_what_changed_or_every_problem(
    fake_hub: Path, tenants: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenants.write_text(tenants.read_text().replace("quota: {gpus: {H100: 4}", "quota: {gpus: {H100: 3}"))
    assert main(["--data-dir", str(fake_hub), "reload"]) == 0
    out = capsys.readouterr().out
    assert f"Reloaded {tenants}: generation 2 is in force:\n  - tenant lab: ceiling H100 GPUs 4 -> 3\n" in out
    assert "The quotas service is not running now" in out

    tenants.write_text(tenants.read_text().replace("memory: 2Gi", "memory: 2Gb"))
    assert main(["--data-dir", str(fake_hub), "reload"]) == 1
    out = capsys.readouterr().out
    assert f"Refused {tenants}: 1 problem;" in out and "(generation 2) stays in force" in out
    assert f"  - {tenants}: profiles[cpu].memory: '2Gb' has unit 'Gb'" in out


def test_no_hub_a_stopped_hub_and_a_stranger_with_its_pid_are_not_signalled(
    tmp_path: Path, tenants: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "reload"]) == 3
    assert f"no hub has started with the data directory {tmp_path}" in capsys.readouterr().out

    # a state file left by a hub that is gone, whose pid another program has now
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state = platform_dir(tmp_path) / HUB_STATE
        write_state(state, PlatformHolder.from_files(tenants, EXAMPLE_CATALOG), 0, None)
        state.write_text(json.dumps({**json.loads(state.read_text()), "pid": stranger.pid}))
        assert main(["--data-dir", str(tmp_path), "reload"]) == 3
        assert f"(pid {stranger.pid}) is not running; it reads {tenants} when it starts" in capsys.readouterr().out
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()
    assert main(["--data-dir", str(tmp_path), "reload"]) == 3  # and once it is gone
