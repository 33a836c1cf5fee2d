"""The workspace's sshd: its config, session script and environment are pure builders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sshgateway.workspace import (
    KEY_ENV,
    SshdSettings,
    SshdUnavailable,
    authorized_keys,
    environment_file,
    host_key,
    listen_address,
    session_environment,
    session_script,
    sshd_config,
    sshd_port,
)

SETTINGS = SshdSettings(
    directory="/home/jovyan/.aidc/sshd",
    listen="10.1.2.3",
    port=40022,
    user="jovyan",
    root=False,
    sftp_server="/usr/lib/openssh/sftp-server",
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlniOEawmeTTFjpV1Y+CG4r5QjqgATHUqmnt7evu/Sy aidc-gateway:alice"

CONFIG = """\
# Written by sshgateway.workspace at each start of this workspace's sshd: edits are lost.
Port 40022
ListenAddress 10.1.2.3
HostKey /home/jovyan/.aidc/sshd/ssh_host_ed25519_key
PidFile none
AllowUsers jovyan
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile /home/jovyan/.aidc/sshd/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes no
MaxAuthTries 3
LoginGraceTime 30
AllowAgentForwarding no
X11Forwarding no
AllowTcpForwarding local
PermitOpen localhost:* 127.0.0.1:* [::1]:*
AllowStreamLocalForwarding no
GatewayPorts no
PermitTunnel no
PermitUserEnvironment no
PermitUserRC no
PermitTTY yes
PrintMotd no
PrintLastLog no
UseDNS no
ClientAliveInterval 60
ClientAliveCountMax 3
LogLevel INFO
ForceCommand /home/jovyan/.aidc/sshd/session
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def test_sshd_config_of_a_workspace() -> None:
    assert sshd_config(SETTINGS) == CONFIG


def test_root_may_log_in_with_the_key_only_and_no_sftp_server_means_no_sftp() -> None:
    text = sshd_config(
        SshdSettings(
            directory="/data/homes/my alice/.aidc/sshd",
            listen="127.0.0.1",
            port=1,
            user="root",
            root=True,
            sftp_server=None,
        )
    )
    assert "PermitRootLogin prohibit-password\n" in text
    assert "AllowUsers root\n" in text
    assert 'AuthorizedKeysFile "/data/homes/my alice/.aidc/sshd/authorized_keys"\n' in text  # spaces quoted
    assert "Subsystem" not in text


def test_a_path_with_a_double_quote_is_refused() -> None:
    with pytest.raises(SshdUnavailable, match="double quote"):
        sshd_config(
            SshdSettings(directory='/home/a"b', listen="127.0.0.1", port=1, user="a", root=False, sftp_server=None)
        )


def test_session_script() -> None:
    assert session_script("/home/jovyan/.aidc/sshd/environment") == (
        "#!/bin/sh\n"
        "# Written by sshgateway.workspace: every SSH session of this workspace starts here.\n"
        ". /home/jovyan/.aidc/sshd/environment\n"
        'cd "$HOME" 2>/dev/null || cd /\n'
        'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then\n'
        '  exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"\n'
        "fi\n"
        'exec "${SHELL:-/bin/sh}" -l\n'
    )


def test_sessions_get_the_workspace_environment_but_not_its_secrets() -> None:
    environ = {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PATH": "/opt/conda/bin:/usr/bin",
        "HOME": "/home/jovyan",
        "JUPYTERHUB_API_TOKEN": "secret",
        "JPY_API_TOKEN": "secret",
        KEY_ENV: KEY,
        "SSH_CONNECTION": "x",
        "TERM": "xterm",
        "BASH_FUNC_f%%": "() { :; }",
        "NUL": "a\0b",
    }
    assert session_environment(environ) == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HOME": "/home/jovyan",
        "PATH": "/opt/conda/bin:/usr/bin",
    }


def test_environment_file_quotes_values_exactly(tmp_path: Path) -> None:
    env = {"A": "plain", "B": 'it\'s "quoted" $HOME `x` \\ ;', "C": "two\nlines", "D": ""}
    text = environment_file(env)
    assert text.startswith("export A=plain\n")
    script = tmp_path / "env"
    script.write_text(text)
    shown = subprocess.run(
        ["/bin/sh", "-c", f'. {script}; printf "%s|" "$A" "$B" "$C" "$D"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    assert shown == 'plain|it\'s "quoted" $HOME `x` \\ ;|two\nlines||'


@pytest.mark.parametrize(
    "line,expected",
    [
        (KEY + "\n", KEY + "\n"),
        ("  " + KEY.replace(" ", "   "), KEY + "\n"),
    ],
)
def test_authorized_keys_is_the_one_key(line: str, expected: str) -> None:
    assert authorized_keys(line) == expected


@pytest.mark.parametrize(
    "line,why",
    [
        ("", "is empty"),
        ("ssh-rsa AAAA", "not one ssh-ed25519 public key"),
        ("ssh-ed25519", "not one ssh-ed25519 public key"),
        (KEY + "\n" + KEY, "not one ssh-ed25519 public key"),
    ],
)
def test_a_workspace_without_its_key_cannot_start_sshd(line: str, why: str) -> None:
    with pytest.raises(SshdUnavailable, match=why):
        authorized_keys(line)


@pytest.mark.parametrize(
    "server_ip,expected",
    [
        ("", "0.0.0.0"),
        ("*", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("localhost", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.7.0.12", "127.7.0.12"),  # a pod IP of the test bed's loopback pod network
        ("[::1]", "::1"),
        ("::", "::"),
    ],
)
def test_sshd_listens_where_the_server_does(server_ip: str, expected: str) -> None:
    assert listen_address(server_ip) == expected


def test_a_server_on_a_host_name_gets_no_sshd() -> None:
    with pytest.raises(SshdUnavailable, match="not an IP address"):
        listen_address("workspace.example.org")


def test_the_host_key_must_be_one_openssh_private_key() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    assert host_key(f"\n{key}\n\n") == key + "\n"
    for text, why in [("", "is empty"), ("ssh-ed25519 AAAA", "not an OpenSSH private key")]:
        with pytest.raises(SshdUnavailable, match=why):
            host_key(text)


@pytest.mark.parametrize("text", ["", "0", "65536", "22a", "-1", " "])
def test_the_port_must_be_a_tcp_port(text: str) -> None:
    with pytest.raises(SshdUnavailable, match="not a TCP port"):
        sshd_port(text)


def test_the_port_of_the_spawner() -> None:
    assert sshd_port("2222") == 2222 and sshd_port("65535\n") == 65535
