"""Hub wiring: jupyterhub_config.py, the example tenants.yaml and the hub's page templates."""
