"""Whose fault a workspace that did not start is: the person's own, or the platform's.

JupyterHub exits after ``Spawner.consecutive_failure_limit`` failed spawns in a row (z2jh relies
on that to restart a hub that cannot spawn anything). A failure that only one person's own files
cause (a ``~/.jupyter/jupyter_server_config.py`` that exits, a home that is not a directory) must
not count toward that exit, or one member could stop the hub for everyone. The rule is
:func:`judge`, a pure function of what the spawner saw; the spawner raises what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from i18n import Text, _

# What a person's server reads from their own files at start (jupyter_server's config search path:
# the working directory, which is the home, then ~/.jupyter), relative to the home. Files the
# server writes itself (~/.jupyter/lab, ~/.local/share/jupyter/runtime) are not settings.
OWN_SETTINGS = tuple(
    f"{folder}{name}{suffix}"
    for folder in ("", ".jupyter/")
    for name in ("jupyter_server_config", "jupyter_notebook_config")
    for suffix in (".py", ".json", ".d")
)

STAGES = ("home", "launch", "exited", "silent")


@dataclass(frozen=True)
class StartFailure:
    """What the spawner saw of a workspace that did not start.

    ``stage``: ``home`` (the person's home is not a usable directory), ``launch`` (no process
    could be started), ``exited`` (the process started and exited before it answered, with
    ``exit_code``) or ``silent`` (it ran but did not answer within ``timeout`` seconds).
    ``own_settings``: the files of :data:`OWN_SETTINGS` found in the home. ``detail``: the
    system's words (``Not a directory``) or the platform's (an :class:`i18n.Text`), for the message.
    """

    stage: str
    server: str = ""
    exit_code: int | None = None
    own_settings: tuple[str, ...] = ()
    detail: str = ""
    timeout: float = 0


@dataclass(frozen=True)
class Verdict:
    """``own``: the person's own failure, which must not count toward the hub's exit; ``message``:
    what the person is told (said in their language by the spawner)."""

    own: bool
    message: Text


def own_settings_in(present: Iterable[str]) -> tuple[str, ...]:
    """The entries of ``present`` (paths relative to the home) that are :data:`OWN_SETTINGS`, sorted."""
    wanted = set(OWN_SETTINGS)
    return tuple(sorted(str(PurePosixPath(p)) for p in present if str(PurePosixPath(p)) in wanted))


def judge(failure: StartFailure) -> Verdict:
    """Whose fault ``failure`` is, and what to tell the person.

    - ``home``: theirs (only their home is broken; nobody else's server is affected);
    - ``launch``: the platform's (the hub cannot start a process at all);
    - ``exited`` or ``silent`` with own settings: theirs (their settings are the likely cause);
    - ``exited`` or ``silent`` without: the platform's (the image or the platform's config).
    """
    if failure.stage not in STAGES:
        raise ValueError(f"unknown stage {failure.stage!r}; one of {', '.join(STAGES)}")  # i18n: a bug of the caller
    what = _("Your server {server}", server=repr(failure.server)) if failure.server else _("Your server")
    settings = ", ".join(f"~/{p}" for p in failure.own_settings)
    if failure.stage == "home":
        return Verdict(
            True,
            _(
                "{what} cannot start: your home folder cannot be used ({detail}). Nothing else is wrong: ask a"
                " platform admin to make it a directory of yours again.",
                what=what,
                detail=failure.detail or _("not a directory"),
            ),
        )
    if failure.stage == "launch":
        return Verdict(
            False,
            _(
                "{what} could not be started: the platform failed to start its process ({detail}). This is not"
                " caused by your files; the platform admins see it in the hub's log. Try again later.",
                what=what,
                detail=failure.detail,
            ),
        )
    if failure.stage == "exited":
        happened = _(
            "{what} started but exited (status {status}) before it answered.", what=what, status=failure.exit_code
        )
    else:
        happened = _(
            "{what} started but did not answer within {seconds} seconds, and was stopped.",
            what=what,
            seconds=f"{failure.timeout:g}",
        )
    if failure.own_settings:
        return Verdict(
            True,
            _(
                "{happened} It reads your own settings at start ({settings}); a mistake there is the likely cause."
                " Fix or move aside those files (a platform admin can do it for you) and start again.",
                happened=happened,
                settings=settings,
            ),
        )
    return Verdict(
        False,
        _(
            "{happened} Your home has no settings of yours that the server reads, so the platform's image or"
            " configuration is the likely cause; the platform admins see it in the hub's log. Try again later.",
            happened=happened,
        ),
    )


class FailureStreak:
    """The people whose spawns failed since the hub last started any server.

    JupyterHub counts failures in a row toward ``consecutive_failure_limit`` whoever has them. So
    that no one person can make the hub exit, even with failures that look like the platform's (a
    name that collides with an account, a pod that never answers), only each person's first failure
    of a streak counts; any successful start ends the streak (as it resets JupyterHub's count). A hub
    that cannot start anything still exits once that many different people have tried.
    """

    def __init__(self) -> None:
        self._people: set[str] = set()

    def counts(self, person: str) -> bool:
        """Whether this failure of ``person`` counts (their first since the last success)."""
        if person in self._people:
            return False
        self._people.add(person)
        return True

    def clear(self) -> None:
        self._people.clear()


STREAK = FailureStreak()  # one per hub process, shared by its spawners
