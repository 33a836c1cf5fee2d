"""images/base/aidc-gpu-check on the CPU path: the real script in a subprocess, with numpy.

GPUs are hidden from it (an empty PATH, so no nvidia-smi; CUDA_VISIBLE_DEVICES="") so that these
tests mean the same on a machine with GPUs. The GPU path is run by operators after a build:
``images/build --check`` or ``docker run --gpus all aidc/pytorch:<tag> aidc-gpu-check``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "base" / "aidc-gpu-check"


def gpu_check(
    tmp_path: Path, *args: str, python: list[str] | None = None, corrupt: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIDC_GPU_CHECK_CORRUPT"}
    env.update(PATH=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    if corrupt:
        env["AIDC_GPU_CHECK_CORRUPT"] = corrupt
    return subprocess.run(
        [*(python or [sys.executable]), str(SCRIPT), "--framework", "none", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def report(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip() for line in out.stdout.splitlines()]


def test_script_is_executable_python_for_the_image() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_cpu_path_matmul_and_all_reduce_across_processes_pass(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = report(out)
    assert lines[0].endswith(": CPU path (--cpu)")
    assert lines[1].startswith("python ") and ", numpy " in lines[1]
    assert lines[2].startswith("[  ok] matmul cpu numpy: 256x256 float32 matches numpy's float64 result")
    assert lines[3].startswith(
        "[  ok] all-reduce cpu x2: process ring over pipes: sum of 1024 values over 2 ranks correct on every rank"
    )
    assert lines[-1] == "aidc-gpu-check: all 2 checks passed"


def test_all_reduce_sums_across_more_processes(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", "--processes", "4", "--size", "64")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[  ok] matmul cpu numpy: 64x64 float32 matches" in out.stdout
    assert "sum of 1024 values over 4 ranks correct on every rank" in out.stdout


def test_a_wrong_matmul_result_fails(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", corrupt="matmul")
    assert out.returncode == 1
    lines = report(out)
    assert "self-test: AIDC_GPU_CHECK_CORRUPT=matmul corrupts that result on purpose" in lines
    failed = next(line for line in lines if line.startswith("[FAIL]"))
    assert failed.startswith("[FAIL] matmul cpu numpy: 256x256 float32 DIFFERS FROM (tolerance 1e-04)")
    assert "max relative error 1.0e+00" in failed
    assert lines[-1] == "aidc-gpu-check: FAILED 1 of 2 checks (matmul cpu numpy)"


def test_a_wrong_all_reduce_result_fails(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", "--processes", "3", corrupt="allreduce")
    assert out.returncode == 1
    assert (
        "[FAIL] all-reduce cpu x3: process ring over pipes: rank 0 holds 7 at element 1, expected 6"
        " (1 of 3 ranks wrong)" in report(out)
    )


def test_expecting_gpus_on_a_machine_without_them_fails_saying_what_was_found(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", "--expect-gpus", "2")
    assert out.returncode == 1
    (failed,) = [line for line in report(out) if line.startswith("[FAIL]")]
    assert failed.startswith("[FAIL] devices: expected 2 GPUs (--expect-gpus 2), found 0: nvidia-smi is not on PATH;")
    assert "docker run --gpus all" in failed
    assert report(out)[-1] == "aidc-gpu-check: FAILED 1 of 1 checks (devices)"


def test_expecting_no_gpu_passes_on_the_cpu_path(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", "--expect-gpus", "0")
    assert out.returncode == 0, out.stdout
    assert report(out)[2].startswith("[  ok] devices: no GPU, as expected (--expect-gpus 0)")


def test_no_gpu_fails_unless_the_cpu_path_is_allowed(tmp_path: Path) -> None:
    out = gpu_check(tmp_path)
    assert out.returncode == 1
    assert report(out)[0].endswith(": GPU path")
    assert report(out)[2].startswith("[FAIL] devices: no GPU found: nvidia-smi is not on PATH;")
    assert "Use --cpu (or --allow-cpu) to check the CPU path." in out.stdout

    allowed = gpu_check(tmp_path, "--allow-cpu")
    assert allowed.returncode == 0, allowed.stdout
    lines = report(allowed)
    assert lines[2].startswith("[  ok] devices: no GPU found (") and "--allow-cpu: checking the CPU path" in lines[2]
    assert lines[-1] == "aidc-gpu-check: all 3 checks passed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "1"], "--processes must be between 2 and 64, not 1"),
        (["--expect-gpus", "-1"], "--expect-gpus must be 0 or more, not -1"),
        (["--size", "0"], "--size must be between 1 and 8192, not 0"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    out = gpu_check(tmp_path, "--cpu", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr


def test_without_numpy_it_says_what_it_needs(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", python=[sys.executable, "-I", "-S"])  # -S: no site-packages, no numpy
    assert out.returncode == 1
    assert "aidc-gpu-check: needs numpy to compute the reference results" in out.stderr
    assert "pip install numpy" in out.stderr
