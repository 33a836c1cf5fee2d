"""Variants of a tenants.yaml, shared by the unit tier (the hub's loader and the chart's
values.schema.json through jsonschema) and the chart tier (real `helm template`): the two must
accept and refuse the same files.

Each variant changes a valid platform config: the example hub_config/tenants.yaml in the unit
tier, the chart's default `platform:` in the chart tier. So they touch only what both have:
``profiles[0]`` (a CPU profile), ``tenants[0]`` (a tenant with a quota) and top-level sections.
They stay inside lists or change leaves, so Helm's merge of a values file with the chart's
defaults (maps are merged, lists replaced) leaves them as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Data = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    name: str
    change: Callable[[Data], None]
    path: str = ""  # refused: the key path the hub names ("" = accepted)
    words: str = ""  # refused: words of the hub's message

    def apply(self, data: Data) -> Data:
        changed = copy.deepcopy(data)
        self.change(changed)
        return changed


def _profile(**values: Any) -> Callable[[Data], None]:
    return lambda d: d["profiles"][0].update(values)


def _tenant(**values: Any) -> Callable[[Data], None]:
    return lambda d: d["tenants"][0].update(values)


def _quota(**values: Any) -> Callable[[Data], None]:
    return lambda d: d["tenants"][0]["quota"].update(values)


def _drop_display_name(d: Data) -> None:
    del d["profiles"][0]["display_name"]


def _datasets(mount_path: str) -> Callable[[Data], None]:
    def change(d: Data) -> None:
        d["datasets"] = {"imagenet": {"claim": "open-imagenet", "mount_path": mount_path}}
        d["tenants"][0]["datasets"] = ["imagenet"]

    return change


# Both accept.
ACCEPTED = [
    Variant("as it is", lambda d: None),
    Variant("gpu-hours a number with a fraction", _quota(gpu_hours_per_month=12.5)),
    Variant("gpu-hours a number in quotes", _quota(gpu_hours_per_month="12.5")),
    Variant("gpu-hours zero", _quota(gpu_hours_per_month=0)),
    Variant("cpu a whole number without quotes", _profile(cpu=2)),
    Variant("memory with a fraction in quotes", _profile(memory="1.5Gi")),
    Variant("a count written 3.0", _quota(servers=3.0)),
    Variant("a tenant without profiles", _tenant(profiles=[])),
    Variant("a profile idle timeout", _profile(idle_timeout="1h30m")),
    Variant("a profile idle timeout of never", _profile(idle_timeout=0)),
    Variant("culling every 90s", lambda d: d.setdefault("culling", {}).update(interval="90s")),
    Variant(
        "a tenant's own culling",
        _tenant(culling={"gpu_idle_timeout": "2h", "cpu_idle_timeout": 0, "stop_over_budget": True}),
    ),
    Variant("oidc groups as a provider writes them", _tenant(oidc={"groups": [], "admin_groups": ["/SNU/AI Lab"]})),
    Variant("a data set", _datasets("/datasets/imagenet")),
    Variant("member groups", _tenant(members={"users": ["alice"], "groups": ["snu-staff"]})),
    Variant("a GPU type with the defaults", lambda d: d["gpu_types"].update({"B200": {}})),
    Variant("the largest sensible values", _quota(servers=100_000, cpu=10_000_000, gpu_hours_per_month=100_000_000)),
    Variant("the largest profile", _profile(cpu=1024, memory="64Ti", idle_timeout="366d")),
    Variant("sharing within a cohort", _tenant(sharing={"cohort": "universities", "borrow": {"H100": 8}, "lend": {}})),
    Variant("a queue", _tenant(queue={"max_wait": "30m", "max_length": 20})),
    Variant("no queue", _tenant(queue={"max_wait": 0})),
]

# Both refuse; the hub says where and what.
REFUSED = [
    Variant("a profile without display_name", _drop_display_name, "profiles[cpu-small].display_name", "is required"),
    Variant("an empty display_name", _profile(display_name=" "), "profiles[cpu-small].display_name", "non-empty"),
    Variant("gpu-hours with a unit", _quota(gpu_hours_per_month="2k"), "quota.gpu_hours_per_month", "no unit"),
    Variant("gpu-hours negative", _quota(gpu_hours_per_month=-1), "quota.gpu_hours_per_month", "cannot be negative"),
    Variant("gpu-hours true", _quota(gpu_hours_per_month=True), "quota.gpu_hours_per_month", "not True"),
    Variant("an unknown key", _tenant(admin=["kim"]), ".admin", "unknown key; did you mean 'admins'?"),
    Variant("memory in Gb", _profile(memory="8Gb"), "profiles[cpu-small].memory", "did you mean 'Gi'"),
    Variant("cpu a float", _profile(cpu=0.5), "profiles[cpu-small].cpu", 'write it as a string such as "0.5"'),
    Variant("servers in quotes", _quota(servers="10"), "quota.servers", "without quotes"),
    Variant("servers negative", _quota(servers=-1), "quota.servers", "a server count cannot be negative (-1)"),
    Variant(
        "a fractional GPU count",
        lambda d: d["tenants"][0]["quota"]["gpus"].update(H100=1.5),
        "quota.gpus.H100",
        "a GPU count must be a whole number; 1.5 is fractional",
    ),
    Variant(
        "a profile with 0 GPUs", lambda d: d["profiles"][1]["gpu"].update(count=0), ".gpu.count", "leave out 'gpu'"
    ),
    Variant("a tenant kind", _tenant(kind="government"), ".kind", "'government' is not a tenant kind"),
    Variant("a tenant id with a space", _tenant(id="SNU AI"), "tenants[0].id", "is not a valid tenant id"),
    Variant("a tenant id too long", _tenant(id="t" * 41), "tenants[0].id", "longer than 40 characters"),
    Variant("a username in capitals", _tenant(admins=["Kim"]), ".admins[0]", "not a valid username"),
    Variant("an admin twice", _tenant(admins=["kim", "kim"]), ".admins[1]", "'kim' is listed twice"),
    Variant("admins empty", _tenant(admins=None), ".admins", "is empty; write a list of usernames"),
    Variant("profiles empty", _tenant(profiles=None), ".profiles", "is required"),
    Variant("a fractional idle timeout", _profile(idle_timeout="1.5h"), ".idle_timeout", "whole units"),
    Variant("an idle timeout in words", _profile(idle_timeout="20 min"), ".idle_timeout", "must be a duration"),
    Variant(
        "culling never looks",
        lambda d: d.setdefault("culling", {}).update(interval="0s"),
        "culling.interval",
        "must be at least 1s",
    ),
    Variant("a data set over the home", _datasets("/home/jovyan"), "datasets.imagenet.mount_path", "would hide"),
    Variant("an oidc group with a space", _tenant(oidc={"groups": [" snu"]}), ".oidc.groups[0]", "not a valid group"),
    Variant("a GPU type name", lambda d: d["gpu_types"].update({"B 200": {}}), "gpu_types.B 200", "GPU type name"),
    Variant(
        "a GPU resource",
        lambda d: d["gpu_types"].update({"B200": {"resource": "gpu"}}),
        "gpu_types.B200.resource",
        "extended resource name",
    ),
    Variant("a description that is a number", _profile(description=5), ".description", "must be a string, not int 5"),
    Variant("a stop that is a word", _tenant(culling={"stop_over_budget": "yes"}), "stop_over_budget", "true or false"),
    # absurd values: refused with the largest sensible value
    Variant(
        "10^100 GPUs",
        lambda d: d["tenants"][0]["quota"]["gpus"].update(H100=1e100),
        "quota.gpus.H100",
        "a GPU count must be at most 100,000 (the largest sensible value), not 1e+100",
    ),
    Variant(
        "10^100 GPUs as a whole number",
        lambda d: d["tenants"][0]["quota"]["gpus"].update(H100=10**100),
        "quota.gpus.H100",
        "must be at most 100,000",
    ),
    Variant(
        "a profile with more GPUs than a node",
        lambda d: d["profiles"][1]["gpu"].update(count=65),
        ".gpu.count",
        "65 GPUs is more than any node has; a profile asks for at most 64",
    ),
    Variant("a profile with more CPUs than a node", _profile(cpu=1025), ".cpu", "a profile asks for at most 1024"),
    Variant("a million servers", _quota(servers=1_000_000), "quota.servers", "must be at most 100,000"),
    Variant(
        "gpu-hours beyond a data center",
        _quota(gpu_hours_per_month=1e12),
        ".gpu_hours_per_month",
        "at most 100,000,000",
    ),
    Variant(
        "an idle timeout of ten years", _profile(idle_timeout=315_360_000), ".idle_timeout", "longer than 366 days"
    ),
    Variant("a quantity that overflows", _quota(cpu="1e999999k"), "quota.cpu", "between 1e-30 and 1e30"),
    Variant(
        "a cohort with a space", _tenant(sharing={"cohort": "Big Labs"}), ".sharing.cohort", "not a valid cohort name"
    ),
    Variant("borrowing half a GPU", _tenant(sharing={"borrow": {"H100": 0.5}}), ".sharing.borrow.H100", "whole number"),
    Variant("a queue wait in words", _tenant(queue={"max_wait": "an hour"}), ".queue.max_wait", "must be a duration"),
    Variant("a queue of -1", _tenant(queue={"max_length": -1}), ".queue.max_length", "cannot be negative"),
    Variant("an unknown sharing key", _tenant(sharing={"lends": {}}), ".sharing.lends", "did you mean 'lend'?"),
]

# The schema cannot see these: the chart accepts them, and the hub refuses to start (run
# `aidc check-config` on the rendered file, or see the reconciler Job fail at `helm install`).
# Maxima of values written as strings are here too: Helm compares only numbers with `maximum`.
CROSS_REFERENCES = [
    Variant("more memory than a node, as a string", _profile(memory="65Ti"), ".memory", "at most 64Ti"),
    Variant("cpu beyond a data center, as a string", _quota(cpu="1e30"), "quota.cpu", "at most 10000000"),
    Variant("storage beyond a data center", _quota(storage="2Ei"), "quota.storage", "at most 1Ei"),
    Variant("an idle timeout of ten years, as a string", _profile(idle_timeout="3650d"), ".idle_timeout", "366 days"),
    Variant("a profile that does not exist", _tenant(profiles=["gpu-huge"]), ".profiles[0]", "not declared"),
    Variant("an image not in the catalog", _profile(image="pytorh"), ".image", "not in images/catalog.yaml"),
    Variant("an undeclared GPU type", _quota(gpus={"B200": 8}), ".quota.gpus.B200", "not declared under gpu_types"),
    Variant("a tenant id twice", lambda d: d["tenants"].append(copy.deepcopy(d["tenants"][0])), ".id", "duplicate"),
    Variant("a user in no tenant", lambda d: d.update(users={"bob": ["nowhere"]}), "users.bob[0]", "does not exist"),
    Variant("a data set not declared", _tenant(datasets=["imagenet"]), ".datasets[0]", "not declared"),
    Variant(
        "borrowing an undeclared type", _tenant(sharing={"borrow": {"B200": 2}}), ".sharing.borrow.B200", "not declared"
    ),
    Variant(
        "lending more than the ceiling",
        lambda d: d["tenants"][0].update(
            sharing={"lend": {t: n + 1 for t, n in d["tenants"][0]["quota"]["gpus"].items()}}
        ),
        ".sharing.lend.",
        "it can lend at most that",
    ),
    Variant(
        "an admin group among the members",
        _tenant(oidc={"groups": ["a"], "admin_groups": ["a"]}),
        ".oidc.admin_groups[0]",
        "is in groups too",
    ),
]
