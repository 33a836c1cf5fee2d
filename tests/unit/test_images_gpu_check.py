"""images/base/aidc-gpu-check on the CPU path: the real script in a subprocess, with numpy.

GPUs are hidden from it (an empty PATH, so no nvidia-smi; CUDA_VISIBLE_DEVICES="") so that these
tests mean the same on a machine with GPUs. The GPU path is run by operators after a build:
``images/build --check`` or ``docker run --gpus all aidc/pytorch:<tag> aidc-gpu-check``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "base" / "aidc-gpu-check"


def gpu_check(
    tmp_path: Path,
    *args: str,
    python: list[str] | None = None,
    corrupt: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("AIDC_GPU_CHECK_CORRUPT", "PYTHONPATH")}
    environment.update(PATH=str(tmp_path), CUDA_VISIBLE_DEVICES="", **(env or {}))
    if corrupt:
        environment["AIDC_GPU_CHECK_CORRUPT"] = corrupt
    return subprocess.run(
        [*(python or [sys.executable]), str(SCRIPT), "--framework", "none", *args],
        capture_output=True,
        text=True,
        env=environment,
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


def test_expected_versions_pass_and_a_wrong_or_missing_one_fails(tmp_path: Path) -> None:
    numpy_version = importlib.metadata.version("numpy")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    out = gpu_check(
        tmp_path, "--cpu", "--expect-version", f"numpy={numpy_version}", "--expect-version", f"python={python}"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert report(out)[2] == f"[  ok] versions: numpy {numpy_version}, python {platform.python_version()}, as expected"

    out = gpu_check(tmp_path, "--cpu", "--expect-version", "numpy=0.1", "--expect-version", "aidc-no-such-package=1")
    assert out.returncode == 1
    assert report(out)[2] == (
        f"[FAIL] versions: numpy is {numpy_version}, expected 0.1; aidc-no-such-package is not installed (expected 1)"
    )
    assert report(out)[-1] == "aidc-gpu-check: FAILED 1 of 3 checks (versions)"


def test_an_expected_version_must_be_package_equals_version(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu", "--expect-version", "torch")
    assert out.returncode == 2 and out.stdout == ""
    assert "--expect-version takes PACKAGE=VERSION (torch=2.9.1), not 'torch'" in out.stderr


# --------------------------------------------------------------------------- cuda-libraries


def compile_library(path: Path, source: str, *link: str) -> Path:
    """A real ELF shared library at ``path``, its soname the file's name, from C ``source``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c_file = path.parent.parent / f"{path.name}.c"  # outside lib/, which the check globs
    c_file.write_text(source)
    command = ["cc", "-shared", "-fPIC", f"-Wl,-soname,{path.name}", "-o", str(path), str(c_file), *link]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return path


def wheels(tmp_path: Path) -> tuple[Path, Path]:
    """site/nvidia/{alpha,zeta}/lib like NVIDIA's wheels: alpha's library needs zeta's, by soname
    only (no RPATH), so it loads only once zeta's is loaded, and it sorts first."""
    site = tmp_path / "site"
    zeta = compile_library(site / "nvidia/zeta/lib/libaidczeta.so.1", "int zeta(void) { return 42; }")
    alpha = compile_library(
        site / "nvidia/alpha/lib/libaidcalpha.so.1",
        "int zeta(void); int alpha(void) { return zeta(); }",
        f"-L{zeta.parent}",
        "-l:libaidczeta.so.1",
    )
    alone = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(alpha)!r})"], capture_output=True)
    assert b"libaidczeta.so.1: cannot open shared object file" in alone.stderr  # it needs the rounds
    return site, alpha


def test_without_nvidia_wheels_the_header_says_so_and_there_is_no_library_check(tmp_path: Path) -> None:
    out = gpu_check(tmp_path, "--cpu")
    assert report(out)[1].endswith("; no NVIDIA wheels")
    assert "cuda-libraries" not in out.stdout


def test_every_library_of_the_wheels_loads_in_dependency_order(tmp_path: Path) -> None:
    site, _ = wheels(tmp_path)
    out = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = report(out)
    assert lines[1].endswith("; 2 CUDA libraries of NVIDIA's wheels")
    assert lines[4].startswith(
        "[  ok] cuda-libraries: all 2 shared libraries of 2 NVIDIA wheels (site-packages/nvidia/*/lib) load with ctypes,"
    )
    assert lines[-1] == "aidc-gpu-check: all 3 checks passed"


def test_a_library_whose_dependency_is_missing_fails_naming_it(tmp_path: Path) -> None:
    site, _ = wheels(tmp_path)
    absent = compile_library(tmp_path / "elsewhere/lib/libaidcabsent.so.1", "int absent(void) { return 1; }")
    compile_library(
        site / "nvidia/broken/lib/libaidcbroken.so.1",
        "int absent(void); int broken(void) { return absent(); }",
        f"-L{absent.parent}",
        "-l:libaidcabsent.so.1",
    )
    out = gpu_check(tmp_path, "--allow-cpu", env={"PYTHONPATH": str(site)})  # the GPU path runs it too
    assert out.returncode == 1
    assert report(out)[-2] == (
        "[FAIL] cuda-libraries: 2 of 3 shared libraries of 3 NVIDIA wheels load; 1 does not:"
        " libaidcabsent.so.1 not found for nvidia/broken/lib/libaidcbroken.so.1"
    )
    assert report(out)[-1] == "aidc-gpu-check: FAILED 1 of 4 checks (cuda-libraries)"


def test_a_library_built_against_another_version_of_a_wheel_fails_naming_the_symbol(tmp_path: Path) -> None:
    site, _ = wheels(tmp_path)
    newer = compile_library(  # the version omega was linked against; the wheel's zeta lacks zeta_v2
        tmp_path / "newer/lib/libaidczeta.so.1", "int zeta(void) { return 1; } int zeta_v2(void) { return 2; }"
    )
    compile_library(
        site / "nvidia/omega/lib/libaidcomega.so.1",
        "int zeta_v2(void); int omega(void) { return zeta_v2(); }",
        f"-L{newer.parent}",
        "-l:libaidczeta.so.1",
    )
    out = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site)})
    assert out.returncode == 1
    assert report(out)[-2] == (
        "[FAIL] cuda-libraries: 2 of 3 shared libraries of 3 NVIDIA wheels load; 1 does not:"
        " undefined symbol: zeta_v2 for nvidia/omega/lib/libaidcomega.so.1"
    )


def test_a_library_that_needs_only_the_driver_waits_for_the_gpu_path_and_loads_with_it(tmp_path: Path) -> None:
    site, _ = wheels(tmp_path)
    driver = compile_library(tmp_path / "driver/libcuda.so.1", "int cuInit(unsigned int flags) { return 0; }")
    compile_library(
        site / "nvidia/dnn/lib/libaidcdnn.so.1",
        "int cuInit(unsigned int flags); int dnn(void) { return cuInit(0); }",
        f"-L{driver.parent}",
        "-l:libcuda.so.1",
    )
    out = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site)})  # no driver on this machine
    assert out.returncode == 0, out.stdout + out.stderr
    assert report(out)[-2].startswith(
        "[  ok] cuda-libraries: 2 of 3 shared libraries of 3 NVIDIA wheels (site-packages/nvidia/*/lib) load with ctypes,"
    )
    assert report(out)[-2].endswith(
        "; 1 needs the NVIDIA driver's libcuda.so.1, which is not here (no GPU), and loads on the GPU path:"
        " nvidia/dnn/lib/libaidcdnn.so.1"
    )

    with_driver = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(driver.parent)})
    assert with_driver.returncode == 0, with_driver.stdout + with_driver.stderr
    assert report(with_driver)[-2].startswith("[  ok] cuda-libraries: all 3 shared libraries of 3 NVIDIA wheels")
    assert "driver" not in report(with_driver)[-2]


def test_a_plugin_of_a_sites_mpi_stack_is_named_and_any_other_missing_library_still_fails(tmp_path: Path) -> None:
    """NVSHMEM's MPI bootstrap needs the site's Open MPI (libmpi.so.40): named, not failed; the
    same plugin missing a library outside the site stacks fails."""
    site, _ = wheels(tmp_path)
    mpi = compile_library(tmp_path / "openmpi/lib/libmpi.so.40", "int MPI_Init(void *a, void *b) { return 0; }")
    compile_library(
        site / "nvidia/nvshmem/lib/nvshmem_bootstrap_mpi.so.3",
        "int MPI_Init(void *a, void *b); int boot(void) { return MPI_Init(0, 0); }",
        f"-L{mpi.parent}",
        "-l:libmpi.so.40",
    )
    out = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert report(out)[-2].endswith(
        "; 1 optional plugin of a site's MPI, PMIx, OpenSHMEM, libfabric or UCX stack, which loads where the site"
        " installs it: libmpi.so.40 not found for nvidia/nvshmem/lib/nvshmem_bootstrap_mpi.so.3"
    )

    absent = compile_library(tmp_path / "elsewhere/lib/libaidcabsent.so.1", "int absent(void) { return 1; }")
    compile_library(
        site / "nvidia/nvshmem/lib/nvshmem_transport_other.so.3",
        "int absent(void); int transport(void) { return absent(); }",
        f"-L{absent.parent}",
        "-l:libaidcabsent.so.1",
    )
    failed = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site)})
    assert failed.returncode == 1
    assert "libaidcabsent.so.1 not found for nvidia/nvshmem/lib/nvshmem_transport_other.so.3" in report(failed)[-2]
    assert report(failed)[-2].startswith("[FAIL] cuda-libraries:")

    with_mpi = gpu_check(tmp_path, "--cpu", env={"PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(mpi.parent)})
    assert "optional plugin" not in report(with_mpi)[-2]
