"""The lock tool (requirements/lock, a script without a .py suffix) as a module for the tests."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "requirements" / "lock"


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("aidc_requirements_lock", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


LOCK = load()


def image_lock(ident: str) -> Path:
    """The lock an image installs: the hub's is requirements/hub.txt, a workspace image's its own."""
    return REPO / "requirements" / "hub.txt" if ident == "hub" else REPO / "images" / ident / "requirements.txt"
