"""Hostile or corrupted config files (issue 13, point 5): every one is answered with problems that
say where (a key path, or a line and column), never a traceback, in seconds and in bounded memory,
by the loader that `aidc check-config`, the hub's start and the quotas service share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quotas import tenants_schema
from quotas.loader import MAX_FILE_BYTES, ConfigError, load_catalog, load_platform

from .conftest import EXAMPLE_CATALOG, EXAMPLE_TENANTS, REPO

AIDC = Path(sys.executable).with_name("aidc")
MAX_RSS_BYTES = 256 * 2**20
EXAMPLE = EXAMPLE_TENANTS.read_text()


def _bomb(field: str) -> str:
    """A "billion laughs": 10^9 values once its aliases are expanded, in ``field`` of the first tenant."""
    lines = ["x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n" + EXAMPLE.replace("admins: [kim]", f"{field}: [*a8]", 1)


def _largest_accepted() -> str:
    """A file just inside both limits: almost MAX_VALUES values and almost MAX_FILE_BYTES bytes."""
    users = ", ".join(f"user{i}" for i in range(tenants_schema.MAX_VALUES - 1000))
    text = EXAMPLE.replace("users: [alice, bob]", f"users: [alice, bob, {users}]", 1)
    return text + "# " + "x" * (MAX_FILE_BYTES - len(text) - 100) + "\n"


# name -> (the file's bytes, where the problem is reported, words of the message)
HOSTILE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "billion laughs in a list": (
        lambda: _bomb("admins").encode(),
        "x-a4[7] (line 5, column 47)",
        f"the file has more than {tenants_schema.MAX_VALUES:,} values (after YAML aliases are expanded)",
    ),
    "a NUL byte": (
        lambda: EXAMPLE.replace("kind: startup", "kind: start\0up", 1).encode(),
        "line 77, column 16",
        "has U+0000 (a control character), which a YAML file cannot hold",
    ),
    "an escape character": (
        lambda: EXAMPLE.replace("kind: startup", "kind: \x1b[31mstartup", 1).encode(),
        "line 77, column 11",
        "has U+001B (a control character)",
    ),
    "UTF-16": (lambda: EXAMPLE.encode("utf-16"), "", "is UTF-16 text (it starts with a UTF-16 byte-order mark)"),
    "Latin-1": (
        lambda: EXAMPLE.encode().replace(b"Nova Labs", b"N\xf6va Labs", 1),
        "line 76, column 20",
        "byte 0xf6 is not UTF-8 text; save the file as UTF-8",
    ),
    "10,000 levels of lists": (
        lambda: ("tenants: " + "[" * 10_000 + "]" * 10_000 + "\n").encode(),
        "line 1, column 1009",  # libyaml's own limit on [[[, before the composer's
        f"is nested more than {tenants_schema.MAX_DEPTH} levels deep",
    ),
    "10,000 levels of mappings": (
        lambda: ("tenants: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n").encode(),
        "tenants.a.a.a",
        f"is nested more than {tenants_schema.MAX_DEPTH} levels deep",
    ),
    "a quantity that overflows": (
        lambda: EXAMPLE.replace('cpu: "96"', 'cpu: "1e999999k"', 1).encode(),
        "tenants[snu-ai].quota.cpu",
        "'1e999999k' is not a quantity a cluster can hold: write a number between 1e-30 and 1e30",
    ),
    "10^100 GPUs": (
        lambda: EXAMPLE.replace("H100: 4,", "H100: 1.0e+100,", 1).encode(),
        "tenants[snu-ai].quota.gpus.H100",
        "a GPU count must be at most 100,000 (the largest sensible value), not 1e+100",
    ),
    "10^100 GPUs in digits": (
        lambda: EXAMPLE.replace("H100: 4,", f"H100: {10**100},", 1).encode(),
        "tenants[snu-ai].quota.gpus.H100",
        "a GPU count must be at most 100,000 (the largest sensible value)",
    ),
    "a number of 5,000 digits": (
        lambda: EXAMPLE.replace("H100: 4,", f"H100: {'9' * 5000},", 1).encode(),
        "line 67, column 20",
        "a value of 5,000 characters is not a whole number a file can hold",
    ),
    "a date that is none": (
        lambda: EXAMPLE.replace("kind: startup", "kind: 2026-13-45", 1).encode(),
        "line 77, column 11",
        "'2026-13-45' is not a valid timestamp (month must be in 1..12)",
    ),
    "a 50 MB file": (
        lambda: (EXAMPLE + "# " + "x" * 50_000_000 + "\n").encode(),
        "",
        f"is larger than {MAX_FILE_BYTES:,} bytes",
    ),
    "one value too many": (
        lambda: EXAMPLE.replace(
            "users: [alice, bob]", f"users: [{', '.join(f'u{i}' for i in range(tenants_schema.MAX_VALUES))}]", 1
        ).encode(),
        "tenants[0].members.users",
        f"the file has more than {tenants_schema.MAX_VALUES:,} values",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_loader_says_where(tmp_path: Path, name: str) -> None:
    content, where, words = HOSTILE[name]
    path = tmp_path / "tenants.yaml"
    path.write_bytes(content())
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    assert time.monotonic() - start < 10
    assert any(where in p.path and words in p.message for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


# A small Python process forks and measures the program. Forking it from pytest directly would not
# do: a forked child starts with its parent's resident pages, and after a thousand tests pytest's
# are more than the bound, which the child's peak (ru_maxrss) would then report.
LAUNCHER = """
import json, os, resource, sys
pid = os.fork()
if pid == 0:
    # a regression fails the test rather than the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024]))
"""


def _measured(command: list[str], stderr_path: Path, **options: Any) -> tuple[int, str, float, int]:
    """Run ``command``: its exit status, standard error, wall time and peak memory (bytes), of that
    process alone."""
    start = time.monotonic()
    with stderr_path.open("w") as stderr:
        launcher = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.PIPE, stderr=stderr, check=True, **options
        )
    code, rss = json.loads(launcher.stdout)
    return code, stderr_path.read_text(), time.monotonic() - start, rss


def _check_config(path: Path) -> tuple[int, str, float, int]:
    """``aidc check-config PATH``, measured."""
    return _measured([str(AIDC), "check-config", str(path)], path.with_suffix(".stderr"))


@pytest.mark.parametrize("name", ["billion laughs in a list", "a NUL byte", "UTF-16", "10,000 levels of lists"])
def test_check_config_answers_in_seconds_in_bounded_memory(tmp_path: Path, name: str) -> None:
    content, where, words = HOSTILE[name]
    path = tmp_path / "tenants.yaml"
    path.write_bytes(content())
    code, stderr, seconds, rss = _check_config(path)
    assert (code, "Traceback" in stderr) == (1, False), stderr
    assert words in stderr and where in stderr, stderr
    assert seconds < 30  # about 2 s on an idle machine, most of it starting Python
    assert rss < MAX_RSS_BYTES


@pytest.mark.parametrize(
    "name",
    ["a quantity that overflows", "10^100 GPUs", "a 50 MB file", "one value too many", "10,000 levels of mappings"],
)
def test_check_config_refuses_in_seconds(tmp_path: Path, name: str) -> None:
    content, where, words = HOSTILE[name]
    path = tmp_path / "tenants.yaml"
    path.write_bytes(content())
    code, stderr, seconds, rss = _check_config(path)
    assert (code, "Traceback" in stderr) == (1, False), stderr
    assert words in stderr, stderr
    assert seconds < 30 and rss < MAX_RSS_BYTES, (seconds, rss)


def test_the_largest_file_accepted_is_read_in_seconds_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(_largest_accepted())
    assert MAX_FILE_BYTES - 1000 < path.stat().st_size <= MAX_FILE_BYTES
    code, stderr, seconds, rss = _check_config(path)
    assert code == 0, stderr
    assert seconds < 30  # about 5 s on an idle machine
    assert rss < MAX_RSS_BYTES, rss


def test_the_image_catalog_is_read_with_the_same_bounds(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    catalog = EXAMPLE_CATALOG.read_text()
    lines = ["x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    # a description is turned into text: an expanded bomb there would be a string of gigabytes
    path.write_text("\n".join(lines) + "\n" + catalog.replace("description:", "description: *a8 #", 1))
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert time.monotonic() - start < 10
    assert "values (after YAML aliases are expanded)" in str(info.value)
    path.write_bytes(catalog.encode("utf-16"))
    with pytest.raises(ConfigError, match="is UTF-16 text"):
        load_catalog(path)


def test_a_byte_order_mark_of_utf8_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode())
    assert set(load_platform(path, EXAMPLE_CATALOG).tenants) == {"snu-ai", "nova-labs"}


def test_aliases_that_stay_small_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    text = EXAMPLE.replace("profiles: [cpu-small, a100-x1, h100-x1, h100-x4]", "profiles: &all [cpu-small, h100-x1]")
    path.write_text(text.replace("profiles: [cpu-small, h100-x1, h100-x2-jax]", "profiles: *all"))
    config = load_platform(path, EXAMPLE_CATALOG)
    assert config.tenants["nova-labs"].profiles == ("cpu-small", "h100-x1")


def test_the_hub_refuses_to_start_with_the_problem(tmp_path: Path) -> None:
    # the hub reads tenants.yaml in its config file, before anything starts: it exits with the
    # loader's words (no traceback), in seconds and bounded memory
    path = tmp_path / "tenants.yaml"
    path.write_text(_bomb("admins"))
    hub = [str(AIDC.with_name("jupyterhub")), "-f", str(REPO / "hub_config" / "jupyterhub_config.py")]
    code, output, _, rss = _measured(
        hub, tmp_path / "hub.stderr", cwd=tmp_path, env={**os.environ, "AIDC_TENANTS": str(path)}
    )
    assert (code, "Traceback" in output) == (1, False), output
    assert "AIDC Hub cannot start because of its tenant config." in output
    assert "the file has more than 100,000 values (after YAML aliases are expanded)" in output
    assert rss < MAX_RSS_BYTES, rss
