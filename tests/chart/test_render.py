"""The chart without a cluster: its schema, `helm lint --strict`, `helm template`, typos, and the
hub config it renders, loaded the way the hub pod loads it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from traitlets.config.loader import PyFileConfigLoader

from quotas.loader import ConfigError, load_catalog, load_platform, parse_platform
from spawner.kube_objects import TENANT_LABEL, WORKSPACE_SSHD_PORT
from tests.chart.conftest import CHART, PRODUCTION, REPO, Helm, find
from tests.platform_variants import ACCEPTED, REFUSED, Variant

GENERATOR = REPO / "helm" / "tools" / "generate_json_schema.py"
TENANTS_SCHEMA = REPO / "quotas" / "tenants.schema.json"
VALUES = {"default": None, "production": PRODUCTION}


def _values(name: str) -> tuple[Path, ...]:
    path = VALUES[name]
    return (path,) if path else ()


def test_values_schema_json_is_generated_from_the_yaml() -> None:
    proc = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_schema_generator_refuses_undocumented_or_open_objects(tmp_path: Path) -> None:
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    schema["properties"]["platform"]["$ref"] = str(TENANTS_SCHEMA)  # it is relative to the chart
    del schema["properties"]["hub"]["properties"]["pollInterval"]["description"]
    del schema["properties"]["ingress"]["additionalProperties"]
    bad = tmp_path / "schema.yaml"
    bad.write_text(yaml.safe_dump(schema))
    out = tmp_path / "schema.json"
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--schema", str(bad), "--output", str(out)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert ".hub.pollInterval: no description" in proc.stderr
    assert ".ingress: an object without additionalProperties: false" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict(helm: Helm, name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for v in _values(name):
        args += ["--values", str(v)]
    proc = helm.run(*args)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", VALUES)
def test_template_renders_every_component(helm: Helm, name: str) -> None:
    objects = helm.objects(*_values(name))
    for kind, obj in [
        ("Deployment", "hub"),
        ("Deployment", "proxy"),
        ("Deployment", "sshgateway"),
        ("Service", "hub"),
        ("Service", "proxy-api"),
        ("Service", "proxy-public"),
        ("Service", "sshgateway"),
        ("ServiceAccount", "hub"),
        ("ServiceAccount", "sshgateway"),
        ("ServiceAccount", "aidc-reconciler"),
        ("ClusterRole", "aidc-reconciler-aidc"),
        ("ClusterRole", "aidc-hub-watch-aidc"),
        ("ClusterRoleBinding", "aidc-hub-watch-aidc"),
        ("Job", "aidc-reconcile"),
        ("CronJob", "aidc-reconcile"),
        ("Secret", "hub"),
        ("Secret", "sshgateway"),
        ("ConfigMap", "hub"),
    ]:
        find(objects, kind, obj)
    # port 22 reaches the gateway's port
    ssh = find(objects, "Service", "sshgateway")["spec"]
    assert ssh["type"] == "LoadBalancer" and ssh["ports"] == [
        {"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}
    ]
    # the proxy is the same configurable-http-proxy release as the embedded mode
    chp = find(objects, "Deployment", "proxy")["spec"]["template"]["spec"]["containers"][0]["image"]
    version = json.loads((REPO / "package.json").read_text())["dependencies"]["configurable-http-proxy"]
    assert chp == f"quay.io/jupyterhub/configurable-http-proxy:{version}"
    # nothing facing people holds a Kubernetes token
    for component in ("proxy", "sshgateway"):
        pod = find(objects, "Deployment", component)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", VALUES)
def test_rendered_platform_config_is_valid(helm: Helm, name: str, tmp_path: Path) -> None:
    data = find(helm.objects(*_values(name)), "ConfigMap", "hub")["data"]
    (tmp_path / "tenants.yaml").write_text(data["tenants.yaml"])
    catalog = REPO / "images" / "catalog.yaml"
    if "catalog.yaml" in data:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(data["catalog.yaml"])
    platform = load_platform(str(tmp_path / "tenants.yaml"), str(catalog))
    assert platform.tenants


@pytest.mark.parametrize("name", VALUES)
def test_the_gateway_reaches_the_hub_the_proxy_dns_and_workspaces_sshd_only(helm: Helm, name: str) -> None:
    spec = find(helm.objects(*_values(name)), "NetworkPolicy", "sshgateway")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app": "aidc-hub", "component": "hub"}}}], "ports": [{"port": 8081}]},
        {
            "to": [{"podSelector": {"matchLabels": {"app": "aidc-hub", "component": "proxy"}}}],
            "ports": [{"port": 8000}],
        },
        # the port the reconciler's policies open to the gateway in tenant namespaces: the same number
        {
            "to": [{"namespaceSelector": {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]}}],
            "ports": [{"port": WORKSPACE_SSHD_PORT, "protocol": "TCP"}],
        },
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        },
    ]


def test_host_key_is_an_ed25519_key_the_gateway_reads(helm: Helm) -> None:
    secret = find(helm.objects(), "Secret", "sshgateway")["data"]
    key = asyncssh.import_private_key(base64.b64decode(secret["ssh_host_ed25519_key"]))
    assert key.get_algorithm() == "ssh-ed25519"
    assert len(base64.b64decode(secret["ssh-secret"])) == 64


TYPOS = [
    ({"hub": {"imagee": {"name": "x"}}}, "at '/hub': additional properties 'imagee' not allowed"),
    ({"sshGateway": {"servce": {"port": 22}}}, "at '/sshGateway': additional properties 'servce' not allowed"),
    ({"databse": {"type": "postgresql"}}, "additional properties 'databse' not allowed"),
    ({"database": {"type": "postgres"}}, "at '/database/type'"),
    (
        {"auth": {"type": "oidc", "oidc": {"clientID": "x"}}},
        "at '/auth/oidc': additional properties 'clientID' not allowed",
    ),
]


@pytest.mark.parametrize(("values", "message"), TYPOS, ids=[m.split("'")[1] for _, m in TYPOS])
def test_a_typo_in_values_fails_with_the_key(helm: Helm, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(values))
    proc = helm.run("template", "aidc", str(CHART), "--values", str(f), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_a_typo_inside_a_tenant_fails_with_its_path(helm: Helm, tmp_path: Path) -> None:
    platform = yaml.safe_load((CHART / "values.yaml").read_text())["platform"]
    platform["tenants"][0]["quota"]["memroy"] = "1Ti"
    platform["tenants"][0]["quota"]["storage"] = "8Gb"
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump({"platform": platform}))
    proc = helm.run("template", "aidc", str(CHART), "--values", str(f), check=False)
    assert proc.returncode != 0
    assert "at '/platform/tenants/0/quota': additional properties 'memroy' not allowed" in proc.stderr
    assert "at '/platform/tenants/0/quota/storage': '8Gb' does not match pattern" in proc.stderr


# The chart and the hub read one schema (quotas/tenants.schema.json): a handful of the variants the
# unit tier checks with jsonschema, through real helm. An id ending in a newline is here only:
# Helm's regular expressions, like the loader's, end "$" at the end of the text.
HELM_VARIANTS = [
    v
    for v in [*ACCEPTED, *REFUSED]
    if v.name
    in {
        "as it is",
        "gpu-hours a number with a fraction",
        "gpu-hours a number in quotes",
        "cpu a whole number without quotes",
        "a count written 3.0",
        "a profile without display_name",
        "gpu-hours with a unit",
        "memory in Gb",
        "an admin twice",
        "culling never looks",
        "a GPU type name",
        "profiles empty",
        "the largest sensible values",
        "10^100 GPUs",
        "a profile with more GPUs than a node",
        "a quantity that overflows",
    }
] + [
    Variant("an id ending in a newline", lambda d: d["tenants"][0].update(id="demo\n"), "tenants[0].id", "not a valid")
]


@pytest.mark.parametrize("variant", HELM_VARIANTS, ids=[v.name for v in HELM_VARIANTS])
def test_helm_and_the_hub_accept_and_refuse_the_same_platform(helm: Helm, tmp_path: Path, variant: Variant) -> None:
    platform = variant.apply(yaml.safe_load((CHART / "values.yaml").read_text())["platform"])
    values = tmp_path / "platform.yaml"
    values.write_text(yaml.safe_dump({"platform": platform}))
    proc = helm.run("template", "aidc", str(CHART), "--values", str(values), check=False)
    catalog = REPO / "images" / "catalog.yaml"
    try:
        parse_platform(platform, load_catalog(catalog))
        hub: list[str] = []
    except ConfigError as e:
        hub = [str(p) for p in e.problems]
    if variant.path:
        assert proc.returncode != 0 and "don't meet the specifications of the schema" in proc.stderr, proc.stderr
        assert any(variant.path in p and variant.words in p for p in hub), hub
        return
    assert proc.returncode == 0, proc.stderr
    assert hub == []
    rendered = next(
        d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hub"
    )
    (tmp_path / "tenants.yaml").write_text(rendered["data"]["tenants.yaml"])
    assert load_platform(tmp_path / "tenants.yaml", catalog).tenants.keys() == {"demo"}


def test_postgresql_without_a_password_secret_fails_with_what_to_set(helm: Helm, tmp_path: Path) -> None:
    f = tmp_path / "pg.yaml"
    f.write_text(yaml.safe_dump({"database": {"type": "postgresql", "postgresql": {"host": "db"}}}))
    proc = helm.run("template", "aidc", str(CHART), "--values", str(f), check=False)
    assert proc.returncode != 0
    assert "database.postgresql.password.existingSecret: name the Secret" in proc.stderr


# -- the hub config the chart renders, loaded as the hub pod loads it -----------------------------


def _hub_config(helm: Helm, values: tuple[Path, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write the hub ConfigMap's files to tmp_path, set the hub container's environment (secrets
    with test values, the pod IP 10.1.2.3), and load jupyterhub_config.py with traitlets."""
    objects = helm.objects(*values)
    data = find(objects, "ConfigMap", "hub")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    container = find(objects, "Deployment", "hub")["spec"]["template"]["spec"]["containers"][0]
    secrets = {
        "JPY_COOKIE_SECRET": "ab" * 32,
        "CONFIGPROXY_AUTH_TOKEN": "proxy-token",
        "AIDC_SSHGATEWAY_API_TOKEN": "gateway-token",
        "AIDC_SSH_SECRET": "ssh-secret",
        "AIDC_DB_PASSWORD": "p@ss:/w rd",
        "AIDC_OIDC_CLIENT_SECRET": "oidc-secret",
        "AIDC_POD_IP": "10.1.2.3",
    }
    # the config file itself writes AIDC_DB_URL into os.environ: setenv first, so that the test's
    # end restores the variable (delenv of an absent one records nothing, and it would leak into
    # every hub the later tests start)
    for var in ("AIDC_DB_URL", "AIDC_CATALOG"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    for item in container["env"]:
        value = item.get("value", secrets.get(item["name"]))
        assert value is not None, f"no test value for {item}"
        value = value.replace("/etc/aidc", str(tmp_path)).replace("/srv/aidc", str(tmp_path / "data"))
        monkeypatch.setenv(item["name"], value)
    assert container["command"][:3] == ["jupyterhub", "-f", "/etc/aidc/jupyterhub_config.py"]
    # only paths, the login method, the pod's address and secrets are variables: every other
    # setting reaches the hub as a trait, from hub.json (docs/configuration.md)
    assert {item["name"] for item in container["env"]} <= HUB_VARIABLES | set(secrets)
    return PyFileConfigLoader("jupyterhub_config.py", str(tmp_path)).load_config()


HUB_VARIABLES = {"AIDC_CHART_VALUES", "AIDC_DATA_DIR", "AIDC_TENANTS", "AIDC_CATALOG", "AIDC_AUTH"}


def test_default_hub_config(helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _hub_config(helm, (), tmp_path, monkeypatch)
    assert c.JupyterHub.spawner_class == "aidc-kube"
    assert c.JupyterHub.hub_bind_url == "http://:8081"
    assert c.JupyterHub.hub_connect_url == "http://hub.aidc.svc:8081"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.api_url == "http://proxy-api.aidc.svc:8001"
    assert c.JupyterHub.authenticator_class == "aidc-local"
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'data' / 'jupyterhub.sqlite'}"
    assert c.TenantSpawnerMixin.db_url == f"sqlite:///{tmp_path / 'data' / 'quotas.sqlite'}"
    assert c.TenantKubeSpawner.hub_connect_url == "http://hub.aidc.svc:8081"
    # hub.pollInterval, hub.consecutiveFailureLimit and hub.spawner, as traits
    assert c.Spawner.poll_interval == 30 and c.Spawner.consecutive_failure_limit == 5
    assert c.JupyterHub.concurrent_spawn_limit == 2000 and c.TenantKubeSpawner.k8s_creates_in_flight == 16
    assert c.TenantKubeSpawner.watch_all_namespaces is True
    assert c.TenantKubeSpawner.namespace_template == "aidc-{tenant}"
    assert c.TenantKubeSpawner.home_storage_class == "" and c.TenantKubeSpawner.home_capacity == "10Gi"
    assert "public_url" not in c.JupyterHub  # publicUrl is empty
    services = {s["name"]: s for s in c.JupyterHub.services}
    # the quotas service: a hub-managed process the proxy reaches on the pod's address
    assert services["quotas"]["url"] == "http://10.1.2.3:8002"
    assert services["quotas"]["command"][1:3] == ["-m", "quotas.service"]
    assert "AIDC_PROMETHEUS_URL" not in services["quotas"]["environment"]  # no hub.prometheusUrl: no GPU-idle culling
    # the SSH gateway: its own Deployment, known to the hub by its token only
    assert services["sshgateway"] == {"name": "sshgateway", "display": False, "api_token": "gateway-token"}
    # workspaces read their own quotas through the proxy (the network policies let them reach it),
    # with a token that may open that service and no other
    assert c.Spawner.environment["AIDC_QUOTAS_URL"] == "http://proxy-public.aidc.svc:80/services/quotas/"
    assert "access:services!service=quotas" in c.Spawner.server_token_scopes
    assert not [s for s in c.Spawner.server_token_scopes if s.startswith("access:services") and "quotas" not in s]


def test_prometheus_url_reaches_the_quotas_service(helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = tmp_path / "prometheus.yaml"
    values.write_text(yaml.safe_dump({"hub": {"prometheusUrl": "http://prometheus-server.monitoring:9090"}}))
    (tmp_path / "hub").mkdir()
    c = _hub_config(helm, (values,), tmp_path / "hub", monkeypatch)
    quotas = next(s for s in c.JupyterHub.services if s["name"] == "quotas")
    # QuotasService.prometheus_url's default (quotas/service/app.py): the DCGM metrics for GPU-idle culling
    assert quotas["environment"]["AIDC_PROMETHEUS_URL"] == "http://prometheus-server.monitoring:9090"


def test_production_hub_config(helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _hub_config(helm, (PRODUCTION,), tmp_path, monkeypatch)
    server = "aidc:p%40ss%3A%2Fw%20rd@aidc-db.databases.svc:5432"
    assert c.JupyterHub.db_url == f"postgresql+psycopg://{server}/jupyterhub?sslmode=require"
    assert c.TenantSpawnerMixin.db_url == f"postgresql+psycopg://{server}/aidc?sslmode=require"
    quotas = next(s for s in c.JupyterHub.services if s["name"] == "quotas")
    assert quotas["environment"]["AIDC_DB_URL"] == f"postgresql+psycopg://{server}/aidc?sslmode=require"
    assert quotas["environment"]["AIDC_CATALOG"] == str(tmp_path / "catalog.yaml")
    assert c.JupyterHub.public_url == "https://hub.example.org"
    assert c.TenantKubeSpawner.home_storage_class == "ceph-rbd" and c.TenantKubeSpawner.home_capacity == "50Gi"
    # auth.oidc is the platform config's OIDC login (authenticators/oidc.py): auth.type is AIDC_AUTH,
    # the rest OIDCAuthenticator traits, the client secret from the Secret
    assert c.JupyterHub.authenticator_class == "aidc-oidc"
    oidc = c.OIDCAuthenticator
    assert oidc.issuer == "https://login.example.org/realms/aidc"
    assert oidc.client_id == "aidc-hub" and oidc.client_secret == "oidc-secret"
    assert oidc.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert oidc.username_claim == "preferred_username" and oidc.groups_claim == "groups"
    assert oidc.scope == ["openid", "profile", "email", "groups"]
    assert oidc.platform_admin_groups == {"platform-admins"}
    assert oidc.contact == "platform-team@example.org"
    assert oidc.login_service == "Example University SSO"


@pytest.mark.parametrize("name", VALUES)
def test_gateway_config(helm: Helm, name: str, tmp_path: Path) -> None:
    """The gateway Deployment's settings are SSHGateway traits in its ConfigMap, loaded with --config."""
    objects = helm.objects(*_values(name))
    container = find(objects, "Deployment", "sshgateway")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "python",
        "-m",
        "sshgateway",
        "--config",
        "/etc/aidc/sshgateway/sshgateway_config.py",
    ]
    assert {item["name"] for item in container["env"]} == {
        "AIDC_DATA_DIR",
        "AIDC_SSH_SECRET",
        "JUPYTERHUB_API_URL",
        "JUPYTERHUB_API_TOKEN",
    }
    (tmp_path / "sshgateway_config.py").write_text(
        find(objects, "ConfigMap", "sshgateway")["data"]["sshgateway_config.py"]
    )
    gateway = PyFileConfigLoader("sshgateway_config.py", str(tmp_path)).load_config().SSHGateway
    assert gateway.ip == "0.0.0.0" and gateway.port == 2222 and gateway.workspace_user == "jovyan"
    assert gateway.allow_token_password is False and gateway.audit_file == "/dev/stdout"
    if name == "production":
        assert gateway.proxy_url == "http://proxy-public.aidc.svc:80"
        assert gateway.public_url == "https://hub.example.org"
    else:
        assert "public_url" not in gateway  # the gateway's default: its proxy_url


def test_hub_refuses_to_start_without_its_database_password(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIDC_DB_PASSWORD", "")
    objects = helm.objects(PRODUCTION)
    data = find(objects, "ConfigMap", "hub")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("AIDC_CHART_VALUES", str(tmp_path / "hub.json"))
    with pytest.raises(SystemExit, match="database.type is postgresql but AIDC_DB_PASSWORD is empty"):
        PyFileConfigLoader("jupyterhub_config.py", str(tmp_path)).load_config()


def test_kueue_turns_on_the_queue_in_the_hub_and_the_reconciler(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = tmp_path / "kueue.yaml"
    values.write_text(
        yaml.safe_dump({"hub": {"spawner": {"kueue": True, "preemptionGrace": 600, "createsInFlight": 8}}})
    )
    objects = helm.objects(values)
    for kind in ("Job", "CronJob"):
        obj = find(objects, kind, "aidc-reconcile")
        pod = obj["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else obj["spec"]["template"]
        assert "--kueue" in pod["spec"]["containers"][0]["command"]
    rules = find(objects, "ClusterRole", "aidc-reconciler-aidc")["rules"]
    kueue = next(r for r in rules if r["apiGroups"] == ["kueue.x-k8s.io"])
    assert set(kueue["resources"]) == {"resourceflavors", "clusterqueues", "localqueues", "workloadpriorityclasses"}
    assert set(kueue["verbs"]) == {"get", "create", "patch"}  # no delete, no workloads
    policy = next(r for r in rules if r["apiGroups"] == ["admissionregistration.k8s.io"])
    assert policy["resourceNames"] == ["aidc-pods-through-kueue"]
    (tmp_path / "hub").mkdir()
    c = _hub_config(helm, (values,), tmp_path / "hub", monkeypatch)
    assert c.TenantKubeSpawner.kueue is True and c.TenantKubeSpawner.preemption_grace == 600
    assert c.TenantKubeSpawner.k8s_creates_in_flight == 8 and c.TenantKubeSpawner.watch_all_namespaces is True
    assert c.JupyterHub.concurrent_spawn_limit == 2000  # a storm waits in the hub's paced line, not 429
    # without it (the default) neither the flag nor the rights
    default = helm.objects()
    assert (
        "--kueue" not in find(default, "Job", "aidc-reconcile")["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    assert not [r for r in find(default, "ClusterRole", "aidc-reconciler-aidc")["rules"] if "kueue" in str(r)]


def test_the_hub_watches_every_tenant_namespace_read_only_unless_told_not_to(helm: Helm, tmp_path: Path) -> None:
    rules = find(helm.objects(), "ClusterRole", "aidc-hub-watch-aidc")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]}]
    binding = find(helm.objects(), "ClusterRoleBinding", "aidc-hub-watch-aidc")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "aidc"}]
    values = tmp_path / "per-namespace.yaml"
    values.write_text(yaml.safe_dump({"hub": {"spawner": {"watchAllNamespaces": False}}}))
    objects = helm.objects(values)
    assert not [o for o in objects if o["metadata"]["name"].startswith("aidc-hub-watch")]


def test_gateway_workers_and_its_writable_throttle_file(helm: Helm, tmp_path: Path) -> None:
    """sshGateway.workers becomes SSHGateway.workers; unset, the gateway counts the pod's CPU limit.
    The workers' shared throttle file is in an emptyDir: the data dir is the read-only Secret."""
    values = tmp_path / "workers.yaml"
    values.write_text(yaml.safe_dump({"sshGateway": {"workers": 4}}))
    for extra, expected in (((), None), ((values,), 4)):
        objects = helm.objects(*extra)
        (tmp_path / "sshgateway_config.py").write_text(
            find(objects, "ConfigMap", "sshgateway")["data"]["sshgateway_config.py"]
        )
        gateway = PyFileConfigLoader("sshgateway_config.py", str(tmp_path)).load_config().SSHGateway
        assert gateway.get("workers") == expected
        assert gateway.throttle_file == "/var/lib/sshgateway/ssh-throttle.sqlite"
        pod = find(objects, "Deployment", "sshgateway")["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert not mounts["/var/lib/sshgateway"].get("readOnly")
        assert {"name": mounts["/var/lib/sshgateway"]["name"], "emptyDir": {}} in pod["volumes"]
