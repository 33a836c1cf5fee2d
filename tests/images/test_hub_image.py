"""aidc/hub, built from its recipe, started the way the chart's hub Deployment starts it (the
``hub_container`` fixture of conftest.py): the chart rendered by helm, its ConfigMap mounted at
/etc/aidc, the container's command, environment, user and security settings as the Deployment
gives them (secrets with test values), and a real configurable-http-proxy where the chart's
proxy-api Service would be."""

from __future__ import annotations

from importlib.metadata import version

import requests

from tests.images.conftest import HUB_PORT, PROXY_API_PORT, QUOTAS_PORT, SECRET_VALUES, HubContainer


def test_the_hub_image_starts_the_hub_with_the_charts_config(hub_container: HubContainer) -> None:
    hub, data = hub_container.container, hub_container.data
    api = requests.get(f"http://127.0.0.1:{HUB_PORT}/hub/api/", timeout=10).json()
    assert api["version"] == version("jupyterhub")
    login = requests.get(f"http://127.0.0.1:{HUB_PORT}/hub/login", timeout=10)
    assert login.status_code == 200 and 'name="password"' in login.text
    # the hub reached the proxy with the chart's secret and routed / to itself by its Service name
    routes = requests.get(
        f"http://127.0.0.1:{PROXY_API_PORT}/api/routes",
        headers={"Authorization": f"token {SECRET_VALUES['CONFIGPROXY_AUTH_TOKEN']}"},
        timeout=10,
    ).json()
    assert routes["/"]["target"] == f"http://hub.aidc.svc:{HUB_PORT}", routes
    # the quotas service, a process the hub starts in the same container, on the pod's address
    quotas = hub.wait_http(f"http://127.0.0.1:{QUOTAS_PORT}/services/quotas/api/openapi.json", timeout=60)
    assert quotas.status_code == 200 and quotas.json()["info"]
    # its state on the volume, nothing written elsewhere (the root file system is read-only)
    assert {p.name for p in data.iterdir()} >= {"jupyterhub.sqlite", "quotas.sqlite"}
    assert "Traceback" not in hub.logs(), hub.logs()[-3000:]
