"""quotas.loader: tenants.yaml and the image catalog, every problem reported at once with its key path."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotas.loader import (
    ConfigError,
    DurationError,
    PercentError,
    Problem,
    load_catalog,
    load_platform,
    parse_duration,
    parse_percent,
    parse_platform,
)
from quotas.model import PLATFORM_GPU_IDLE, Culling, GpuIdle, Image, TenantCulling

from .conftest import EXAMPLE_CATALOG, EXAMPLE_TENANTS

Data = dict[str, Any]


def problems(data: Any, images: Mapping[str, Image]) -> list[Problem]:
    """The problems parse_platform reports for ``data`` (fails the test if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        parse_platform(data, images)
    return info.value.problems


def only_problem(data: Any, images: Mapping[str, Image]) -> Problem:
    found = problems(data, images)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def write_yaml(tmp_path: Path, data: Any, name: str = "tenants.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------
# the valid examples


def test_example_catalog_loads() -> None:
    images = load_catalog(EXAMPLE_CATALOG)
    assert {"base", "pytorch", "jax"} <= set(images)
    assert images["pytorch"].image.startswith("aidc/pytorch:")
    assert images["pytorch"].toolchain["pytorch"]


def test_example_platform_loads() -> None:
    config = load_platform(EXAMPLE_TENANTS, EXAMPLE_CATALOG)
    assert list(config.tenants) == ["snu-ai", "nova-labs"]
    assert set(config.gpu_types) == {"H100", "A100", "A100-1g.10gb"}
    assert config.gpu_types["A100-1g.10gb"].resource == "nvidia.com/mig-1g.10gb"
    assert config.source == str(EXAMPLE_TENANTS)

    snu = config.tenants["snu-ai"]
    assert snu.kind == "university"
    assert snu.admins == ("kim",)
    assert snu.profiles == ("cpu-small", "a100-x1", "h100-x1", "h100-x4")
    assert dict(snu.quota.gpus) == {"H100": 4, "A100": 2}
    assert snu.quota.memory == Decimal(768 * 2**30)
    assert snu.quota.cpu == Decimal(96)
    assert snu.quota.gpu_hours_per_month == Decimal(2000)

    h100x4 = config.profiles["h100-x4"]
    assert (h100x4.gpu_type, h100x4.gpu_count, h100x4.image) == ("H100", 4, "pytorch")
    assert h100x4.memory == Decimal(256 * 2**30)
    assert config.profiles["cpu-small"].gpus == {}


def test_users_section_adds_people_to_several_tenants(config: Any) -> None:
    assert [t.id for t in config.tenants_of("alice")] == ["snu-ai", "nova-labs"]
    assert [t.id for t in config.tenants_of("bob")] == ["snu-ai"]
    assert [t.id for t in config.tenants_of("kim")] == ["snu-ai"]  # admins are members
    assert config.tenants_of("mallory") == []


def test_parse_platform_accepts_the_example_data(example_data: Data, images: Mapping[str, Image]) -> None:
    config = parse_platform(example_data, images)
    assert set(config.tenants) == {"snu-ai", "nova-labs"}


def test_parse_platform_copies_nothing_back_into_the_input(example_data: Data, images: Mapping[str, Image]) -> None:
    before = copy.deepcopy(example_data)
    parse_platform(example_data, images)
    assert example_data == before


# ---------------------------------------------------------------------------
# one test per bad input: the key path and what is wrong


def test_unknown_key_suggests_the_known_one(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["admin"] = example_data["tenants"][0].pop("admins")
    found = {p.path: p.message for p in problems(example_data, images)}
    assert found["tenants[snu-ai].admin"] == "unknown key; did you mean 'admins'?"


def test_unknown_top_level_key(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tennants"] = []
    problem = only_problem(example_data, images)
    assert (problem.path, problem.message) == ("tennants", "unknown key; did you mean 'tenants'?")


def test_unknown_key_without_a_close_match_lists_the_known_keys(
    example_data: Data, images: Mapping[str, Image]
) -> None:
    example_data["profiles"][0]["zzz"] = 1
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[cpu-small].zzz"
    assert problem.message.startswith("unknown key; known keys: id, display_name, cpu, memory, image")


def test_memory_in_gb_suggests_gi(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][0]["memory"] = "8Gb"
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[cpu-small].memory"
    assert "'8Gb'" in problem.message
    assert "did you mean 'Gi'" in problem.message
    assert '"8Gi"' in problem.message


def test_negative_gpu_count(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["gpu"]["count"] = -1
    problem = only_problem(example_data, images)
    assert (problem.path, problem.message) == ("profiles[a100-x1].gpu.count", "a GPU count cannot be negative (-1)")


def test_negative_gpu_count_in_a_quota(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][1]["quota"]["gpus"]["H100"] = -2
    found = {p.path: p.message for p in problems(example_data, images)}
    assert found["tenants[nova-labs].quota.gpus.H100"] == "a GPU count cannot be negative (-2)"


def test_fractional_gpu_count(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["gpu"]["count"] = 1.5
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[a100-x1].gpu.count"
    assert problem.message == "a GPU count must be a whole number; 1.5 is fractional"


def test_gpu_count_as_a_string(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["gpu"]["count"] = "1"
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[a100-x1].gpu.count"
    assert "without quotes" in problem.message


def test_zero_gpu_count_says_to_leave_out_gpu(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["gpu"]["count"] = 0
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[a100-x1].gpu.count"
    assert "leave out 'gpu'" in problem.message


def test_float_cpu_must_be_written_as_a_string(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][0]["cpu"] = 0.5
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[cpu-small].cpu"
    assert 'write it as a string such as "0.5"' in problem.message


def test_duplicate_tenant_ids(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"].append(copy.deepcopy(example_data["tenants"][0]))
    problem = only_problem(example_data, images)
    assert problem.path == "tenants[2].id"
    assert problem.message == "duplicate tenant id 'snu-ai' (first at tenants[0])"


def test_duplicate_profile_ids(example_data: Data, images: Mapping[str, Image]) -> None:
    twin = copy.deepcopy(example_data["profiles"][3])
    twin["display_name"] = "another H100"
    example_data["profiles"].append(twin)
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[6].id"
    assert problem.message == "duplicate profile id 'h100-x1' (first at profiles[3])"


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    text = EXAMPLE_TENANTS.read_text()
    assert text.count("    kind: university\n") == 1
    text = text.replace("    kind: university\n", "    kind: university\n    kind: company\n")
    line = text.splitlines().index("    kind: company") + 1
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    assert [(p.path, p.message) for p in info.value.problems] == [
        (f"line {line}", "key 'kind' appears twice; keep one")
    ]


def test_profile_naming_an_undeclared_gpu_type(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["gpu"]["type"] = "B200"
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[a100-x1].gpu.type"
    assert problem.message.startswith("GPU type 'B200' is not declared under gpu_types")
    assert "(declared: H100, A100, A100-1g.10gb)" in problem.message


def test_quota_naming_an_undeclared_gpu_type(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][1]["quota"]["gpus"]["B200"] = 8
    found = {p.path: p.message for p in problems(example_data, images)}
    assert found["tenants[nova-labs].quota.gpus.B200"].startswith("GPU type 'B200' is not declared under gpu_types")


def test_profile_naming_an_image_not_in_the_catalog(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["profiles"][2]["image"] = "pytorh"
    problem = only_problem(example_data, images)
    assert problem.path == "profiles[a100-x1].image"
    assert problem.message == "image 'pytorh' is not in images/catalog.yaml; did you mean 'pytorch'?"


def test_cpu_profile_with_a_gpu_only_image(example_data: Data, images: Mapping[str, Image]) -> None:
    gpu_only = {**images, "cuda-only": Image(id="cuda-only", display_name="CUDA", image="x:1", needs_gpu=True)}
    example_data["profiles"][0]["image"] = "cuda-only"
    problem = only_problem(example_data, gpu_only)
    assert problem.path == "profiles[cpu-small].image"
    assert "needs a GPU" in problem.message


def test_user_in_a_tenant_that_does_not_exist(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["users"]["bob"] = ["snu-ai", "nova-lab"]
    problem = only_problem(example_data, images)
    assert problem.path == "users.bob[1]"
    assert problem.message == "user 'bob' is put in tenant 'nova-lab', which does not exist; did you mean 'nova-labs'?"


def test_tenant_naming_an_unknown_profile(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][1]["profiles"].append("h100-x8")
    problem = only_problem(example_data, images)
    assert problem.path == "tenants[nova-labs].profiles[3]"
    assert problem.message.startswith("profile 'h100-x8' is not declared under profiles (declared: cpu-small, ")


def test_bad_tenant_kind(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["kind"] = "government"
    found = {p.path: p.message for p in problems(example_data, images)}
    assert found["tenants[snu-ai].kind"] == "'government' is not a tenant kind; use one of startup, university, company"


def test_bad_tenant_kind_is_the_only_problem_reported(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["kind"] = "government"
    # users.alice names snu-ai, which exists in the file; only the kind is wrong
    assert [p.path for p in problems(example_data, images)] == ["tenants[snu-ai].kind"]


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - id: snu-ai\n    profiles: [cpu-small\n")
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    [problem] = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("not valid YAML: ")
    assert str(info.value).startswith(f"{path}: 1 problem; nothing was applied:")


def test_unhashable_yaml_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("? [a, b]\n: 1\n")
    with pytest.raises(ConfigError):
        load_platform(path, EXAMPLE_CATALOG)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    assert info.value.problems[0].message.startswith("cannot read the file")


def test_top_level_not_a_mapping(images: Mapping[str, Image]) -> None:
    problem = only_problem(["tenants"], images)
    assert problem.path == ""
    assert problem.message.startswith("must be a mapping with keys gpu_types, profiles, tenants, users")


def test_quota_smaller_than_a_profiles_gpu_count(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][1]["quota"]["gpus"]["H100"] = 1  # nova-labs may use h100-x2-jax
    problem = only_problem(example_data, images)
    assert problem.path == "tenants[nova-labs].profiles[2]"
    assert problem.message == (
        "profile 'h100-x2-jax' needs 2 H100 GPU(s) but the quota grants 1; raise quota.gpus.H100 or remove the profile"
    )


def test_quota_without_the_profiles_gpu_type(example_data: Data, images: Mapping[str, Image]) -> None:
    del example_data["tenants"][0]["quota"]["gpus"]["A100"]  # snu-ai may use a100-x1
    problem = only_problem(example_data, images)
    assert problem.path == "tenants[snu-ai].profiles[1]"
    assert "needs 1 A100 GPU(s) but the quota grants 0" in problem.message


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (lambda d: d["tenants"][0].update(id="SNU AI"), "tenants[0].id", "is not a valid tenant id"),
        (lambda d: d["tenants"][0].update(id="t" * 41), "tenants[0].id", "longer than 40 characters"),
        (
            lambda d: d["tenants"][0]["members"].update(users=["Alice"]),
            "tenants[snu-ai].members.users[0]",
            "not a valid username",
        ),
        (
            lambda d: d["tenants"][0]["members"].update(users=["bob", "bob"]),
            "tenants[snu-ai].members.users[1]",
            "listed twice",
        ),
        (lambda d: d["tenants"][0]["quota"].update(servers="ten"), "tenants[snu-ai].quota.servers", "without quotes"),
        (
            lambda d: d["tenants"][0]["quota"].update(memory="-1Gi"),
            "tenants[snu-ai].quota.memory",
            "cannot be negative",
        ),
        (
            lambda d: d["gpu_types"]["H100"].update(resource="gpu"),
            "gpu_types.H100.resource",
            "'gpu' is not a valid extended resource name",
        ),
        (lambda d: d.update(users=["alice"]), "users", "must be a mapping of usernames to lists of tenant ids"),
    ],
)
def test_other_bad_values(
    example_data: Data, images: Mapping[str, Image], mutate: Callable[[Data], None], path: str, text: str
) -> None:
    mutate(example_data)
    found = {p.path: p.message for p in problems(example_data, images)}
    assert path in found, found
    assert text in found[path]


# ---------------------------------------------------------------------------
# all at once, nothing applied


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path, example_data: Data) -> None:
    example_data["tenants"][0]["admin"] = ["kim"]  # 1 unknown key
    example_data["profiles"][0]["memory"] = "8Gb"  # 2 unit typo
    example_data["profiles"][2]["gpu"]["count"] = 1.5  # 3 fractional GPUs
    example_data["profiles"][4]["image"] = "jaxx"  # 4 image not in catalog
    example_data["tenants"][1]["profiles"].append("h100-x8")  # 5 unknown profile
    example_data["users"]["bob"] = ["nowhere"]  # 6 tenant that does not exist
    path = write_yaml(tmp_path, example_data)

    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)

    error = info.value
    assert error.source == str(path)
    assert sorted(p.path for p in error.problems) == sorted(
        [
            "tenants[snu-ai].admin",
            "profiles[cpu-small].memory",
            "profiles[a100-x1].gpu.count",
            "profiles[h100-x2-jax].image",
            "tenants[nova-labs].profiles[3]",
            "users.bob[0]",
        ]
    )
    message = str(error)
    lines = message.splitlines()
    assert lines[0] == f"{path}: 6 problems; nothing was applied:"
    assert len(lines) == 7
    assert all(line.startswith("  - ") for line in lines[1:])
    assert "  - profiles[cpu-small].memory: '8Gb' has unit 'Gb'" in message


def test_catalog_problems_are_reported_with_the_catalog_path(tmp_path: Path) -> None:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    del catalog["images"][0]["image"]
    catalog["images"][1]["needs_gpu"] = "yes"
    catalog["images"].append(copy.deepcopy(catalog["images"][2]))
    path = write_yaml(tmp_path, catalog, "catalog.yaml")

    with pytest.raises(ConfigError) as info:
        load_platform(EXAMPLE_TENANTS, path)

    error = info.value
    assert {p.path for p in error.problems} == {"images[base].image", "images[pytorch].needs_gpu", "images[4].id"}
    assert str(error).startswith(f"{path}: {len(error.problems)} problems; nothing was applied:")
    assert "duplicate image id 'tensorflow' (first at images[2])" in str(error)


def test_datasets_are_declared_once_and_mounted_by_tenants(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["datasets"] = {"imagenet": {"claim": "open-imagenet", "mount_path": "/datasets/imagenet"}}
    example_data["tenants"][0]["datasets"] = ["imagenet"]
    config = parse_platform(example_data, images)
    assert config.tenants["snu-ai"].datasets == ("imagenet",)
    assert config.datasets["imagenet"].claim == "open-imagenet"
    assert config.tenants["nova-labs"].datasets == ()


def test_tenant_naming_an_undeclared_dataset(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["datasets"] = ["imagenet"]
    problem = only_problem(example_data, images)
    assert problem.path == "tenants[snu-ai].datasets[0]"
    assert problem.message == "data set 'imagenet' is not declared under datasets (declared: none)"


def test_dataset_mounted_over_the_home_is_refused(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["datasets"] = {"coco": {"claim": "open-coco", "mount_path": "/home/jovyan"}}
    problem = only_problem(example_data, images)
    assert problem.path == "datasets.coco.mount_path"
    assert "would hide part of the workspace" in problem.message


# ---------------------------------------------------------------------------
# culling: idle timeouts and budget enforcement


def test_culling_defaults_when_the_file_says_nothing(example_data: Data, images: Mapping[str, Image]) -> None:
    for tenant in example_data["tenants"]:
        tenant.pop("culling", None)
    example_data.pop("culling", None)
    config = parse_platform(example_data, images)
    assert config.culling == Culling(timedelta(hours=1), timedelta(hours=8), timedelta(minutes=5))
    snu = config.tenants["snu-ai"].culling
    assert (snu.gpu_idle_timeout, snu.cpu_idle_timeout, snu.stop_over_budget) == (None, None, False)
    assert snu.over_budget_grace == timedelta(minutes=15)
    assert config.profiles["h100-x1"].idle_timeout is None


def test_culling_settings_are_read_at_every_level(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data["culling"] = {"gpu_idle_timeout": "30m", "cpu_idle_timeout": 7200, "interval": "90s"}
    example_data["profiles"][5]["idle_timeout"] = "1h30m"  # h100-x4
    example_data["profiles"][0]["idle_timeout"] = 0  # cpu-small: never
    example_data["tenants"][1]["culling"] = {
        "gpu_idle_timeout": "2h",
        "stop_over_budget": True,
        "over_budget_grace": "5m",
    }
    config = parse_platform(example_data, images)
    assert config.culling == Culling(timedelta(minutes=30), timedelta(hours=2), timedelta(seconds=90))
    assert config.profiles["h100-x4"].idle_timeout == timedelta(minutes=90)
    assert config.profiles["cpu-small"].idle_timeout == timedelta(0)
    assert config.tenants["nova-labs"].culling == TenantCulling(
        gpu_idle_timeout=timedelta(hours=2), stop_over_budget=True, over_budget_grace=timedelta(minutes=5)
    )
    assert config.tenants["snu-ai"].culling == TenantCulling()


def test_gpu_idle_defaults_and_overrides_at_every_level(example_data: Data, images: Mapping[str, Image]) -> None:
    example_data.pop("culling", None)
    assert parse_platform(copy.deepcopy(example_data), images).culling.gpu_idle == PLATFORM_GPU_IDLE
    assert PLATFORM_GPU_IDLE == GpuIdle(Decimal(5), timedelta(hours=2), timedelta(minutes=30))
    example_data["culling"] = {"gpu_idle": {"threshold": "10%", "after": "1h"}}
    example_data["profiles"][3]["gpu_idle"] = {"threshold": 12.5}  # h100-x1
    example_data["tenants"][1]["culling"] = {"gpu_idle": {"after": 0, "warn_before": "5m"}}
    config = parse_platform(example_data, images)
    # a platform key left out keeps its default; tenants and profiles hold only what they say
    assert config.culling.gpu_idle == GpuIdle(Decimal(10), timedelta(hours=1), timedelta(minutes=30))
    assert config.profiles["h100-x1"].gpu_idle == GpuIdle(threshold=Decimal("12.5"))
    assert config.profiles["h100-x4"].gpu_idle == GpuIdle()
    assert config.tenants["nova-labs"].culling.gpu_idle == GpuIdle(after=timedelta(0), warn_before=timedelta(minutes=5))
    assert config.tenants["snu-ai"].culling.gpu_idle == GpuIdle()


@pytest.mark.parametrize(
    ("value", "percent"),
    [(5, "5"), ("5%", "5"), ("12.5%", "12.5"), (12.5, "12.5"), (0, "0"), ("100%", "100"), (" 7% ", "7")],
)
def test_percentages(value: Any, percent: str) -> None:
    assert parse_percent(value) == Decimal(percent)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (101, "more than 100%"),
        (-1, "cannot be negative"),
        ("x%", "not the string 'x%'"),
        (True, "not True"),
        ("nan", "not the string 'nan'"),
    ],
)
def test_bad_percentages(value: Any, words: str) -> None:
    with pytest.raises(PercentError) as info:
        parse_percent(value)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400), (" 1h 30m ", 5400), ("2d", 172800),
     ("3600", 3600), (0, 0), ("0s", 0), (60.0, 60)],
)  # fmt: skip
def test_durations(value: Any, seconds: int) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1, "cannot be negative (-1); 0 means never"),
        ("-5m", "cannot be negative ('-5m'); 0 means never"),
        ("1.5h", "must be whole units, such as 90m rather than 1.5h"),
        (1.5, "must be whole seconds"),
        ("soon", "must be a duration such as 90s, 30m, 1h or 1h30m, or whole seconds"),
        ("30m1h", "units d, h, m, s in that order"),
        ("500ms", "not the string '500ms'"),
        ("", "not the string ''"),
        (True, "not True"),
        ([60], "not a list"),
    ],
)
def test_bad_durations(value: Any, words: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (
            lambda d: d.update(culling={"gpu_idle_timout": "1h"}),
            "culling.gpu_idle_timout",
            "did you mean 'gpu_idle_timeout'?",
        ),
        # GPU-idle culling (issue 18): a mapping of a percentage and two durations, at every level
        (
            lambda d: d.update(culling={"gpu_idle": "1h"}),
            "culling.gpu_idle",
            "must be a mapping with keys threshold, after, warn_before, not the string '1h'",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"threshold": 150}}),
            "culling.gpu_idle.threshold",
            "150 is more than 100%; GPU utilization goes from 0 to 100%",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"threshold": "150%"}}),
            "culling.gpu_idle.threshold",
            "'150%' is more than 100%",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"threshold": -5}}),
            "culling.gpu_idle.threshold",
            "cannot be negative (-5)",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"threshold": "5 %"}}),
            "culling.gpu_idle.threshold",
            "must be a percentage written as 5% or 12.5% (no space), or a number; not the string '5 %'",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"threshold": "five"}}),
            "culling.gpu_idle.threshold",
            "must be a percentage from 0 to 100, such as 5% or 12.5%, not the string 'five'",
        ),
        (
            lambda d: d.update(culling={"gpu_idle": {"treshold": "5%"}}),
            "culling.gpu_idle.treshold",
            "unknown key; did you mean 'threshold'?",
        ),
        (
            lambda d: d["tenants"][1].update(culling={"gpu_idle": {"after": "2 hours"}}),
            "tenants[nova-labs].culling.gpu_idle.after",
            "'2 hours'",
        ),
        (
            lambda d: d["profiles"][3].update(gpu_idle={"warn_before": -60}),
            "profiles[h100-x1].gpu_idle.warn_before",
            "cannot be negative (-60)",
        ),
        (lambda d: d.update(culling={"gpu_idle_timeout": "-1h"}), "culling.gpu_idle_timeout", "cannot be negative"),
        (lambda d: d.update(culling={"cpu_idle_timeout": "8 hours"}), "culling.cpu_idle_timeout", "'8 hours'"),
        (lambda d: d.update(culling={"interval": 0}), "culling.interval", "must be at least 1s"),
        (lambda d: d.update(culling="1h"), "culling", "must be a mapping with keys gpu_idle_timeout"),
        (
            lambda d: d["profiles"][3].update(idle_timeout="20 min"),
            "profiles[h100-x1].idle_timeout",
            "must be a duration",
        ),
        (
            lambda d: d["tenants"][1].update(culling={"stop_over_budget": "yes"}),
            "tenants[nova-labs].culling.stop_over_budget",
            "must be true or false, not the string 'yes'",
        ),
        (
            lambda d: d["tenants"][1].update(culling={"over_budget_grace": -60}),
            "tenants[nova-labs].culling.over_budget_grace",
            "cannot be negative (-60)",
        ),
        (
            lambda d: d["tenants"][1].update(culling={"interval": "1m"}),
            "tenants[nova-labs].culling.interval",
            "unknown key; known keys: gpu_idle_timeout, cpu_idle_timeout, stop_over_budget, over_budget_grace, gpu_idle",
        ),
    ],
)
def test_bad_culling_settings(
    example_data: Data, images: Mapping[str, Image], mutate: Callable[[Data], None], path: str, text: str
) -> None:
    mutate(example_data)
    problem = only_problem(example_data, images)
    assert problem.path == path
    assert text in problem.message


def test_every_culling_problem_is_reported_at_once(tmp_path: Path, example_data: Data) -> None:
    example_data["culling"] = {"gpu_idle_timeout": "an hour", "interval": -5}
    example_data["profiles"][0]["idle_timeout"] = "1.5h"
    example_data["tenants"][0]["culling"] = {"stop_over_budget": 1, "over_budget_grace": "15 mins"}
    with pytest.raises(ConfigError) as info:
        load_platform(write_yaml(tmp_path, example_data), EXAMPLE_CATALOG)
    assert {p.path for p in info.value.problems} == {
        "culling.gpu_idle_timeout",
        "culling.interval",
        "profiles[cpu-small].idle_timeout",
        "tenants[snu-ai].culling.stop_over_budget",
        "tenants[snu-ai].culling.over_budget_grace",
    }
