"""The lock files: this environment is exactly requirements/dev.txt, every lock covers its inputs,
locks that share packages agree, and each lock resolves for its image's Python and platform.

The resolver check asks PyPI for package metadata only (uv does not download the CUDA wheels).
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from .locks import LOCK, REPO, SCRIPT

pytestmark = pytest.mark.unit
LOCKS = {lock.output: lock for lock in LOCK.locks()}
DEV = REPO / "requirements" / "dev.txt"
HUB = REPO / "requirements" / "hub.txt"
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def applicable_pins(path: Path) -> dict[str, str]:
    """The pins of a universal lock whose environment markers hold for this interpreter."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN_LINE.match(line)
        if match and (match.group(3) is None or Marker(match.group(3)).evaluate()):
            found[LOCK.canonical(match.group(1))] = match.group(2)
    return found


def setup_cfg_requirements(key: str) -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    section, _, option = key.rpartition(":")
    text = parser[section or "options"][option]
    return [Requirement(line.strip()) for line in text.splitlines() if line.strip()]


def in_file_requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_this_environment_is_exactly_the_dev_lock() -> None:
    installed = {LOCK.canonical(d.metadata["Name"]): d.version for d in distributions()}
    # pip comes with the venv itself; the package under test and the workspaces' JupyterLab
    # extension (labextension/) are installed from this checkout.
    installed = {name: v for name, v in installed.items() if name not in {"pip", "aidc-hub", "aidc-jupyterlab"}}
    locked = applicable_pins(DEV)
    missing = {name: v for name, v in locked.items() if installed.get(name) != v}
    extra = {name: v for name, v in installed.items() if name not in locked}
    assert not missing, f"locked but not installed at the locked version (run `make setup`): {missing}"
    assert not extra, f"installed but not in requirements/dev.txt: {extra}"
    assert sys.prefix != sys.base_prefix, "the tests run in the project's virtual environment"


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements/hub.txt", lambda: setup_cfg_requirements("options:install_requires")),
        ("requirements/dev.txt", lambda: setup_cfg_requirements("options.extras_require:test")),
        *[
            (f"images/{path.parent.name}/requirements.txt", lambda path=path: in_file_requirements(path))
            for path in sorted((REPO / "images").glob("*/requirements.in"))
        ],
    ],
)
def test_every_lock_satisfies_its_inputs(lock: str, requirements) -> None:  # type: ignore[no-untyped-def]
    pins = LOCK.pins(REPO / lock)
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    wanted = requirements() + ([Requirement(r) for r in build] if LOCKS[lock].build_requires else [])
    for requirement in wanted:
        name = LOCK.canonical(requirement.name)
        assert name in pins, f"{lock} has no {requirement}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
        )


def test_the_base_image_lock_covers_the_workspace_package_and_its_build() -> None:
    pyproject = tomllib.loads((REPO / "images" / "base" / "workspace" / "pyproject.toml").read_text())
    pins = LOCK.pins(REPO / "images" / "base" / "requirements.txt")
    for text in [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]:
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[LOCK.canonical(requirement.name)])


@pytest.mark.parametrize(
    ("lock", "held_to"),
    [(lock.output, constraint) for lock in LOCKS.values() for constraint in lock.constraints],
)
def test_locks_held_to_another_agree_on_every_package_both_have(lock: str, held_to: str) -> None:
    mine = LOCK.pins(REPO / lock)
    # a universal lock may pin a package once per Python version range (`; python_full_version < ...`)
    theirs: dict[str, set[str]] = {}
    for line in (REPO / held_to).read_text().splitlines():
        match = LOCK.PIN.match(line)
        if match:
            theirs.setdefault(LOCK.canonical(match.group(1)), set()).add(match.group(2))
    differ = {
        name: (mine[name], theirs[name]) for name in mine.keys() & theirs.keys() if mine[name] not in theirs[name]
    }
    assert not differ, f"{lock} and {held_to} disagree: {differ}"


def test_framework_images_keep_every_package_of_base() -> None:
    base = LOCK.pins(REPO / "images" / "base" / "requirements.txt")
    for output in LOCKS:
        if output.startswith("images/") and output != "images/base/requirements.txt":
            mine = LOCK.pins(REPO / output)
            assert {n: mine.get(n) for n in base} == base, f"{output} lacks or moves base's packages"


def test_every_lock_entry_has_hashes() -> None:
    for output in LOCKS:
        text = (REPO / output).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text)
        pinned = [e for e in entries if LOCK.PIN.match(e)]
        assert pinned, f"{output} pins nothing"
        unhashed = [e.split()[0] for e in pinned if "--hash=sha256:" not in e]
        assert not unhashed, f"{output} pins without hashes: {unhashed}"


def test_make_and_the_images_install_from_the_locks_with_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.txt" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    for ident in ("hub", "base", "pytorch", "tensorflow", "jax"):
        text = (REPO / "images" / ident / "Dockerfile").read_text()
        installs = re.findall(r"pip install ([^&\n]*)", text)
        assert installs, ident
        for arguments in installs:
            assert "--require-hashes --no-deps -r " in arguments or "--no-deps --no-build-isolation " in arguments, (
                f"images/{ident}/Dockerfile installs something not from its lock: pip install {arguments}"
            )


def test_every_lock_resolves_for_its_python_and_platform() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(LOCKS)} locks resolve as they are" in result.stdout


def test_the_resolver_check_finds_a_lock_missing_a_dependency(tmp_path: Path) -> None:
    broken = tmp_path / "hub.txt"
    text = HUB.read_text()
    # Drop tornado (jupyterhub needs it) with its hash lines.
    kept = re.sub(r"\ntornado==[^\n]*(\n\s+--hash[^\n]*)*(\n\s+#[^\n]*)*", "", text)
    assert "\ntornado==" in text and "\ntornado==" not in kept
    broken.write_text(kept)
    problems = LOCK.check(LOCK.Lock(str(broken), ("setup.cfg",), "3.12", "x86_64-manylinux_2_28"))
    assert problems and "tornado resolves to" in problems[0] and "the lock has nothing" in problems[0]


def test_the_resolver_check_finds_a_conflicting_pin(tmp_path: Path) -> None:
    broken = tmp_path / "hub.txt"
    # jupyterhub 6 needs a newer tornado than 5.0.
    broken.write_text(re.sub(r"\ntornado==[^\s\\]+", "\ntornado==5.0", HUB.read_text()))
    problems = LOCK.check(LOCK.Lock(str(broken), ("setup.cfg",), "3.12", "x86_64-manylinux_2_28"))
    assert problems and "does not resolve for Python 3.12 on x86_64-manylinux_2_28" in problems[0]
