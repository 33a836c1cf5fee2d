"""The SSH gateway: an SSH server that authenticates people by their registered public keys,
starts their workspace through the hub if needed, and bridges the session to the sshd that
runs inside the workspace, over a websocket through the hub's proxy. See docs/ssh.md."""
