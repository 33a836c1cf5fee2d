"""aidc.cli: the ``aidc`` operator command, called through ``main(argv)``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aidc.cli import main
from authenticators.local import AccountStore

from .conftest import EXAMPLE_CATALOG, EXAMPLE_TENANTS


@pytest.fixture(autouse=True)
def example_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_TENANTS", str(EXAMPLE_TENANTS))
    monkeypatch.setenv("AIDC_CATALOG", str(EXAMPLE_CATALOG))
    monkeypatch.delenv("AIDC_DATA_DIR", raising=False)


PASSWORD = re.compile(r"password:\s+(\S+)")


def test_init_creates_the_admin_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "init", "--url", "http://hub.example:8000"]) == 0
    out = capsys.readouterr().out
    [password] = PASSWORD.findall(out)
    assert "http://hub.example:8000" in out
    assert "username:  admin" in out

    saved = data / "admin-password"
    assert saved.read_text() == password + "\n"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
    store = AccountStore(data / "accounts.json")
    assert store.admins() == {"admin"}
    assert store.check("admin", password)

    assert main(["--data-dir", str(data), "init"]) == 0
    again = capsys.readouterr().out
    assert password not in again
    assert not PASSWORD.findall(again)
    assert f"(saved in {saved})" in again
    assert store.check("admin", password)  # the first password still works
    assert saved.read_text() == password + "\n"


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE_TENANTS)]) == 0
    assert capsys.readouterr().out.strip() == f"{EXAMPLE_TENANTS}: OK (2 tenants, 6 profiles, 3 GPU types)"


def test_check_config_reports_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(EXAMPLE_TENANTS.read_text())
    data["profiles"][0]["memory"] = "8Gb"
    data["tenants"][1]["kind"] = "lab"
    bad = tmp_path / "tenants.yaml"
    bad.write_text(yaml.safe_dump(data))

    assert main(["check-config", str(bad), "--catalog", str(EXAMPLE_CATALOG)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"aidc: {bad}: ")
    assert "nothing was applied" in captured.err
    assert "profiles[cpu-small].memory: '8Gb' has unit 'Gb'" in captured.err
    assert "tenants[nova-labs].kind: 'lab' is not a tenant kind" in captured.err


@pytest.mark.parametrize("name", ["Alice", "bad name", "_alice", "al/ice"])
def test_user_add_with_an_invalid_username_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--data-dir", str(tmp_path), "user", "add", name])
    assert info.value.code == 2
    assert f"{name!r} is not a valid username" in capsys.readouterr().err
    assert not (tmp_path / "accounts.json").exists()


def test_user_add_then_add_again_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "user", "add", "bob"]) == 0
    out = capsys.readouterr().out
    [password] = re.findall(r"Password: (\S+)", out)
    assert "Member of: snu-ai." in out
    assert AccountStore(tmp_path / "accounts.json").check("bob", password)

    assert main(["--data-dir", str(tmp_path), "user", "add", "bob"]) == 1
    assert "exists already" in capsys.readouterr().err
