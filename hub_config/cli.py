"""``aidc``: the platform operator's command.

    aidc init                 create the data directory and the first admin account
    aidc user add NAME        create a local account and print its generated password
    aidc user passwd NAME     set a new generated password
    aidc user remove NAME     delete a local account
    aidc user list            list local accounts
    aidc check-config [FILE]  validate tenants.yaml against the image catalog
    aidc gpus                 show this machine's GPU inventory
    aidc reconcile            create/update every tenant's Kubernetes namespace and quota

Exit codes: 0 done, 1 refused (the message says why), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from quotas import paths
from quotas.loader import USER_PATTERN, ConfigError, load_platform
from spawner.gpus import InventoryError, detect_inventory

from .auth import AccountError, AccountStore, generate_password

ADMIN = "admin"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or paths.data_dir()).resolve()


def _store(args: argparse.Namespace) -> AccountStore:
    return AccountStore(_data_dir(args) / "accounts.json")


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise AccountError("The password read from standard input is shorter than 8 characters.")
        return password, False
    return generate_password(), True


def cmd_init(args: argparse.Namespace) -> int:
    data = _data_dir(args)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data, 0o700)
    store = _store(args)
    saved = data / "admin-password"
    if ADMIN in store.read():
        where = f" (saved in {saved})" if saved.exists() else ""
        print(f"Log in at {args.url} as '{ADMIN}' with the password created on the first run{where}.")
        return 0
    password = generate_password()
    store.add(ADMIN, password, admin=True)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    print("Created the platform admin account (shown once; also saved, readable only by you, in")
    print(f"{saved}):\n")
    print(f"    URL:       {args.url}")
    print(f"    username:  {ADMIN}")
    print(f"    password:  {password}\n")
    print("Create accounts for people with:  .venv/bin/aidc user add alice")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).add(args.name, password, admin=args.admin)
    print(f"Created account {args.name!r}{' (platform admin)' if args.admin else ''}.")
    if generated:
        print(f"Password: {password}")
    _warn_if_in_no_tenant(args.name)
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = _new_password(args)
    _store(args).set_password(args.name, password)
    print(f"New password for {args.name!r}" + (f": {password}" if generated else " set."))
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name)
    print(f"Removed account {args.name!r}. Their running servers keep running until stopped from the admin page.")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    for name, account in sorted(_store(args).read().items()):
        print(f"{name}{'  (admin)' if account.get('admin') else ''}")
    return 0


def _warn_if_in_no_tenant(name: str) -> None:
    try:
        config = load_platform(_tenants_file(None), _catalog_file(None))
    except ConfigError:
        return
    tenants = [t.id for t in config.tenants_of(name)]
    if tenants:
        print(f"Member of: {', '.join(tenants)}.")
    else:
        print(
            f"Note: {name!r} is in no tenant of {config.source}; add them under a tenant's members to let them start servers."
        )


def _tenants_file(value: str | None) -> str:
    return value or paths.tenants_file()


def _catalog_file(value: str | None) -> str:
    return value or paths.catalog_file()


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(args.catalog))
    print(
        f"{config.source}: OK ({len(config.tenants)} tenants, {len(config.profiles)} profiles,"
        f" {len(config.gpu_types)} GPU types)"
    )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    config = load_platform(_tenants_file(args.file), _catalog_file(None))
    gpus = detect_inventory(os.environ.get("AIDC_FAKE_GPUS", ""), config.gpu_types)
    if not gpus:
        print("No GPUs: nvidia-smi is not installed and AIDC_FAKE_GPUS is empty.")
    for g in gpus:
        print(f"{g.index}\t{g.type}\t{g.name}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes import config as kube_config

    from spawner.reconciler import TenantReconciler

    platform = load_platform(_tenants_file(args.file), _catalog_file(None))
    if args.kubeconfig:
        kube_config.load_kube_config(config_file=args.kubeconfig)
    else:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
    reconciler = TenantReconciler(
        client.ApiClient(),
        platform,
        namespace_template=args.namespace_template,
        hub_namespace=args.hub_namespace,
        hub_service_account=args.hub_service_account,
    )
    for line in reconciler.reconcile().lines():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidc", description="AIDC Hub operator command")
    parser.add_argument("--data-dir", help="state directory (default: $AIDC_DATA_DIR or .aidc)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the data directory and the first admin account")
    p.add_argument("--url", default=os.environ.get("AIDC_BIND_URL", "http://127.0.0.1:8000"))
    p.set_defaults(func=cmd_init)

    user = sub.add_parser("user", help="manage local accounts").add_subparsers(dest="action", required=True)
    for action, func, text in (
        ("add", cmd_user_add, "create an account and print its generated password"),
        ("passwd", cmd_user_passwd, "set a new password"),
        ("remove", cmd_user_remove, "delete an account"),
    ):
        p = user.add_parser(action, help=text)
        p.add_argument("name", type=_username)
        if action != "remove":
            p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        if action == "add":
            p.add_argument("--admin", action="store_true", help="make the account a platform admin")
        p.set_defaults(func=func)
    user.add_parser("list", help="list accounts").set_defaults(func=cmd_user_list)

    p = sub.add_parser("check-config", help="validate tenants.yaml")
    p.add_argument("file", nargs="?", help="tenants.yaml (default: $AIDC_TENANTS or the example)")
    p.add_argument("--catalog", help="image catalog (default: images/catalog.yaml)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("gpus", help="show this machine's GPU inventory")
    p.add_argument("--file", help="tenants.yaml that declares the GPU types")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("reconcile", help="create/update every tenant's namespace, quota, policies and hub access")
    p.add_argument("--file", help="tenants.yaml (default: $AIDC_TENANTS or the example)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--namespace-template", default="aidc-{tenant}")
    p.add_argument("--hub-namespace", default="aidc", help="namespace the hub runs in")
    p.add_argument("--hub-service-account", default="hub", help="the hub's service account")
    p.set_defaults(func=cmd_reconcile)
    return parser


def _username(value: str) -> str:
    if not USER_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a valid username: use lower-case letters, digits and . _ @ + - (starting with a letter or digit)"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (AccountError, ConfigError, InventoryError) as e:
        print(f"aidc: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
