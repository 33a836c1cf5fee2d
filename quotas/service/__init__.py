"""The quotas service: a JupyterHub service with the REST API, metrics and the usage and limits
page for tenant admins (``/services/quotas/``). Entry point: :func:`quotas.service.app.main`."""
