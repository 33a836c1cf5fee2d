"""The images of images/catalog.yaml built here with podman, checked, and recorded (`make images`).

Builds every catalog image, parents first, one ``images/build`` run per image with the test bed's
podman (``tests.bed.podman.build``: the Debian base made with mmdebstrap, no registry, the host's CA
bundle as the build secret), timing each: an image's time is its own layers, its parents already
in the layer cache. Then runs ``images/check`` on the workspace images (aidc-gpu-check's CPU path
in a container without network) and records, per image, its size, build time and what was checked
with the result, between the ``images`` markers of docs/images.md.

    .venv/bin/python -P benchmarks/images.py                          # build, check, print
    .venv/bin/python -P benchmarks/images.py --write docs/images.md   # and record (make images)
    .venv/bin/python -P benchmarks/images.py base pytorch             # these (and their parents) only

The framework images download several GB each, so this is not part of CI. images/build labels each
image with its build date; unless SOURCE_DATE_EPOCH is set, this run's start is that date for
every image it builds, so that each is built once and its children find it in the layer cache.
Exit status: 0 built and every check passed, 1 a build failed (nothing recorded) or a check failed
(recorded, with what failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._readme import cpus, write_section  # noqa: E402
from tests.bed import podman  # noqa: E402

SECTION = "images"
ARTIFACTS = REPO / "test-artifacts"  # the build logs, one per image
CHECK = REPO / "images" / "check"


@dataclass
class Built:
    id: str
    ref: str
    parent: str | None
    seconds: float
    run_steps: int  # the RUN steps of its own Dockerfile
    run_cached: int  # of them, how many came from the layer cache
    size_bytes: int


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run_steps(log_text: str, dockerfile: str) -> tuple[int, int]:
    """The RUN steps of ``dockerfile``'s build in ``log_text`` (images/build's output, podman's
    ``STEP n/m: RUN ...`` lines), and how many of them podman took from its layer cache."""
    runs = cached = 0
    mine = False
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("images/build ["):
            mine = f" --file {dockerfile} " in line
        elif mine and line.startswith("STEP ") and ": RUN " in line:
            runs += 1
            cached += i + 1 < len(lines) and lines[i + 1].startswith("--> Using cache")
    return runs, cached


def build_all(wanted: list[str]) -> list[Built]:
    catalog = podman.REPO / "images" / "catalog.yaml"
    build = sys.modules.get("aidc_images_build") or load_build()
    order = build.build_order(build.read_catalog(catalog), wanted)
    built = []
    for target in order:
        log_file = ARTIFACTS / f"images-build-{target.id}.log"
        log_file.unlink(missing_ok=True)
        log(f"building {target.ref} (log: {log_file})")
        seconds = podman.build(target.id, log=log_file)
        runs, cached = run_steps(log_file.read_text(errors="replace"), f"{target.build}/Dockerfile")
        size = int(podman.podman("image", "inspect", "--format", "{{.Size}}", target.ref).stdout.strip())
        built.append(Built(target.id, target.ref, target.parent, seconds, runs, cached, size))
        log(f"{target.ref}: {seconds:.0f} s, {size / 1e9:.2f} GB, {cached} of {runs} RUN steps from the layer cache")
    return built


def load_build() -> Any:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("aidc_images_build", str(REPO / "images" / "build"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


def check_all(ids: list[str]) -> tuple[int, list[dict[str, Any]]]:
    """images/check with the bed's podman on workspace images ``ids``: its exit status and results."""
    with tempfile.TemporaryDirectory(prefix="aidc-images-") as tmp:
        results = Path(tmp) / "check.json"
        command = [sys.executable, str(CHECK), "--engine", "podman", "--json", str(results), *ids]
        status = subprocess.run(command, cwd=REPO, env=podman.environment()).returncode
        return status, json.loads(results.read_text()) if results.exists() else []


def short(check: dict[str, str]) -> str:
    """One check for the table: its name and the gist of its detail."""
    detail = check["detail"]
    name = check["name"]
    if name == "versions":
        gist = detail.removesuffix(", as expected")
    elif name.startswith("all-reduce"):
        gist = detail.split(":", 1)[0]
    elif name == "cuda-libraries":
        gist = detail.split(" load", 1)[0].split(" (", 1)[0].replace(" shared libraries of", " libraries of")
    else:
        gist = ""
    mark = "" if check["status"] == "ok" else f" **{check['status']}**"
    return f"{name}{f' ({gist})' if gist else ''}{mark}"


def recorded_cold_times(text: str) -> dict[str, str]:
    """Image reference -> its build time as recorded in ``text`` (a section this script wrote),
    for the images whose row says they were built cold."""
    times = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and "cold" in cells[2]:
            times[cells[0].strip("`")] = cells[2].removesuffix(" in an earlier run")
    return times


def section(
    built: list[Built],
    checks: list[dict[str, Any]],
    started: datetime,
    seconds: float,
    earlier: dict[str, str] | None = None,
) -> str:
    """The recorded section. ``earlier``: cold build times recorded before (recorded_cold_times),
    kept for the images that this run took whole from the layer cache, since it did not build them."""
    engine = podman.podman("--version").stdout.strip()
    by_id = {c["id"]: c for c in checks}
    lines = [
        f"Recorded {started:%Y-%m-%d} on {cpus()}, {engine}, Linux {platform.release()}, without a GPU;"
        f" `make images` took {seconds / 60:.0f} min.",
        "",
        "| image | size | build here | checked (`images/check`: `aidc-gpu-check --cpu --processes 2`, no network) | result |",
        "|---|---:|---:|---|---|",
    ]
    for b in built:
        if b.run_cached == b.run_steps:
            how = "every step from the layer cache"
        elif b.run_cached:
            how = f"{b.run_steps - b.run_cached} of {b.run_steps} RUN steps built"
        else:
            how = f"cold: every step built, {b.parent} from the cache" if b.parent else "cold: every step built"
        time_text = f"{b.seconds / 60:.1f} min ({how})" if b.seconds >= 60 else f"{b.seconds:.0f} s ({how})"
        if b.run_cached == b.run_steps and b.ref in (earlier or {}):
            time_text = f"{(earlier or {})[b.ref]} in an earlier run"
        if b.id in by_id:
            result = by_id[b.id]
            checked = "; ".join(short(c) for c in result["checks"]) or "–"
            failed = ", ".join(c["name"] for c in result["checks"] if c["status"] == "FAIL")
            verdict = "passed" if result["passed"] else f"**{result['problem'] or f'FAILED: {failed}'}**"
        else:
            checked, verdict = "not a workspace image (tests/images: the images tier)", "–"
        lines.append(f"| `{b.ref}` | {b.size_bytes / 1e9:.2f} GB | {time_text} | {checked} | {verdict} |")
    lines += [
        "",
        "aidc-gpu-check's report in each workspace image (its standard output; the frameworks' log lines left out):",
        "",
    ]
    for c in checks:
        report = [line for line in c["output"].splitlines() if line.startswith(("aidc-gpu-check", "  "))]
        lines += [f"`{c['image']}`:", "", "```", *report, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="catalog ids (default: all), with their parents")
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this file, between the images markers"
    )
    args = parser.parse_args(argv)
    started, clock = datetime.now(tz=UTC), time.monotonic()
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(int(started.timestamp())))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        built = build_all(args.images)
    except RuntimeError as e:
        log(f"FAILED: {e}\nnothing recorded")
        return 1
    workspace = [b.id for b in built if b.id in workspace_ids()]
    status, checks = check_all(workspace)
    earlier = recorded_cold_times(args.write.read_text()) if args.write and args.write.exists() else {}
    text = section(built, checks, started, time.monotonic() - clock, earlier)
    print(text)
    if not checks:
        log(f"images/check gave no results (exit status {status}); nothing recorded")
        return 1
    if args.write:  # a failed check is a result too: recorded, and the exit status says so
        write_section(args.write, SECTION, text)
        log(f"recorded in {args.write}")
    if status != 0:
        log(f"images/check failed (exit status {status})")
        return 1
    return 0


def workspace_ids() -> set[str]:
    import yaml

    return {e["id"] for e in yaml.safe_load((REPO / "images" / "catalog.yaml").read_text())["images"]}


if __name__ == "__main__":
    sys.exit(main())
