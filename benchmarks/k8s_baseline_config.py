# Hub config of benchmarks/spawn_k8s.py: the production config, then what a spawn storm needs.
#
# Loaded as `jupyterhub -f benchmarks/k8s_baseline_config.py` for both variants:
#   AIDC_BENCH_USERS    N, the people spawning at once: JupyterHub's concurrent_spawn_limit
#                       (default 100, then 429) and the API page size (one GET lists everyone);
#                       the POST that starts a server answers when it is ready (slow_spawn_timeout)
#   AIDC_BENCH_SPAWNER  aidc (the production TenantKubeSpawner, `aidc-kube`) or stock
#
# `stock` is the baseline: KubeSpawner 7 as it ships, with one static profile (a profile_list of
# one entry) that writes by hand the pod TenantKubeSpawner builds for the `cpu` profile of the
# tenant `bench` in the tenants file the benchmark generates (1 CPU, 2Gi, image `base`, /dev/shm
# of half the memory, the home PVC, the restricted security context). The benchmark compares the
# pods of both variants and reports any difference.
import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

load_subconfig(str(Path(__file__).resolve().parents[1] / "hub_config" / "jupyterhub_config.py"))  # noqa: F821

users = int(os.environ["AIDC_BENCH_USERS"])
variant = os.environ.get("AIDC_BENCH_SPAWNER", "aidc")

settings = {
    "JupyterHub.concurrent_spawn_limit": users,
    # the benchmark counts failed spawns itself; a hub that exits after five would end the run
    "Spawner.consecutive_failure_limit": 0,
    "JupyterHub.api_page_default_limit": max(users, 50),
    "JupyterHub.api_page_max_limit": max(users, 200),
    # the benchmark tears the whole cluster down; N pod deletions at hub exit are not measured
    "JupyterHub.cleanup_servers": False,
    # POST .../server answers 201 when the server is ready (not 202 after 10 s): the benchmark
    # reads each spawn's end from its own answer instead of polling the hub
    "JupyterHub.tornado_settings": {"slow_spawn_timeout": 900},
}

if variant == "stock":
    # A one-entry profile_list, as a z2jh operator writes it; the API body is {"profile": "cpu"}.
    tenant, profile, namespace = "bench", "cpu", "aidc-bench"
    memory = 2 * 2**30
    settings |= {
        "JupyterHub.spawner_class": "kubespawner.KubeSpawner",  # KubeSpawner registers no entry point
        "KubeSpawner.namespace": namespace,
        "KubeSpawner.hub_connect_url": c.TenantKubeSpawner.hub_connect_url,
        "KubeSpawner.profile_list": [
            {
                "display_name": "CPU only",
                "slug": profile,
                "default": True,
                "kubespawner_override": {
                    "image": "aidc/base:2026.11",
                    "cpu_guarantee": 1.0,
                    "cpu_limit": 1.0,
                    "mem_guarantee": memory,
                    "mem_limit": memory,
                    "volumes": [
                        {"name": "home", "persistentVolumeClaim": {"claimName": "home-{username}"}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(memory // 2)}},
                    ],
                    "volume_mounts": [
                        {"name": "home", "mountPath": "/home/jovyan"},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                    ],
                    "extra_labels": {"aidc.io/tenant": tenant, "aidc.io/profile": profile},
                },
            }
        ],
        "KubeSpawner.storage_pvc_ensure": True,
        "KubeSpawner.pvc_name_template": "home-{username}",
        "KubeSpawner.storage_capacity": c.TenantKubeSpawner.home_capacity,
        "KubeSpawner.storage_class": c.TenantKubeSpawner.home_storage_class,
        "KubeSpawner.slug_scheme": "safe",
        "KubeSpawner.automount_service_account_token": False,
        "KubeSpawner.uid": 1000,
        "KubeSpawner.fs_gid": 100,
        "KubeSpawner.allow_privilege_escalation": False,
        "KubeSpawner.container_security_context": {
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "KubeSpawner.pod_security_context": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
elif variant != "aidc":
    raise SystemExit(f"AIDC_BENCH_SPAWNER must be aidc or stock, not {variant!r}")

for key, value in settings.items():
    section, trait = key.split(".")
    setattr(c[section], trait, value)
