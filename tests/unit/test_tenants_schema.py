"""quotas/tenants.schema.json: the one structure of tenants.yaml. The hub's loader validates with
it and the chart's values.schema.json includes it, so both accept and refuse the same files; the
loader adds only the cross-reference checks, and turns schema errors into the key path and words
of people."""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from quotas import tenants_schema
from quotas.loader import ConfigError, Problem, load_platform, parse_platform
from quotas.model import TENANT_KINDS, Image
from tests.platform_variants import ACCEPTED, CROSS_REFERENCES, REFUSED, Variant

from .conftest import EXAMPLE_CATALOG, REPO, top_level_packages

CHART = REPO / "helm" / "aidc-hub"
CHART_SCHEMA = json.loads((CHART / "values.schema.json").read_text())
CHART_DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
TENANTS_SCHEMA = json.loads((REPO / "quotas" / "tenants.schema.json").read_text())


def hub_problems(data: Any, images: Mapping[str, Image]) -> list[Problem]:
    try:
        parse_platform(data, images)
    except ConfigError as e:
        return e.problems
    return []


def chart_errors(platform: Any) -> list[str]:
    """What the chart's schema says of the chart's default values with this ``platform:``, read by
    a plain jsonschema validator (as Helm reads values.schema.json), not by the loader's."""
    validator = jsonschema.Draft7Validator(CHART_SCHEMA)
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors({**CHART_DEFAULTS, "platform": platform})
    ]


def _ids(variants: list[Variant]) -> list[str]:
    return [v.name for v in variants]


@pytest.mark.parametrize("variant", ACCEPTED, ids=_ids(ACCEPTED))
def test_the_chart_and_the_hub_accept(variant: Variant, example_data: Any, images: Mapping[str, Image]) -> None:
    data = variant.apply(example_data)
    assert hub_problems(data, images) == []
    assert chart_errors(data) == []


@pytest.mark.parametrize("variant", REFUSED, ids=_ids(REFUSED))
def test_the_chart_and_the_hub_refuse(variant: Variant, example_data: Any, images: Mapping[str, Image]) -> None:
    data = variant.apply(example_data)
    found = hub_problems(data, images)
    assert any(variant.path in p.path and variant.words in p.message for p in found), [str(p) for p in found]
    assert chart_errors(data) != []


@pytest.mark.parametrize("variant", CROSS_REFERENCES, ids=_ids(CROSS_REFERENCES))
def test_cross_references_are_the_hubs_checks(variant: Variant, example_data: Any, images: Mapping[str, Image]) -> None:
    data = variant.apply(example_data)
    found = hub_problems(data, images)
    assert any(variant.path in p.path and variant.words in p.message for p in found), [str(p) for p in found]
    assert chart_errors(data) == []  # a schema cannot see them; the chart says the hub checks them


def test_the_variants_also_hold_for_the_charts_own_platform(images: Mapping[str, Image]) -> None:
    # the chart tier runs a few of them through real helm, from the chart's defaults
    base = CHART_DEFAULTS["platform"]
    for variant in ACCEPTED:
        assert hub_problems(variant.apply(base), images) == [], variant.name
    for variant in REFUSED:
        assert hub_problems(variant.apply(base), images) != [], variant.name


def test_the_chart_schema_holds_the_tenants_schema_as_platform() -> None:
    platform = CHART_SCHEMA["properties"]["platform"]
    assert platform["required"] == TENANTS_SCHEMA["required"]
    assert platform["properties"]["tenants"]["items"]["properties"]["quota"]["properties"]["cpu"] == {
        **TENANTS_SCHEMA["properties"]["tenants"]["items"]["properties"]["quota"]["properties"]["cpu"],
        "allOf": [{"$ref": "#/definitions/tenants.quantity"}],
    }
    for name, definition in TENANTS_SCHEMA["definitions"].items():
        # a definition may refer to another (gpu_idle to duration): in the chart, by its new name
        inlined = json.loads(json.dumps(definition).replace('"#/definitions/', '"#/definitions/tenants.'))
        assert CHART_SCHEMA["definitions"][f"tenants.{name}"] == inlined


def test_the_tenant_kinds_are_the_models() -> None:
    kind = TENANTS_SCHEMA["properties"]["tenants"]["items"]["properties"]["kind"]
    assert tuple(kind["enum"]) == TENANT_KINDS


def test_the_schema_ships_with_the_package(tmp_path: Path) -> None:
    assert (importlib.resources.files("quotas") / "tenants.schema.json").is_file()
    # what the hub image copies and installs (images/hub/Dockerfile), built outside the checkout
    source = tmp_path / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        (source / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in top_level_packages():
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("aidc_hub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "quotas/tenants.schema.json" in archive.namelist()


# ---------------------------------------------------------------------------------------------
# how schema errors read


def messages(data: Any, images: Mapping[str, Image]) -> dict[str, str]:
    return {p.path: p.message for p in hub_problems(data, images)}


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d.update(gpu_types=None), "gpu_types", "is required"),
        (lambda d: d.pop("tenants"), "tenants", "is required"),
        (
            lambda d: d["tenants"][0]["quota"]["gpus"].update(H100="4"),
            "tenants[snu-ai].quota.gpus.H100",
            "a GPU count must be a whole number written without quotes, not the string '4'",
        ),
        (
            lambda d: d["profiles"].append(None),
            "profiles[6]",
            "is empty; write a profile or remove the line",
        ),
        (
            lambda d: d["profiles"].append("cpu-big"),
            "profiles[6]",
            "must be a mapping with keys id, display_name, cpu, memory, image, gpu, description, idle_timeout,"
            " gpu_idle, not the string 'cpu-big'",
        ),
        (
            lambda d: d["gpu_types"].update(B200=None),
            "gpu_types.B200",
            "is empty; write {} to take the defaults (resource nvidia.com/gpu)",
        ),
        (
            lambda d: d["users"].update(Alice=["snu-ai"]),
            "users.Alice",
            "'Alice' is not a valid username (lower case, as JupyterHub stores it)",
        ),
        (lambda d: d["users"].update(bob=None), "users.bob", "is empty; write a list of tenant ids, or remove the key"),
        (
            lambda d: d["tenants"][0]["quota"].update(cpu=None),
            "tenants[snu-ai].quota.cpu",
            "is empty; write a quantity, or leave the key out",
        ),
        (
            lambda d: d["tenants"][0]["quota"].update(memory="64 Gi"),
            "tenants[snu-ai].quota.memory",
            '\'64 Gi\' is not a quantity (examples: "8Gi", "2", "500m")',
        ),
        (
            lambda d: d["profiles"][0].update(idle_timeout="1H"),
            "profiles[cpu-small].idle_timeout",
            "must be whole seconds or a duration in lower case without spaces, such as 1h30m; not the string '1H'",
        ),
        (
            lambda d: d["tenants"][0].update(id="snu-ai\n"),
            "tenants[0].id",
            "'snu-ai\\n' is not a valid tenant id (lower-case letters, digits and '-')",
        ),
        (
            lambda d: d["tenants"][0]["quota"].update(gpu_hours_per_month=float("nan")),
            "tenants[snu-ai].quota.gpu_hours_per_month",
            "nan is not a number a file can hold; write a number",
        ),
        (
            lambda d: d["tenants"][0].update(display_name="x" * 500, kind="y" * 500),
            "tenants[snu-ai].kind",
            f"{repr('y' * 500)[:60]}… (502 characters) is not a tenant kind; use one of startup, university, company",
        ),
    ],
)
def test_schema_messages(example_data: Any, images: Mapping[str, Image], change: Any, path: str, message: str) -> None:
    change(example_data)
    found = messages(example_data, images)
    assert found.get(path) == message, found


def test_a_problem_inside_a_refused_key_is_not_reported_again(example_data: Any, images: Mapping[str, Image]) -> None:
    example_data["gpu_types"]["B 200"] = {"resource": "gpu", "bogus": 1}
    assert messages(example_data, images) == {
        "gpu_types.B 200": "'B 200' is not a valid GPU type name (letters, digits, '.', '-', '_')"
    }


def test_gpu_hours_are_read_exactly(example_data: Any, images: Mapping[str, Image]) -> None:
    for written, exact in [(12.5, "12.5"), ("12.5", "12.5"), (0.1, "0.1"), (2000, "2000")]:
        example_data["tenants"][0]["quota"]["gpu_hours_per_month"] = written
        config = parse_platform(example_data, images)
        assert str(config.tenants["snu-ai"].quota.gpu_hours_per_month) == exact


def test_file_with_a_key_that_is_not_a_name(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("gpu_types: {}\nprofiles: []\ntenants: []\n1: one\n")
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    assert [str(p) for p in info.value.problems] == ["1: the key int 1 must be a name; quote it"]


# ---------------------------------------------------------------------------------------------
# hostile input: the work is bounded


def _timed_problems(tmp_path: Path, text: str) -> tuple[list[str], float]:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_platform(path, EXAMPLE_CATALOG)
    return [str(p) for p in info.value.problems], time.monotonic() - start


def test_billion_laughs_stops_early(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["gpu_types: {}", "profiles: []", "tenants: [*a8]"]
    found, seconds = _timed_problems(tmp_path, "\n".join(lines) + "\n")
    assert found == [
        f"a4[7] (line 5, column 45): the file has more than {tenants_schema.MAX_VALUES:,} values (after YAML"
        " aliases are expanded); is it the right file?"
    ]
    assert seconds < 10


def test_too_many_values_in_data_not_read_from_a_file(example_data: Any, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["admins"] = ["kim"] * tenants_schema.MAX_VALUES
    found = hub_problems(example_data, images)
    assert [str(p) for p in found] == [
        f"has more than {tenants_schema.MAX_VALUES:,} values (after YAML aliases are expanded); is it the right file?"
    ]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    depth = tenants_schema.MAX_DEPTH
    found, _ = _timed_problems(tmp_path, "tenants: " + "[" * 100 + "]" * 100 + "\n")
    assert found == [
        f"tenants{'[0]' * (depth - 1)} (line 1, column {depth + 9}): is nested more than {depth} levels deep"
    ]
    found, _ = _timed_problems(tmp_path, "".join(f"{' ' * i}a{i}:\n" for i in range(100)) + "  x\n")
    assert found[0].startswith("a0.a1.a2.")
    assert found[0].endswith(f"is nested more than {depth} levels deep")
    limit = sys.getrecursionlimit()
    found, _ = _timed_problems(tmp_path, "tenants: " + "[" * limit * 2 + "]" * limit * 2 + "\n")
    assert len(found) == 1 and found[0].endswith(f"is nested more than {depth} levels deep")
    # in data not read from a file, the schema's check says where
    data: Any = {"gpu_types": {}, "profiles": [], "tenants": []}
    for _ in range(100):
        data = [data]
    assert str(tenants_schema.check({"gpu_types": {}, "profiles": [], "tenants": data}).problems[0]).endswith(
        f"is nested more than {depth} levels deep"
    )


def test_a_huge_file_is_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("quotas.loader.MAX_FILE_BYTES", 1000)
    found, _ = _timed_problems(tmp_path, "# " + "x" * 2000 + "\n")
    assert found == ["is larger than 1,000 bytes; is it the right file?"]


def test_many_problems_are_capped(example_data: Any, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["admins"] = ["Kim"] * 10_000
    found = hub_problems(example_data, images)
    assert len(found) == tenants_schema.MAX_PROBLEMS + 1
    assert found[-1].message == f"(stopped after {tenants_schema.MAX_PROBLEMS} problems; fix these first)"


def test_a_long_list_of_unsortable_duplicates_is_quick(example_data: Any, images: Mapping[str, Image]) -> None:
    example_data["tenants"][0]["admins"] = [{"name": str(i)} for i in range(20_000)]
    start = time.monotonic()
    assert hub_problems(example_data, images)
    assert time.monotonic() - start < 10
