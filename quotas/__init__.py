"""Tenants, profiles and ceilings; the pure admission policy; the quotas store (reservations, ledger, limits) and service."""
