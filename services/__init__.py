"""What the platform's services share: their life as processes the hub starts
(:mod:`services.lifecycle`, used by the quotas service and the SSH gateway)."""
