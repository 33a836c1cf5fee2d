"""Hub wiring: jupyterhub_config.py, the example tenants.yaml, login and the aidc command."""
