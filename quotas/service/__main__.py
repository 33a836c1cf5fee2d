"""``python -m quotas.service``: how the hub runs the quotas service."""

from .app import main

if __name__ == "__main__":
    main()
