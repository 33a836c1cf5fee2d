"""Tenants, profiles and ceilings; the pure admission policy; usage and the ledger."""
