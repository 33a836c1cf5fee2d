# AIDC Hub on Kubernetes: the hub pod's /etc/aidc/jupyterhub_config.py (from the chart's ConfigMap).
#
# It loads the platform's own wiring (hub_config/jupyterhub_config.py from the hub image, the
# same file `make up` uses), then changes only what differs on Kubernetes, as z2jh's
# files/hub/jupyterhub_config.py does:
#   - the hub listens on the pod's address and is reached as http://hub:8081 (hub Service);
#   - configurable-http-proxy is its own Deployment (proxy-api Service), not a child process;
#   - the quotas service stays a hub-managed process in this pod, reachable on the pod's IP;
#   - the SSH gateway is its own Deployment: declared as an external service (token only);
#   - the databases (PostgreSQL with the password of $AIDC_DB_PASSWORD, else SQLite on the data volume);
#   - the chart's values as traits (spawner, OIDC provider, ...); auth.admins, and hub.config, last.
# Non-secret chart values come from $AIDC_CHART_VALUES (hub.json, templates/hub/configmap.yaml),
# secrets from the environment (the chart's Secrets); docs/configuration.md lists every variable.
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import hub_config

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
env = os.environ.get


def _fail(message: str) -> None:
    # SystemExit: traitlets would log an exception and carry on without this file
    sys.exit(f"AIDC Hub (Helm chart config) cannot start: {message}")


values_file = env("AIDC_CHART_VALUES", "/etc/aidc/hub.json")
try:
    values = json.loads(Path(values_file).read_text())
except (OSError, ValueError) as e:
    _fail(f"cannot read the chart's settings {values_file}: {e}")

# -- databases: built here so that a password with any character stays one URL part ----------
db = values["database"]
if db["type"] == "postgresql":
    password = env("AIDC_DB_PASSWORD", "")
    if not password:
        _fail(
            "database.type is postgresql but AIDC_DB_PASSWORD is empty: create the Secret named by"
            " database.postgresql.password.existingSecret with the password under its key."
        )
    pg = db["postgresql"]
    server = f"{quote(pg['user'], safe='')}:{quote(password, safe='')}@{pg['host']}:{pg['port']}"
    query = f"?sslmode={pg['sslMode']}"
    # read by the platform config below (quotas store, hub spawners, quotas service)
    os.environ["AIDC_DB_URL"] = f"postgresql+psycopg://{server}/{quote(pg['database'], safe='')}{query}"
    hub_db_url = f"postgresql+psycopg://{server}/{quote(pg['hubDatabase'], safe='')}{query}"
else:
    hub_db_url = ""

load_subconfig(str(Path(hub_config.__file__).resolve().parent / "jupyterhub_config.py"))  # noqa: F821

if hub_db_url:
    c.JupyterHub.db_url = hub_db_url

# -- hub, proxy, spawner: the chart's values as traits (z2jh's get_config / set_config) ----------
pod_ip = env("AIDC_POD_IP", "")
if not pod_ip:
    _fail("AIDC_POD_IP is not set (the chart sets it from the pod's status.podIP).")
namespace, hub, spawner = values["namespace"], values["hub"], values["hub"]["spawner"]
hub_url = f"http://hub.{namespace}.svc:8081"  # the hub Service
settings: dict[str, Any] = {
    "JupyterHub.spawner_class": "aidc-kube",
    "JupyterHub.bind_url": "http://:8000",
    "JupyterHub.hub_bind_url": "http://:8081",
    "JupyterHub.hub_connect_url": hub_url,
    "ConfigurableHTTPProxy.should_start": False,
    "ConfigurableHTTPProxy.api_url": f"http://proxy-api.{namespace}.svc:8001",
    "Spawner.poll_interval": hub["pollInterval"],
    "Spawner.consecutive_failure_limit": hub["consecutiveFailureLimit"],
    "JupyterHub.concurrent_spawn_limit": hub["concurrentSpawnLimit"],
    "TenantKubeSpawner.hub_connect_url": hub_url,
    "TenantKubeSpawner.namespace_template": spawner["namespaceTemplate"],
    "TenantKubeSpawner.home_storage_class": spawner["homeStorageClass"],
    "TenantKubeSpawner.home_capacity": spawner["homeCapacity"],
    "TenantKubeSpawner.kueue": spawner["kueue"],
    "TenantKubeSpawner.preemption_grace": spawner["preemptionGrace"],
    "TenantKubeSpawner.k8s_creates_in_flight": spawner["createsInFlight"],
    "TenantKubeSpawner.watch_all_namespaces": spawner["watchAllNamespaces"],
    # workspaces reach the quotas service through the proxy (the network policies let them reach
    # nothing else of the hub's but its API); Spawner.server_token_scopes comes from the platform's file
    "Spawner.environment": {
        **c.Spawner.environment,
        "AIDC_QUOTAS_URL": f"http://proxy-public.{namespace}.svc:{values['proxy']['port']}/services/quotas/",
    },
}
if values["publicUrl"]:
    settings["JupyterHub.public_url"] = values["publicUrl"]

# -- services ------------------------------------------------------------------------------------
services = []
for service in c.JupyterHub.services:
    if service["name"] == "quotas":
        # the proxy (another pod) reaches it on this pod's address; it listens on what its url names
        service = {**service, "url": f"http://{pod_ip}:{urlparse(service['url']).port}"}
        if hub["prometheusUrl"]:  # GPU use from the DCGM exporter, through Prometheus (QuotasService.prometheus_url)
            service["environment"] = {**service["environment"], "AIDC_PROMETHEUS_URL": hub["prometheusUrl"]}
    elif service["name"] == "sshgateway":
        if not values["sshGateway"]["enabled"]:
            continue  # no gateway at all
        if not service.get("api_token"):
            _fail("AIDC_SSHGATEWAY_API_TOKEN is empty: the SSH gateway Deployment could not log in to the hub.")
        # its own Deployment (Service on port 22): the hub only knows its token
        service = {k: service[k] for k in ("name", "display", "api_token")}
    services.append(service)
settings["JupyterHub.services"] = services
if not values["sshGateway"]["enabled"]:
    settings["JupyterHub.load_roles"] = [
        r for r in c.JupyterHub.load_roles if "sshgateway" not in r.get("services", [])
    ]

# -- authentication: auth.type is $AIDC_AUTH, which chose the authenticator in the platform config
# above (oidc: authenticators/oidc.py, its client secret from $AIDC_OIDC_CLIENT_SECRET); here its settings
auth = values["auth"]
if auth["type"] == "oidc":
    oidc = auth["oidc"]
    settings.update(
        {
            "OIDCAuthenticator.issuer": oidc["issuer"],
            "OIDCAuthenticator.client_id": oidc["clientId"],
            "OIDCAuthenticator.oauth_callback_url": f"{values['publicUrl'].rstrip('/')}/hub/oauth_callback",
            "OIDCAuthenticator.username_claim": oidc["usernameClaim"],
            "OIDCAuthenticator.groups_claim": oidc["groupsClaim"],
            "OIDCAuthenticator.scope": oidc["scopes"],
            "OIDCAuthenticator.platform_admin_groups": set(oidc["adminGroups"]),
            "OIDCAuthenticator.contact": oidc["contact"],
            "OIDCAuthenticator.login_service": oidc["loginService"],
        }
    )
if auth["admins"]:
    settings["Authenticator.admin_users"] = set(c.Authenticator.admin_users) | set(auth["admins"])

for key, value in settings.items():
    section, trait = key.split(".")
    setattr(c[section], trait, value)

# -- hub.config: {ClassName: {trait: value}}, set last (as z2jh's hub.config) -----------------------
for section, traits in values["hubConfig"].items():
    for trait, value in traits.items():
        setattr(c[section], trait, value)
