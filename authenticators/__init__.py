"""How people log in: local accounts (:mod:`authenticators.local`, entry point ``aidc-local``) or an
OpenID Connect provider (:mod:`authenticators.oidc`, ``aidc-oidc``); both keep each person's tenant
groups and tenant-admin roles in the hub equal to ``tenants.yaml``."""
