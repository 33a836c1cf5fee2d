"""docs/configuration.md lists every environment variable of the project in one table, so that it
cannot drift: a variable used anywhere (code, chart, images, tests, benchmarks, other docs) that is
not a row fails here, and so does a row that no code uses any more. Its "Former variables" section
names the variables that became traits; nothing may use them again. And every setting is a trait
that documents itself: a help text with an example."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

from traitlets.config import Configurable

from .conftest import REPO, top_level_packages

DOC = REPO / "docs" / "configuration.md"
# an environment variable of ours: the prefix, then capitals, digits and underscores (not a
# trailing underscore: a prefix written in prose such as "the AIDC_X_* variables" is not one)
NAME = re.compile(r"\bAIDC_[A-Z0-9_]*[A-Z0-9]\b")
# not the project's files: environments, dependencies, state, outputs (.gitignore)
SKIP_DIRS = {".git", ".venv", "node_modules", ".aidc", "test-artifacts", "build"}
SKIP_DIR_SUFFIXES = ("_cache", "__pycache__", ".egg-info")


def _section(heading: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _rows(heading: str) -> list[str]:
    """The first cell of each row of the section's table."""
    return [
        line.split("|")[1].strip()
        for line in _section(heading).splitlines()
        if line.startswith("| `") and line.count("|") > 2
    ]


def table_variables() -> set[str]:
    names = set()
    for cell in _rows("Environment variables"):
        found = NAME.findall(cell)
        assert found, f"docs/configuration.md: the row {cell!r} names no variable"
        names.update(found)
    return names


def former_variables() -> set[str]:
    return {name for cell in _rows("Former variables") for name in NAME.findall(cell)}


def project_files() -> Iterator[Path]:
    """Every text file of the repository (the docs included), without environments and outputs."""
    for path in sorted(REPO.rglob("*")):
        dirs = path.relative_to(REPO).parts[:-1]
        if not path.is_file() or SKIP_DIRS & set(dirs) or any(d.endswith(SKIP_DIR_SUFFIXES) for d in dirs):
            continue
        yield path


def uses() -> dict[str, set[str]]:
    """Variable -> the files that name it (docs/configuration.md's former section excluded)."""
    found: dict[str, set[str]] = {}
    for path in project_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        if path == DOC:
            text = text.replace(_section("Former variables"), "")
        for name in NAME.findall(text):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_variable_in_use_is_in_the_table() -> None:
    table = table_variables()
    missing = {name: sorted(files) for name, files in uses().items() if name not in table}
    assert not missing, (
        "Environment variables used but not in the table of docs/configuration.md (add a row, or make"
        f" the setting a trait): {missing}"
    )


def test_every_row_is_read_or_set_by_code() -> None:
    code_uses = {name: files for name, files in uses().items() if any(not file.endswith(".md") for file in files)}
    unused = sorted(table_variables() - set(code_uses))
    assert not unused, f"Rows of docs/configuration.md that no code uses any more (remove them): {unused}"


def test_former_variables_are_not_variables_any_more() -> None:
    former = former_variables()
    assert former, "docs/configuration.md has no 'Former variables' table"
    assert not former & table_variables()
    # test_every_variable_in_use_is_in_the_table already fails for any use of them outside that section


PACKAGES = top_level_packages()
# a help text's example: "e.g. 50Gi", "for example ``H100:4``", "such as ..."
EXAMPLE = re.compile(r"e\.g\.|for example|such as|``")


def our_configurables() -> Iterator[type[Configurable]]:
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            # __main__ runs the program; jupyterhub_config is a config file; migrations configure nothing
            if info.name.endswith(("__main__", "jupyterhub_config")) or ".migrations" in info.name:
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Configurable) and cls.__module__ == module.__name__:
                    yield cls


def test_every_setting_is_a_trait_with_help_and_an_example() -> None:
    classes = list(our_configurables())
    assert {"SSHGateway", "QuotasService", "TenantKubeSpawner", "OIDCAuthenticator"} <= {c.__name__ for c in classes}
    undocumented = [
        f"{cls.__module__}.{cls.__name__}.{name}"
        for cls in classes
        for name, trait in cls.class_own_traits(config=True).items()
        if not EXAMPLE.search(trait.help or "")
    ]
    assert not undocumented, f"Settings whose help= has no example (e.g. ...): {undocumented}"
