"""Finds sentences for people that bypass the catalogs: an English sentence written as a plain
string (or f-string) in a module that speaks to people, not inside ``_()``, ``N_()`` or
``ngettext()``. The unit tier fails on any it finds (``python -m i18n.bypass`` lists them).

Not sentences for people, and so not flagged: docstrings; log records (``log.info(...)``: for the
operator, in English); ``help=`` and ``description=`` of settings and command-line options (the
operator's documentation); strings of fewer than three words; lines that say why with a
``# i18n: <why>`` comment (a protocol value, a machine-readable field); and modules for the
operator, which say so with a ``# i18n: operator: <why>`` comment in their first 30 lines.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from .catalogs import DOMAIN_SOURCES, REPO

# modules that speak to the operator (config and start-up errors, test beds), not to the platform's people
OPERATOR_MODULES = frozenset(
    {
        "quotas/loader.py",  # tenants.yaml errors: the operator's file
        "quotas/tenants_schema.py",
        "quotas/snapshot.py",
        "quotas/paths.py",
        "quotas/migrations",
        "quotas/service/openapi.py",  # the API's reference documentation (English, like its field names)
        "sshgateway/workspace.py",  # runs inside the workspace image; logs for the operator
        "sshgateway/workspace_keys.py",  # also in the image: its errors are start-up errors for the operator
        "services/lifecycle.py",
        "hub_config/intake.py",
        "i18n",
    }
)
TRANSLATING_CALLS = frozenset({"_", "N_", "ngettext", "gettext", "Text"})
LOG_NAMES = frozenset({"log", "logger", "app_log", "gen_log", "access_log", "logging", "_log", "LOG"})
LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
DOC_KEYWORDS = frozenset({"help", "description", "epilog", "metavar", "usage"})
WORDS = re.compile(r"[A-Za-z]{2,}")
MIN_WORDS = 3
PRAGMA = "# i18n:"


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_log_call(node: ast.Call) -> bool:
    func = node.func
    if not isinstance(func, ast.Attribute) or func.attr not in LOG_METHODS:
        return False
    owner = func.value
    while isinstance(owner, ast.Attribute):
        if owner.attr in LOG_NAMES:
            return True
        owner = owner.value
    return isinstance(owner, ast.Name) and owner.id in LOG_NAMES


def _text_of(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else " x " for v in node.values
        )
    return ""


class _Finder(ast.NodeVisitor):
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.found: list[tuple[int, str]] = []
        self.skip: set[int] = set()  # ids of nodes not to look into

    def _skip_tree(self, node: ast.AST) -> None:
        for sub in ast.walk(node):
            self.skip.add(id(sub))

    def visit_Call(self, node: ast.Call) -> None:
        if _call_name(node) in TRANSLATING_CALLS or _is_log_call(node):
            for arg in node.args:
                self._skip_tree(arg) if _call_name(node) != "Text" or arg is node.args[0] else None
            if _is_log_call(node):
                self._skip_tree(node)
        for kw in node.keywords:
            if kw.arg in DOC_KEYWORDS:
                self._skip_tree(kw.value)
        self.generic_visit(node)

    def _docstring(self, node: ast.AST) -> None:
        body = getattr(node, "body", None)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self._skip_tree(body[0])

    def visit_Module(self, node: ast.Module) -> None:
        self._docstring(node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._docstring(node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._docstring(node)
        self.generic_visit(node)

    def _check(self, node: ast.AST) -> None:
        if id(node) in self.skip:
            return
        text = _text_of(node)
        if len(WORDS.findall(text)) < MIN_WORDS or " " not in text.strip():
            return
        lineno = getattr(node, "lineno", 0)
        end = getattr(node, "end_lineno", lineno) or lineno
        if any(PRAGMA in self.lines[i - 1] for i in range(lineno, end + 1) if 0 < i <= len(self.lines)):
            return
        self.found.append((lineno, text.strip()[:100]))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._check(node)
        self._skip_tree(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._check(node)


def _operator(relative: str) -> bool:
    return any(relative == m or relative.startswith(m + "/") for m in OPERATOR_MODULES)


def people_modules() -> Iterator[Path]:
    """The Python modules whose strings people read."""
    for folders in DOMAIN_SOURCES.values():
        for folder in folders:
            for path in sorted((REPO / folder).rglob("*.py")):
                relative = path.relative_to(REPO).as_posix()
                if not _operator(relative):
                    yield path


def bypasses(paths: list[Path] | None = None) -> Iterator[str]:
    """``path:line: text`` of each sentence for people written outside the catalogs."""
    for path in paths if paths is not None else list(people_modules()):
        source = path.read_text(encoding="utf-8")
        if any(line.startswith("# i18n: operator:") for line in source.splitlines()[:30]):
            continue
        finder = _Finder(source.splitlines())
        finder.visit(ast.parse(source, str(path)))
        relative = path.resolve().relative_to(REPO).as_posix()
        for lineno, text in finder.found:
            yield f"{relative}:{lineno}: {text!r}"


if __name__ == "__main__":
    chosen = [Path(p).resolve() for p in sys.argv[1:]] or None
    found = list(bypasses(chosen))
    print("\n".join(found))
    print(f"i18n.bypass: {len(found)} sentence(s) outside the catalogs", file=sys.stderr)
    sys.exit(1 if found else 0)
