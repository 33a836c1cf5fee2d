# AIDC Hub on Kubernetes: the hub pod's /etc/aidc/jupyterhub_config.py (from the chart's ConfigMap).
#
# It loads the platform's own wiring (hub_config/jupyterhub_config.py from the hub image, the
# same file `make up` uses), then changes only what differs on Kubernetes, as z2jh's
# files/hub/jupyterhub_config.py does:
#   - the hub listens on the pod's address and is reached as http://hub:8081 (hub Service);
#   - configurable-http-proxy is its own Deployment (proxy-api Service), not a child process;
#   - the quotas service stays a hub-managed process in this pod, reachable on the pod's IP;
#   - the SSH gateway is its own Deployment: declared as an external service (token only);
#   - the databases (PostgreSQL from AIDC_DB_* variables, else SQLite on the data volume);
#   - auth.admins, and hub.config overrides, last (the authenticator is the platform config's).
# Non-secret chart values come from $AIDC_CHART_VALUES (JSON), secrets from the environment.
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

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

# -- hub and proxy -----------------------------------------------------------------------------
pod_ip = env("AIDC_POD_IP", "")
if not pod_ip:
    _fail("AIDC_POD_IP is not set (the chart sets it from the pod's status.podIP).")
c.JupyterHub.hub_bind_url = f"http://:{env('AIDC_HUB_PORT', '8081')}"
c.JupyterHub.hub_connect_url = env("AIDC_HUB_SERVICE_URL", "http://hub:8081")
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = env("AIDC_PROXY_API_URL", "http://proxy-api:8001")
if env("AIDC_PUBLIC_URL"):
    c.JupyterHub.public_url = env("AIDC_PUBLIC_URL")

# -- services ------------------------------------------------------------------------------------
services = []
for service in c.JupyterHub.services:
    if service["name"] == "quotas":
        # the proxy (another pod) reaches it on this pod's address; it listens on what its url names
        service = {**service, "url": f"http://{pod_ip}:{env('AIDC_QUOTAS_PORT', '8002')}"}
    elif service["name"] == "sshgateway":
        if not env("AIDC_SSH_EXTERNAL"):
            continue  # sshGateway.enabled is false: no gateway at all
        if not service.get("api_token"):
            _fail("AIDC_SSHGATEWAY_API_TOKEN is empty: the SSH gateway Deployment could not log in to the hub.")
        # its own Deployment (Service on port 22): the hub only knows its token
        service = {k: service[k] for k in ("name", "display", "api_token")}
    services.append(service)
c.JupyterHub.services = services
if not env("AIDC_SSH_EXTERNAL"):
    c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if "sshgateway" not in r.get("services", [])]

# -- authentication: auth.type oidc is AIDC_AUTH=oidc and AIDC_OIDC_* in the hub's environment,
# wired by the platform config above (hub_config/oidc.py); here only the admins named in values
auth = values["auth"]
if auth["admins"]:
    c.Authenticator.admin_users = set(c.Authenticator.admin_users) | set(auth["admins"])

# -- hub.config: {ClassName: {trait: value}}, set last (as z2jh's hub.config) -----------------------
for section, traits in values["hubConfig"].items():
    for trait, value in traits.items():
        setattr(c[section], trait, value)
