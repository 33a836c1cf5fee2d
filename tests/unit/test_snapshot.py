"""quotas.snapshot: one platform config per process, swapped whole by a reload that validates
first, refuses a bad file (keeping the snapshot in force) and says what changed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quotas.loader import ConfigError
from quotas.snapshot import (
    HUB_STATE,
    PlatformHolder,
    ReloadOutcome,
    describe_changes,
    digest_of,
    read_state,
    write_state,
)

from .conftest import EXAMPLE_CATALOG

TENANTS = Path(__file__).resolve().parents[1] / "hub" / "tenants.yaml"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A tenants.yaml (the hub tier's: `lab` with 4 H100, `startup`) and a catalog to edit."""
    tenants, catalog = tmp_path / "tenants.yaml", tmp_path / "catalog.yaml"
    tenants.write_text(TENANTS.read_text())
    catalog.write_text(EXAMPLE_CATALOG.read_text())
    return tenants, catalog


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_every_reader_gets_the_same_object_until_a_reload(files: tuple[Path, Path]) -> None:
    holder = PlatformHolder.from_files(*files)
    first = holder.config
    assert holder.config is first and holder.snapshot.generation == 1
    assert first.source == str(files[0])  # named as people know the file, not as the copy it was read from


def test_an_edit_changes_nothing_until_reload_then_swaps_whole(files: tuple[Path, Path]) -> None:
    tenants, _ = files
    holder = PlatformHolder.from_files(*files)
    before = holder.config
    edit(tenants, "quota: {gpus: {H100: 4}", "quota: {gpus: {H100: 2}")
    assert holder.config is before and before.tenants["lab"].quota.gpus["H100"] == 4  # no drift

    outcome = holder.reload()

    assert outcome.applied and outcome.changed and outcome.generation == 2
    assert holder.config is not before and holder.config.tenants["lab"].quota.gpus["H100"] == 2
    assert before.tenants["lab"].quota.gpus["H100"] == 4  # the old snapshot is never mutated
    assert outcome.changes == ("tenant lab: ceiling H100 GPUs 4 -> 2",)
    assert outcome.digest == holder.snapshot.digest == outcome.read
    assert outcome.lines()[0] == f"Reloaded {tenants}: generation 2 is in force:"


def test_an_invalid_file_is_refused_with_every_problem_and_the_old_snapshot_stays(files: tuple[Path, Path]) -> None:
    tenants, _ = files
    holder = PlatformHolder.from_files(*files)
    before = holder.snapshot
    edit(tenants, "memory: 2Gi", "memory: 2Gb")
    edit(tenants, "kind: startup", "kind: goverment")

    outcome = holder.reload()

    assert not outcome.applied and not outcome.changed
    assert holder.snapshot is before and outcome.generation == 1 and outcome.digest == before.digest
    assert len(outcome.problems) == 2
    assert outcome.problems[0].startswith(f"{tenants}: profiles[cpu].memory: '2Gb' has unit 'Gb'")
    assert outcome.problems[1].startswith(f"{tenants}: tenants[startup].kind: 'goverment' is not a tenant kind")
    assert outcome.read == digest_of(tenants.read_bytes(), files[1].read_bytes())  # what it refused
    text = "\n".join(outcome.lines())
    assert f"Refused {tenants}: 2 problems; the config loaded at" in text
    assert "(generation 1) stays in force" in text


def test_a_missing_file_is_refused_and_a_catalog_error_names_the_catalog(files: tuple[Path, Path]) -> None:
    tenants, catalog = files
    holder = PlatformHolder.from_files(*files)
    tenants.rename(tenants.with_suffix(".bak"))
    missing = holder.reload()
    assert not missing.applied and missing.problems == (f"{tenants} cannot be read: No such file or directory",)

    tenants.with_suffix(".bak").rename(tenants)
    catalog.write_text("images: [{id: base}]\n")
    broken = holder.reload()
    assert not broken.applied and broken.problems and all(p.startswith(str(catalog)) for p in broken.problems)
    assert holder.snapshot.generation == 1


def test_the_same_files_reload_as_no_change(files: tuple[Path, Path]) -> None:
    holder = PlatformHolder.from_files(*files)
    before = holder.config
    outcome = holder.reload()
    assert outcome.applied and not outcome.changed and outcome.generation == 1 and holder.config is before
    assert outcome.lines() == [f"Reloaded {files[0]}: nothing changed (generation 1 stays in force)."]

    files[0].write_text(files[0].read_text() + "# a comment\n")
    comment = holder.reload()
    assert comment.changed and comment.changes == ("only comments or formatting changed",)


def test_a_change_of_gpu_types_needs_a_restart(files: tuple[Path, Path]) -> None:
    tenants, _ = files
    holder = PlatformHolder.from_files(*files)
    edit(tenants, "  A100: {resource: nvidia.com/gpu, product: NVIDIA-A100-SXM4-80GB}\n", "")
    edit(
        tenants,
        "a100-x1, display_name: 1 x A100, gpu: {type: A100",
        "a100-x1, display_name: 1 x A100, gpu: {type: H100",
    )
    edit(tenants, "quota: {gpus: {H100: 1, A100: 2}", "quota: {gpus: {H100: 1}")

    outcome = holder.reload()

    assert not outcome.applied and holder.snapshot.generation == 1
    assert outcome.problems == ("gpu_types changed (-A100); restart the hub to apply it",)


def test_changes_are_listed_for_people(files: tuple[Path, Path]) -> None:
    tenants, _ = files
    holder = PlatformHolder.from_files(*files)
    old = holder.config
    edit(tenants, "members: {users: [alice, bob, carol]}", "members: {users: [alice, carol, zoe]}")
    edit(tenants, "admins: [kim]", "admins: [kim, lee]")
    edit(tenants, "servers: 2, servers_per_user: 2}", "servers: 3, servers_per_user: 2, memory: 16Gi}")
    with tenants.open("a") as f:  # tenants: is the file's last section
        f.write(
            "  - id: acme\n    display_name: Acme\n    kind: company\n    members: {users: [zed]}\n"
            "    profiles: [cpu]\n    quota: {gpus: {A100: 1}, servers: 1, cpu: '8'}\n"
        )
    assert holder.reload().applied

    changes, restart = describe_changes(old, holder.config)

    assert restart == []
    assert changes == [
        "tenant acme added (1 A100 GPUs, 1 servers, 8 CPUs)",
        "tenant lab: members +lee, +zoe, -bob",
        "tenant lab: admins +lee",
        "tenant startup: ceiling servers 2 -> 3; memory no limit -> 16Gi",
    ]


def test_published_bytes_are_what_the_service_loads(files: tuple[Path, Path], tmp_path: Path) -> None:
    """The hub publishes the exact bytes it validated; the service loads them, not the files,
    so an edit made after the hub's reload (and not reloaded) never reaches the service."""
    tenants, catalog = files
    folder = tmp_path / "platform"
    hub = PlatformHolder.from_files(*files)
    hub.publish(folder)
    write_state(folder / HUB_STATE, hub, 0, None)
    service = PlatformHolder.published(folder / HUB_STATE)
    assert service.snapshot.digest == hub.snapshot.digest
    assert service.config.source == str(tenants) and service.config == hub.config

    edit(tenants, "quota: {gpus: {H100: 4}", "quota: {gpus: {H100: 3}")
    assert service.reload().changes == ()  # the hub has not reloaded: the service keeps generation 1
    outcome = hub.reload()
    hub.publish(folder)
    write_state(folder / HUB_STATE, hub, 1, outcome)
    edit(tenants, "quota: {gpus: {H100: 3}", "quota: {gpus: {H100: 1}")  # after the hub's reload

    applied = service.reload()

    assert applied.changed and service.config.tenants["lab"].quota.gpus["H100"] == 3
    assert service.snapshot.digest == hub.snapshot.digest
    # only the snapshot in force and the one before are kept
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(
        [hub.snapshot.digest[:32], digest_of(TENANTS.read_bytes(), catalog.read_bytes())[:32]]
    )


def test_a_published_folder_changed_by_hand_is_refused(files: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "platform"
    hub = PlatformHolder.from_files(*files)
    published = hub.publish(folder)
    write_state(folder / HUB_STATE, hub, 0, None)
    (published / "tenants.yaml").write_text("tenants: []\n")
    with pytest.raises(ValueError, match="digest differs"):
        PlatformHolder.published(folder / HUB_STATE)
    (folder / HUB_STATE).unlink()
    with pytest.raises(FileNotFoundError, match="has published no platform config"):
        PlatformHolder.published(folder / HUB_STATE)


def test_the_first_load_of_an_invalid_file_raises(files: tuple[Path, Path]) -> None:
    tenants, _ = files
    edit(tenants, "memory: 2Gi", "memory: 2Gb")
    with pytest.raises(ConfigError) as info:
        PlatformHolder.from_files(*files)
    assert info.value.source == str(tenants)


def test_state_files_round_trip_the_outcome(files: tuple[Path, Path], tmp_path: Path) -> None:
    holder = PlatformHolder.from_files(*files)
    outcome = holder.reload()
    path = tmp_path / "state" / "hub.json"
    write_state(path, holder, 3, outcome, quotas_pid=42)
    state = read_state(path)
    assert state is not None
    assert (state["pid"], state["reloads"], state["quotas_pid"]) == (os.getpid(), 3, 42)
    assert state["snapshot"]["tenants"] == ["lab", "startup"]
    assert ReloadOutcome.from_json(state["last"]) == outcome
    assert read_state(tmp_path / "none.json") is None
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="not a state file"):
        read_state(path)


def test_outcome_json_keeps_times(files: tuple[Path, Path]) -> None:
    moment = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    holder = PlatformHolder(PlatformHolder.from_files(*files)._read, clock=lambda: moment)
    refused = ReloadOutcome(False, 1, "d", "t.yaml", moment, problems=("x",), since=moment)
    assert ReloadOutcome.from_json(json.loads(json.dumps(refused.to_json()))) == refused
    assert holder.snapshot.since == moment
    assert "the config loaded at 2026-05-01 12:00:00 UTC (generation 1)" in refused.lines()[0]
