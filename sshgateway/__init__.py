"""The SSH gateway: an SSH server that authenticates people by their registered public keys,
starts their workspace through the hub if needed, and bridges the session over plain TCP to the
sshd that runs inside the workspace, at the address the hub's spawner keeps in the server's state.
See docs/ssh.md."""
