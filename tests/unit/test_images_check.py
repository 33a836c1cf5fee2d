"""images/check: what it runs in each workspace image, its table and JSON, its refusals.

The container engine here is a stand-in script on PATH that answers ``image inspect`` and prints
an aidc-gpu-check report for ``run``; `make images` runs images/check against the real images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "images" / "check"
CATALOG = yaml.safe_load((REPO / "images" / "catalog.yaml").read_text())

ENGINE = """#!/bin/sh
# A stand-in podman: the images named in $BUILT exist (8 GB); `run` prints a report.
echo "$@" >> "$CALLS"
if [ "$1 $2" = "image inspect" ]; then
  for ref in $BUILT; do [ "$ref" = "$5" ] && echo 8000000000 && exit 0; done
  echo "Error: $5: image not known" >&2; exit 125
fi
echo "aidc-gpu-check on test: CPU path (--cpu)"
echo "  [  ok] versions: as expected"
if [ -n "$FAIL" ]; then echo "  [FAIL] cuda-libraries: 1 of 2 load"; exit 1; fi
echo "  [  ok] cuda-libraries: all 2 load"
"""


def images_check(tmp_path: Path, *args: str, built: str = "", fail: str = "") -> subprocess.CompletedProcess[str]:
    engine = tmp_path / "podman"
    engine.write_text(ENGINE)
    engine.chmod(0o755)
    env = dict(os.environ, BUILT=built, FAIL=fail, CALLS=str(tmp_path / "calls"))
    env.pop("AIDC_CONTAINER_ENGINE", None)
    return subprocess.run(
        [sys.executable, str(CHECK), "--engine", str(engine), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


def test_script_is_executable() -> None:
    assert os.access(CHECK, os.X_OK)
    assert CHECK.read_text().startswith("#!/usr/bin/env python3\n")


def test_each_image_is_checked_on_the_cpu_path_with_the_catalogs_versions_and_no_network(tmp_path: Path) -> None:
    out = images_check(tmp_path, "pytorch", "--json", str(tmp_path / "out.json"), built="aidc/pytorch:2026.11")
    assert out.returncode == 0, out.stdout + out.stderr
    toolchain = next(e for e in CATALOG["images"] if e["id"] == "pytorch")["toolchain"]
    run = calls(tmp_path)[-1]
    assert run == (
        "run --rm --network none aidc/pytorch:2026.11 aidc-gpu-check --cpu --processes 2"
        f" --expect-version python={toolchain['python']} --expect-version torch={toolchain['pytorch']}"
        f" --expect-version torchvision={toolchain['torchvision']} --expect-version torchaudio={toolchain['torchaudio']}"
        f" --expect-version datasets={toolchain['datasets']}"
    )
    table = out.stdout.split("\n\n")[-1].splitlines()
    assert table == ["image                 size     result", "aidc/pytorch:2026.11  8.00 GB  passed: 2 checks"]
    (result,) = json.loads((tmp_path / "out.json").read_text())
    assert result["id"] == "pytorch" and result["passed"] is True and result["size_bytes"] == 8_000_000_000
    assert result["checks"] == [
        {"name": "versions", "status": "ok", "detail": "as expected"},
        {"name": "cuda-libraries", "status": "ok", "detail": "all 2 load"},
    ]


def test_base_expects_only_what_its_lock_has(tmp_path: Path) -> None:
    out = images_check(tmp_path, "base", built="aidc/base:2026.11")
    assert out.returncode == 0, out.stdout + out.stderr
    toolchain = next(e for e in CATALOG["images"] if e["id"] == "base")["toolchain"]
    expected = [f"--expect-version {tool}={version}" for tool, version in toolchain.items()]
    assert calls(tmp_path)[-1].endswith("--processes 2 " + " ".join(expected))


def test_a_failed_check_or_an_image_not_built_fails_and_says_which(tmp_path: Path) -> None:
    out = images_check(tmp_path, "base", "jax", built="aidc/base:2026.11", fail="1")
    assert out.returncode == 1
    table = out.stdout.split("\n\n")[-1].splitlines()
    assert table == [
        "image              size     result",
        "aidc/base:2026.11  8.00 GB  FAILED: cuda-libraries",
        "aidc/jax:2026.11   -        not built: images/build --engine podman jax",
    ]
    assert "images/check: 2 of 2 images failed: base, jax" in out.stderr


def test_the_gpu_path_runs_with_the_engines_gpu_flags(tmp_path: Path) -> None:
    out = images_check(tmp_path, "jax", "--gpu", built="aidc/jax:2026.11")
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls(tmp_path)[-1].startswith(
        "run --rm --device nvidia.com/gpu=all aidc/jax:2026.11 aidc-gpu-check --expect"
    )


def test_an_unknown_or_platform_image_is_refused(tmp_path: Path) -> None:
    out = images_check(tmp_path, "hub", "nope")
    assert out.returncode == 2 and out.stdout == ""
    assert "no workspace image 'hub', 'nope' in the catalog; it has base, pytorch, tensorflow, jax" in out.stderr
    assert "hub is a platform image" in out.stderr
