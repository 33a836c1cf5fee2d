"""benchmarks/images.py: the RUN steps it reads from a build log, and its docs/images.md section,
from given results (nothing built)."""

from __future__ import annotations

from benchmarks import images as bench

LOG = """\
images/build [1/2]: podman build --file images/base/Dockerfile --tag aidc/base:2026.11 .
STEP 14/31: RUN apt-get update
--> Using cache 8f333e15b19b
STEP 19/31: RUN pip install -r /tmp/requirements.txt
--> Using cache 214e89719de2
images/build [2/2]: podman build --file images/pytorch/Dockerfile --tag aidc/pytorch:2026.11 .
STEP 9/10: COPY images/pytorch/requirements.txt /tmp/aidc-requirements.txt
--> Using cache 5720a3ac8d91
STEP 10/10: RUN uv pip install -r /tmp/aidc-requirements.txt
Using Python 3.11.2 environment at: /opt/venv
"""


def test_run_steps_counts_the_images_own_run_steps_and_those_from_the_cache() -> None:
    assert bench.run_steps(LOG, "images/base/Dockerfile") == (2, 2)
    assert bench.run_steps(LOG, "images/pytorch/Dockerfile") == (1, 0)
    assert bench.run_steps(LOG, "images/jax/Dockerfile") == (0, 0)


def test_section_has_a_row_per_image_and_each_reports_output() -> None:
    built = [
        bench.Built("base", "aidc/base:2026.11", None, 2.0, 5, 5, 2_380_000_000),
        bench.Built("pytorch", "aidc/pytorch:2026.11", "base", 139.0, 1, 0, 8_110_000_000),
        bench.Built("hub", "aidc/hub:2026.11", None, 95.0, 4, 1, 814_000_000),
    ]
    checks = [
        {
            "id": "base",
            "image": "aidc/base:2026.11",
            "passed": True,
            "problem": "",
            "checks": [
                {"name": "versions", "status": "ok", "detail": "python 3.11.2, numpy 2.3.5, as expected"},
                {"name": "all-reduce cpu x2", "status": "ok", "detail": "process ring over pipes: sum of ..."},
            ],
            "output": "aidc-gpu-check on c: CPU path (--cpu)\n  [  ok] versions: ...\n",
        },
        {
            "id": "pytorch",
            "image": "aidc/pytorch:2026.11",
            "passed": False,
            "problem": "",
            "checks": [
                {
                    "name": "cuda-libraries",
                    "status": "FAIL",
                    "detail": "37 of 45 shared libraries of 15 NVIDIA wheels load; 8 do not: ...",
                }
            ],
            "output": "  [FAIL] cuda-libraries: 37 of 45\n",
        },
    ]
    started = bench.datetime(2026, 12, 2, 16, 0, tzinfo=bench.UTC)
    lines = bench.section(built, checks, started, 900.0).splitlines()
    assert lines[0].startswith("Recorded 2026-12-02 on ") and lines[0].endswith("`make images` took 15 min.")
    assert lines[4:7] == [
        "| `aidc/base:2026.11` | 2.38 GB | 2 s (every step from the layer cache)"
        " | versions (python 3.11.2, numpy 2.3.5); all-reduce cpu x2 (process ring over pipes) | passed |",
        "| `aidc/pytorch:2026.11` | 8.11 GB | 2.3 min (cold: every step built, base from the cache)"
        " | cuda-libraries (37 of 45 libraries of 15 NVIDIA wheels) **FAIL** | **FAILED: cuda-libraries** |",
        "| `aidc/hub:2026.11` | 0.81 GB | 1.6 min (3 of 4 RUN steps built)"
        " | not a workspace image (tests/images: the images tier) | – |",
    ]
    assert "`aidc/pytorch:2026.11`:" in lines and "  [FAIL] cuda-libraries: 37 of 45" in lines


def test_an_image_taken_whole_from_the_cache_keeps_the_cold_time_recorded_before() -> None:
    before = bench.section(
        [bench.Built("jax", "aidc/jax:2026.11", "base", 96.0, 1, 0, 6_670_000_000)], [], bench.datetime.now(), 60.0
    )
    earlier = bench.recorded_cold_times(before)
    assert earlier == {"aidc/jax:2026.11": "1.6 min (cold: every step built, base from the cache)"}
    cached = [bench.Built("jax", "aidc/jax:2026.11", "base", 3.0, 1, 1, 6_670_000_000)]
    again = bench.section(cached, [], bench.datetime.now(), 60.0, earlier)
    assert "| 1.6 min (cold: every step built, base from the cache) in an earlier run |" in again
    assert bench.recorded_cold_times(again) == earlier  # and so on, run after run
    rebuilt = [bench.Built("jax", "aidc/jax:2026.11", "base", 80.0, 1, 0, 6_670_000_000)]
    assert "| 1.3 min (cold: every step built, base from the cache) |" in bench.section(
        rebuilt, [], bench.datetime.now(), 60.0, earlier
    )
