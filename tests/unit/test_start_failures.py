"""Whose fault a workspace that did not start is (spawner/start_failures.py): a person's own
failures never count toward the hub's exit; the platform's do."""

from __future__ import annotations

import logging

import pytest
from jupyterhub.spawner import SpawnException
from tornado import web

from spawner.start_failures import OWN_SETTINGS, STREAK, FailureStreak, StartFailure, judge, own_settings_in
from spawner.tenancy import counted_failure

CONFIG = (".jupyter/jupyter_server_config.py",)


@pytest.mark.parametrize(
    ("failure", "own", "words"),
    [
        (StartFailure("home", detail="it is not a directory"), True, "your home folder cannot be used"),
        (StartFailure("home", own_settings=CONFIG), True, "ask a platform admin"),
        (StartFailure("launch", detail="No such file"), False, "the platform failed to start its process"),
        (StartFailure("launch", own_settings=CONFIG, detail="x"), False, "not caused by your files"),
        (StartFailure("exited", exit_code=3, own_settings=CONFIG), True, "~/.jupyter/jupyter_server_config.py"),
        (StartFailure("exited", exit_code=1, own_settings=("jupyter_server_config.json",)), True, "Fix or move aside"),
        (StartFailure("exited", exit_code=1), False, "the platform's image or configuration"),
        (StartFailure("silent", own_settings=CONFIG, timeout=90), True, "did not answer within 90 seconds"),
        (StartFailure("silent", timeout=90), False, "the platform admins see it"),
    ],
)
def test_judge(failure: StartFailure, own: bool, words: str) -> None:
    verdict = judge(failure)
    assert verdict.own is own
    assert words in verdict.message


def test_judge_names_the_server_and_the_exit_status() -> None:
    message = judge(StartFailure("exited", server="gpu", exit_code=3, own_settings=CONFIG)).message
    assert message.startswith("Your server 'gpu' started but exited (status 3) before it answered.")
    assert judge(StartFailure("exited", exit_code=3)).message.startswith("Your server started but exited")


def test_judge_refuses_an_unknown_stage() -> None:
    with pytest.raises(ValueError, match="unknown stage 'crashed'"):
        judge(StartFailure("crashed"))


@pytest.mark.parametrize(
    ("present", "found"),
    [
        ([], ()),
        ([".jupyter/lab/workspaces", ".local/share/jupyter/runtime", ".jupyter/migrated"], ()),
        ([".jupyter/jupyter_server_config.py", "notes.txt"], (".jupyter/jupyter_server_config.py",)),
        (
            ["jupyter_notebook_config.json", ".jupyter/jupyter_server_config.d"],
            (".jupyter/jupyter_server_config.d", "jupyter_notebook_config.json"),
        ),
    ],
)
def test_own_settings_are_the_files_the_server_reads_at_start(present: list[str], found: tuple[str, ...]) -> None:
    assert own_settings_in(present) == found
    assert set(found) <= set(OWN_SETTINGS)


def test_each_person_counts_once_per_streak_toward_the_hubs_exit() -> None:
    streak = FailureStreak()
    assert [streak.counts(p) for p in ("alice", "alice", "alice", "bob", "alice", "bob")] == [
        True,
        False,
        False,
        True,
        False,
        False,
    ]
    streak.clear()  # a server started: the next failure of anyone counts again
    assert streak.counts("alice")


def test_a_repeated_failure_is_a_spawn_exception_jupyterhub_does_not_count() -> None:
    STREAK.clear()
    log = logging.getLogger("test")
    first = counted_failure("mallory", "boom", log)
    again = counted_failure("mallory", "boom", log)
    assert isinstance(first, web.HTTPError) and first.status_code == 500
    assert isinstance(again, SpawnException) and "boom" in str(again)
    STREAK.clear()
