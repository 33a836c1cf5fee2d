# AIDC Hub: JupyterHub configuration. Declarative wiring only: values -> traits.
# i18n: operator: the hub's settings and start-up errors, read by the operator (docs/i18n.md)
#
# `make up`, the tests and the Helm chart (helm/aidc-hub/files/jupyterhub_config.py) load this same
# file. It reads only the environment variables of docs/configuration.md (paths, the ports of
# `make up`, the login method, secrets); every other setting is a trait, set on the command line
# (`jupyterhub -f hub_config/jupyterhub_config.py --Spawner.poll_interval=10`) or in a config file.
import os
import sys
from pathlib import Path

from aidc import reload
from authenticators.local import AccountStore
from hub_config import language
from hub_config.intake import raise_listen_backlog
from quotas import paths
from quotas.loader import ConfigError
from quotas.notices import notices_var
from quotas.rbac import tenant_groups, tenant_roles
from quotas.service.app import SERVICE_NAME as QUOTAS_SERVICE
from quotas.service.app import hub_roles, hub_service
from quotas.snapshot import HUB_STATE, platform_dir, shared_holder
from spawner import server_api
from sshgateway.server import hub_roles as ssh_hub_roles
from sshgateway.server import hub_service as ssh_hub_service

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
raise_listen_backlog()  # a storm of a thousand POSTs waits for the hub instead of being reset (issue 15)

env = os.environ.get
data_dir = Path(paths.data_dir()).resolve()
tenants_file = paths.tenants_file()
catalog_file = paths.catalog_file()
accounts_file = data_dir / "accounts.json"
db_url = paths.db_url(str(data_dir))

try:
    # the hub's one snapshot of the platform config: its spawners and authenticator read it too
    holder = shared_holder(tenants_file, catalog_file)
except (ConfigError, OSError) as e:
    # SystemExit, not an exception: traitlets would log an exception and start the hub without this file
    sys.exit(f"AIDC Hub cannot start because of its tenant config.\n{e}")
platform = holder.config

data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
# publish it for the quotas service, and reload it at SIGHUP (`aidc reload`; aidc/reload.py)
reload.install(holder, data_dir)
# PUT and PATCH of servers refuse unknown keys and malformed options, as POST does
server_api.install()
# every page in the person's language: the switcher, their saved choice, Accept-Language (docs/i18n.md)
language.install(db_url)

bind_url = env("AIDC_BIND_URL", "http://127.0.0.1:8000")
hub_url = f"http://127.0.0.1:{env('AIDC_HUB_PORT', '8081')}"
quotas_port = int(env("AIDC_QUOTAS_PORT", "8002"))
ssh_config = env("AIDC_SSH_CONFIG", "")
# this process is the hub: its services stop when it is gone (services/lifecycle.py)
hub_pid = {"AIDC_HUB_PID": str(os.getpid())}

settings = {
    "JupyterHub.bind_url": bind_url,
    "JupyterHub.hub_bind_url": hub_url,
    "JupyterHub.db_url": f"sqlite:///{data_dir / 'jupyterhub.sqlite'}",
    "JupyterHub.cookie_secret_file": str(data_dir / "jupyterhub_cookie_secret"),
    "JupyterHub.pid_file": str(data_dir / "jupyterhub.pid"),
    "JupyterHub.spawner_class": "aidc-local",
    "JupyterHub.authenticator_class": "aidc-local",
    "JupyterHub.allow_named_servers": True,
    "JupyterHub.load_groups": tenant_groups(platform),
    "JupyterHub.load_roles": tenant_roles(platform) + hub_roles() + ssh_hub_roles(),
    "JupyterHub.services": [
        hub_service(
            quotas_port,
            {
                "AIDC_DATA_DIR": str(data_dir),
                "AIDC_TENANTS": str(Path(tenants_file).resolve()),
                "AIDC_CATALOG": str(Path(catalog_file).resolve()),
                "AIDC_DB_URL": db_url,
                # GPU use from the operator's Prometheus (DCGM exporter), else nvidia-smi here
                **({"AIDC_PROMETHEUS_URL": env("AIDC_PROMETHEUS_URL", "")} if env("AIDC_PROMETHEUS_URL") else {}),
                **hub_pid,
            },
            hub_state_file=str(platform_dir(data_dir) / HUB_STATE),
        ),
        ssh_hub_service(
            {
                "AIDC_DATA_DIR": str(data_dir),
                **hub_pid,
                **({"AIDC_SSH_SECRET": env("AIDC_SSH_SECRET", "")} if env("AIDC_SSH_SECRET") else {}),
            },
            # its other settings (SSHGateway.*) in the file $AIDC_SSH_CONFIG names
            [
                f"--SSHGateway.port={env('AIDC_SSH_PORT', '2222')}",
                f"--SSHGateway.proxy_url={bind_url}",
                *([f"--SSHGateway.config_file={ssh_config}"] if ssh_config else []),
            ],
            api_token=env("AIDC_SSHGATEWAY_API_TOKEN"),
        ),
    ],
    "JupyterHub.template_paths": [str(paths.REPO / "hub_config" / "templates")],
    # _() in the templates, from AIDC Hub's catalogs (i18n/), in the page's language (hub_config/language.py)
    "JupyterHub.jinja_environment_options": {"extensions": [language.EXTENSION]},
    "JupyterHub.extra_handlers": language.extra_handlers(db_url),
    # a language chosen on the login page becomes the person's saved choice as they log in
    "Authenticator.post_auth_hook": language.remember_at_login(db_url),
    # aidc_notices: servers about to be stopped (preempted) and why recent ones stopped (quotas/notices.py)
    "JupyterHub.template_vars": {"aidc_local_accounts": True, "aidc_notices": notices_var(db_url)},
    "ConfigurableHTTPProxy.command": [str(paths.REPO / "node_modules" / ".bin" / "configurable-http-proxy")],
    "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{env('AIDC_PROXY_API_PORT', '8001')}",
    "ConfigurableHTTPProxy.pid_file": str(data_dir / "proxy.pid"),
    "Spawner.default_url": "/lab",
    # $JUPYTERHUB_API_TOKEN of a workspace: JupyterHub's default (the `server` role), and its owner's
    # own data from the quotas service, for the JupyterLab extension (aidc_jupyterlab; docs/quotas.md)
    "Spawner.server_token_scopes": [
        "users:activity!user",
        "access:servers!server",
        f"access:services!service={QUOTAS_SERVICE}",
    ],
    # where the workspace reaches the quotas service (its own address: the workspaces run on this machine)
    "Spawner.environment": {"AIDC_QUOTAS_URL": f"http://127.0.0.1:{quotas_port}/services/{QUOTAS_SERVICE}/"},
    "Spawner.start_timeout": 120,
    "Spawner.http_timeout": 90,
    "Spawner.poll_interval": 30,
    # as z2jh: restart a hub whose spawns keep failing; refusals (quota, no capacity) and a person's
    # own failures (their settings, their home: spawner/start_failures.py) do not count
    "Spawner.consecutive_failure_limit": 5,
    # aidc-kube: KubeSpawner's pod and event watches list every pod again each time a watch ends
    # (10 s by default); at 3,000 pods that is 1.5 s of the hub's event loop every 12 s
    # (docs/scale.md). A watch lasts 5 minutes instead, and the client waits longer than that.
    "ResourceReflector.timeout_seconds": 300,
    "ResourceReflector.restart_seconds": 300,
    "ResourceReflector.request_timeout": 330,
    "TenantSpawnerMixin.tenants_file": tenants_file,
    "TenantSpawnerMixin.catalog_file": catalog_file,
    "TenantSpawnerMixin.data_dir": str(data_dir),
    "TenantSpawnerMixin.db_url": db_url,
    "TenantKubeSpawner.hub_connect_url": hub_url,
    "TenantGroupsMixin.tenants_file": tenants_file,
    "TenantGroupsMixin.catalog_file": catalog_file,
    "LocalAccountAuthenticator.accounts_file": str(accounts_file),
    "Authenticator.admin_users": AccountStore(accounts_file).admins(),
}

auth = env("AIDC_AUTH", "local")
if auth not in ("local", "oidc"):
    sys.exit(f"AIDC_AUTH={auth!r} is not a login method: use local (accounts of `aidc user`) or oidc (docs/oidc.md).")
if auth == "oidc":
    # the provider and the claims are OIDCAuthenticator traits (docs/oidc.md); the hub refuses to
    # start without issuer, client_id and this secret (OIDCAuthenticator.check_allow_config)
    settings.update(
        {
            "JupyterHub.authenticator_class": "aidc-oidc",
            # the authenticator sets tenant groups and tenant-admin roles at each login (manage_groups,
            # manage_roles), so the config assigns none
            "JupyterHub.load_groups": {},
            "JupyterHub.load_roles": hub_roles() + ssh_hub_roles(),
            "JupyterHub.template_vars": {"aidc_local_accounts": False, "aidc_notices": notices_var(db_url)},
            "OIDCAuthenticator.client_secret": env("AIDC_OIDC_CLIENT_SECRET", ""),
            "OIDCAuthenticator.oauth_callback_url": f"{bind_url}/hub/oauth_callback",
            "OIDCAuthenticator.tenants_file": tenants_file,
            "OIDCAuthenticator.catalog_file": catalog_file,
            # platform admins by name: --Authenticator.admin_users=..., by group: platform_admin_groups
            "Authenticator.admin_users": set(),
        }
    )

for key, value in settings.items():
    section, trait = key.split(".")
    setattr(c[section], trait, value)
