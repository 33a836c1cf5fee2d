"""JupyterHub's own fixed English that its pages show people, for the catalogs (issue 19).

JupyterHub passes these to its templates as values (the login page's ``login_error``, the error
page's status, a spawn's progress events); the templates say them with ``{{ _(message) }}``
(:mod:`hub_config.language`), which finds them in the ``hub`` catalog because they are listed here.
A message JupyterHub builds with a value in it (``No such user: alice``) is shown as it is.
Each is JupyterHub 6.1's text exactly: tests/unit/test_hub_language.py compares them with it.
"""

from __future__ import annotations

from i18n import N_

# jupyterhub/handlers/login.py: the login form's refusals
LOGIN = (
    N_("Invalid username or password"),
    N_("Login form invalid or expired. Try again."),
)

# jupyterhub/handlers/base.py ``reasons``: a spawn that failed or timed out, on the error page
REASONS = {
    "timeout": N_("Failed to reach your server.  Please try again later.  Contact admin if the issue persists."),
    "error": N_("Failed to start your server on the last attempt.    Please contact admin if the issue persists."),
}

# the error page's heading when JupyterHub gives no message of its own: http.client.responses
STATUS = {
    400: N_("Bad Request"),
    401: N_("Unauthorized"),
    403: N_("Forbidden"),
    404: N_("Not Found"),
    405: N_("Method Not Allowed"),
    409: N_("Conflict"),
    422: N_("Unprocessable Entity"),
    429: N_("Too Many Requests"),
    500: N_("Internal Server Error"),
    502: N_("Bad Gateway"),
    503: N_("Service Unavailable"),
    504: N_("Gateway Timeout"),
}

# jupyterhub/spawner.py and apihandlers/users.py: a spawn's progress events without a value
PROGRESS = (
    N_("Server requested"),
    N_("Spawning server..."),
    N_("Spawn failed"),
    N_("Spawn cancelled"),
)

# jupyterhub/handlers: other refusals on the hub's pages
OTHER = (
    N_("Named servers are not enabled."),
    N_("No access to resources or resources not found"),
    N_("Unknown HTTP Error"),
)

KNOWN = frozenset((*LOGIN, *REASONS.values(), *STATUS.values(), *PROGRESS, *OTHER))
