# AIDC Hub: JupyterHub configuration. Declarative wiring only: values -> traits.
#
# Every value can be set from the environment, so `make up`, the tests and a
# deployment use this same file:
#   AIDC_DATA_DIR     state directory (database, cookie secret, accounts, ledger)  [.aidc]
#   AIDC_TENANTS      tenants.yaml                                                 [hub_config/tenants.yaml]
#   AIDC_CATALOG      image catalog                                                [images/catalog.yaml]
#   AIDC_FAKE_GPUS    simulated GPUs where nvidia-smi is missing, e.g. H100:4,A100:4
#   AIDC_BIND_URL     public URL of the proxy                                      [http://127.0.0.1:8000]
#   AIDC_HUB_PORT     the hub's internal port                                      [8081]
#   AIDC_PROXY_API_PORT  configurable-http-proxy's API port                        [8001]
#   AIDC_QUOTAS_PORT  the quotas service's port (API, metrics, page at /services/quotas/)  [8002]
#   AIDC_SSH_PORT, AIDC_SSH_BIND  the SSH gateway's port and address (docs/ssh.md)  [2222, 127.0.0.1]
#   AIDC_SSH_ALLOW_TOKEN_PASSWORD  1: accept a hub API token as SSH password       [off]
#   AIDC_SSH_WORKSPACE_USER  Unix account of workspaces' sshd ({username} expanded) [the hub's own]
#   AIDC_SSH_CONFIG   a traitlets config file for the gateway (SSHGateway.* settings) [none]
#   AIDC_SSHGATEWAY_API_TOKEN  a fixed API token for the sshgateway service         [made by the hub]
#   AIDC_DB_URL       the quotas database (reservations, ledger, limits)           [sqlite in AIDC_DATA_DIR]
#   AIDC_POLL_INTERVAL   seconds between checks that workspaces still run           [30]
#   AIDC_CONSECUTIVE_FAILURE_LIMIT  spawn failures in a row before the hub exits     [5]
#   AIDC_SPAWNER      aidc-local (processes on this machine) or aidc-kube (pods)   [aidc-local]
#   AIDC_HUB_CONNECT_URL  how workspace pods reach the hub (aidc-kube)             [the hub's own URL]
#   AIDC_NAMESPACE_TEMPLATE  tenant namespaces (aidc-kube)                         [aidc-{tenant}]
#   AIDC_HOME_STORAGE_CLASS, AIDC_HOME_CAPACITY  home volumes (aidc-kube)          [cluster default, 10Gi]
#   AIDC_AUTH         local (accounts of `aidc user`) or oidc (docs/oidc.md)       [local]
#   AIDC_OIDC_ISSUER, AIDC_OIDC_CLIENT_ID, AIDC_OIDC_CLIENT_SECRET  the provider and the hub's client (oidc)
#   AIDC_OIDC_CALLBACK_URL   where the provider sends people back   [AIDC_BIND_URL/hub/oauth_callback]
#   AIDC_OIDC_USERNAME_CLAIM, AIDC_OIDC_GROUPS_CLAIM  claims of the ID token    [preferred_username, groups]
#   AIDC_OIDC_SCOPES  scopes asked for                                 [openid profile email groups]
#   AIDC_OIDC_ADMIN_GROUPS, AIDC_OIDC_ADMIN_USERS  platform admins (comma-separated)  [none]
#   AIDC_OIDC_CONTACT  whom people in no tenant should ask                        [a platform admin]
#   AIDC_OIDC_LOGIN_SERVICE  the login button's "Sign in with ..."        [your organisation's account]
import os
import sys
from pathlib import Path

from hub_config.auth import AccountStore
from quotas import paths
from quotas.loader import ConfigError, load_platform_cached
from quotas.rbac import tenant_groups, tenant_roles
from quotas.service.app import hub_roles, hub_service
from sshgateway.server import hub_roles as ssh_hub_roles
from sshgateway.server import hub_service as ssh_hub_service

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

env = os.environ.get
data_dir = Path(paths.data_dir()).resolve()
tenants_file = paths.tenants_file()
catalog_file = paths.catalog_file()
accounts_file = data_dir / "accounts.json"
db_url = paths.db_url(str(data_dir))

try:
    platform = load_platform_cached(tenants_file, catalog_file)
except ConfigError as e:
    # SystemExit, not an exception: traitlets would log an exception and start the hub without this file
    sys.exit(f"AIDC Hub cannot start because of its tenant config.\n{e}")

data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

settings = {
    "JupyterHub.bind_url": env("AIDC_BIND_URL", "http://127.0.0.1:8000"),
    "JupyterHub.hub_bind_url": f"http://127.0.0.1:{env('AIDC_HUB_PORT', '8081')}",
    "JupyterHub.db_url": f"sqlite:///{data_dir / 'jupyterhub.sqlite'}",
    "JupyterHub.cookie_secret_file": str(data_dir / "jupyterhub_cookie_secret"),
    "JupyterHub.pid_file": str(data_dir / "jupyterhub.pid"),
    "JupyterHub.spawner_class": env("AIDC_SPAWNER", "aidc-local"),
    "JupyterHub.authenticator_class": "aidc-local",
    "JupyterHub.allow_named_servers": True,
    "JupyterHub.load_groups": tenant_groups(platform),
    "JupyterHub.load_roles": tenant_roles(platform) + hub_roles() + ssh_hub_roles(),
    "JupyterHub.services": [
        hub_service(
            int(env("AIDC_QUOTAS_PORT", "8002")),
            {
                "AIDC_DATA_DIR": str(data_dir),
                "AIDC_TENANTS": str(Path(tenants_file).resolve()),
                "AIDC_CATALOG": str(Path(catalog_file).resolve()),
                "AIDC_DB_URL": db_url,
            },
        ),
        ssh_hub_service(
            {
                "AIDC_DATA_DIR": str(data_dir),
                "AIDC_SSH_PORT": env("AIDC_SSH_PORT", "2222"),
                "AIDC_SSH_BIND": env("AIDC_SSH_BIND", "127.0.0.1"),
                "AIDC_SSH_PROXY_URL": env("AIDC_BIND_URL", "http://127.0.0.1:8000"),
                "AIDC_SSH_ALLOW_TOKEN_PASSWORD": env("AIDC_SSH_ALLOW_TOKEN_PASSWORD", ""),
                "AIDC_SSH_WORKSPACE_USER": env("AIDC_SSH_WORKSPACE_USER", ""),
                "AIDC_SSH_CONFIG": env("AIDC_SSH_CONFIG", ""),
                **({"AIDC_SSH_SECRET": env("AIDC_SSH_SECRET", "")} if env("AIDC_SSH_SECRET") else {}),
            },
            api_token=env("AIDC_SSHGATEWAY_API_TOKEN"),
        ),
    ],
    "JupyterHub.template_paths": [str(paths.REPO / "hub_config" / "templates")],
    "JupyterHub.template_vars": {"aidc_local_accounts": True},
    "ConfigurableHTTPProxy.command": [
        env("AIDC_CHP", str(paths.REPO / "node_modules" / ".bin" / "configurable-http-proxy"))
    ],
    "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{env('AIDC_PROXY_API_PORT', '8001')}",
    "ConfigurableHTTPProxy.pid_file": str(data_dir / "proxy.pid"),
    "Spawner.default_url": "/lab",
    "Spawner.start_timeout": 120,
    "Spawner.http_timeout": 90,
    "Spawner.poll_interval": int(env("AIDC_POLL_INTERVAL", "30")),
    # as z2jh: restart a hub whose spawns keep failing; refusals (quota, no capacity) do not count
    "Spawner.consecutive_failure_limit": int(env("AIDC_CONSECUTIVE_FAILURE_LIMIT", "5")),
    "TenantSpawnerMixin.tenants_file": tenants_file,
    "TenantSpawnerMixin.catalog_file": catalog_file,
    "TenantSpawnerMixin.data_dir": str(data_dir),
    "TenantSpawnerMixin.db_url": db_url,
    "TenantSpawnerMixin.fake_gpus": env("AIDC_FAKE_GPUS", ""),
    "TenantKubeSpawner.hub_connect_url": env(
        "AIDC_HUB_CONNECT_URL", f"http://127.0.0.1:{env('AIDC_HUB_PORT', '8081')}"
    ),
    "TenantKubeSpawner.namespace_template": env("AIDC_NAMESPACE_TEMPLATE", "aidc-{tenant}"),
    "TenantKubeSpawner.home_storage_class": env("AIDC_HOME_STORAGE_CLASS", ""),
    "TenantKubeSpawner.home_capacity": env("AIDC_HOME_CAPACITY", "10Gi"),
    "TenantGroupsMixin.tenants_file": tenants_file,
    "TenantGroupsMixin.catalog_file": catalog_file,
    "LocalAccountAuthenticator.accounts_file": str(accounts_file),
    "Authenticator.admin_users": AccountStore(accounts_file).admins(),
}

auth = env("AIDC_AUTH", "local")
if auth not in ("local", "oidc"):
    sys.exit(f"AIDC_AUTH={auth!r} is not a login method: use local (accounts of `aidc user`) or oidc (docs/oidc.md).")
if auth == "oidc":
    missing = [v for v in ("AIDC_OIDC_ISSUER", "AIDC_OIDC_CLIENT_ID", "AIDC_OIDC_CLIENT_SECRET") if not env(v)]
    if missing:
        sys.exit(f"AIDC_AUTH=oidc needs {', '.join(missing)} (see docs/oidc.md); the hub was not started.")
    settings.update(
        {
            "JupyterHub.authenticator_class": "aidc-oidc",
            # the authenticator sets tenant groups and tenant-admin roles at each login (manage_groups,
            # manage_roles), so the config assigns none
            "JupyterHub.load_groups": {},
            "JupyterHub.load_roles": hub_roles() + ssh_hub_roles(),
            "JupyterHub.template_vars": {"aidc_local_accounts": False},
            "OIDCAuthenticator.issuer": env("AIDC_OIDC_ISSUER"),
            "OIDCAuthenticator.client_id": env("AIDC_OIDC_CLIENT_ID"),
            "OIDCAuthenticator.client_secret": env("AIDC_OIDC_CLIENT_SECRET"),
            "OIDCAuthenticator.oauth_callback_url": env(
                "AIDC_OIDC_CALLBACK_URL", env("AIDC_BIND_URL", "http://127.0.0.1:8000") + "/hub/oauth_callback"
            ),
            "OIDCAuthenticator.username_claim": env("AIDC_OIDC_USERNAME_CLAIM", "preferred_username"),
            "OIDCAuthenticator.groups_claim": env("AIDC_OIDC_GROUPS_CLAIM", "groups"),
            "OIDCAuthenticator.scope": env("AIDC_OIDC_SCOPES", "openid profile email groups").split(),
            "OIDCAuthenticator.platform_admin_groups": {
                g.strip() for g in env("AIDC_OIDC_ADMIN_GROUPS", "").split(",") if g.strip()
            },
            "OIDCAuthenticator.contact": env("AIDC_OIDC_CONTACT", "a platform admin"),
            "OIDCAuthenticator.login_service": env("AIDC_OIDC_LOGIN_SERVICE", "your organisation's account"),
            "OIDCAuthenticator.tenants_file": tenants_file,
            "OIDCAuthenticator.catalog_file": catalog_file,
            "Authenticator.admin_users": {u.strip() for u in env("AIDC_OIDC_ADMIN_USERS", "").split(",") if u.strip()},
        }
    )

for key, value in settings.items():
    section, trait = key.split(".")
    setattr(c[section], trait, value)
