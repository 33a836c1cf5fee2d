"""``aidc ssh-config``: the ~/.ssh/config block of one person's workspaces behind the SSH gateway."""

from __future__ import annotations

import pytest

from aidc.cli import main, ssh_config_block


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIDC_SSH_HOST", "AIDC_SSH_PORT", "AIDC_HUB_URL", "JUPYTERHUB_USER"):
        monkeypatch.delenv(name, raising=False)


HEADER = (
    "# AIDC Hub: alice's workspaces through the SSH gateway at hub.example.org port 2222.\n"
    "# Register your public key first (the quotas page, SSH keys). A stopped server starts when you connect.\n"
)


def test_default_and_named_servers() -> None:
    assert ssh_config_block("alice", "hub.example.org", 2222, ["gpu", "big"]) == HEADER + (
        "Host aidc\n"
        "    HostName hub.example.org\n"
        "    Port 2222\n"
        "    User alice\n"
        "Host aidc-gpu\n"
        "    HostName hub.example.org\n"
        "    Port 2222\n"
        "    User alice.gpu\n"
        "Host aidc-big\n"
        "    HostName hub.example.org\n"
        "    Port 2222\n"
        "    User alice.big\n"
    )


def test_the_command_takes_the_host_from_the_hub_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIDC_HUB_URL", "https://hub.example.org/hub/")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert main(["ssh-config", "--server", "gpu", "--server", "gpu"]) == 0  # a repeated server once
    assert capsys.readouterr().out == ssh_config_block("alice", "hub.example.org", 2222, ["gpu"])


def test_options_win_over_the_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_SSH_HOST", "ssh.example.org")
    monkeypatch.setenv("AIDC_SSH_PORT", "22")
    assert main(["ssh-config", "--user", "bob"]) == 0
    out = capsys.readouterr().out
    assert "Host aidc\n    HostName ssh.example.org\n    Port 22\n    User bob\n" in out
    assert main(["ssh-config", "--user", "bob", "--host", "10.0.0.5", "--port", "2200", "--alias", "lab"]) == 0
    assert "Host lab\n    HostName 10.0.0.5\n    Port 2200\n    User bob\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,why",
    [
        (["ssh-config"], "Whose workspaces? Pass --user NAME"),
        (["ssh-config", "--user", "alice", "--server", "a b"], "Not a server name: 'a b'"),
        (["ssh-config", "--user", "alice", "--port", "99999"], "is not a port number (1-65535)"),
        (["ssh-config", "--user", "alice", "--host", "evil host\nProxyCommand x"], "is not a host name"),
    ],
)
def test_bad_input_prints_nothing_and_says_why(argv: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and why in err


def test_a_bad_user_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["ssh-config", "--user", "Alice Smith"])
    assert stopped.value.code == 2
    assert "not a valid username" in capsys.readouterr().err
