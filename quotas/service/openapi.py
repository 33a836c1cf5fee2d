"""The OpenAPI 3.1 description of the quotas service, written by hand, served at ``api/openapi.json``.

A hub test checks that every route of the service's API is described here and that nothing here
is missing from the routes (:func:`openapi_path` turns a route into its OpenAPI path).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .base import BaseHandler


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str = "", required: bool = False
) -> dict[str, Any]:
    """A parameter of an operation, ``where`` being ``path`` (always required) or ``query``."""
    param: dict[str, Any] = {"name": name, "in": where}
    if required or where == "path":
        param["required"] = True
    param["schema"] = schema
    return {**param, "description": description} if description else param


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (bad JSON, bad dates, unknown parameter or kind); `problems` lists every reason",
        403: "Not logged in, or the caller may not do this (also for tenants the caller may not see)",
        404: "No such tenant (platform admins only) or no such limit",
        412: "If-Match / If-None-Match did not hold: someone changed the limit since the caller read it;"
        " nothing was written",
        422: "The limit cannot be stored; `problems` lists every reason, nothing was written",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


ETAG_HEADER = {
    "description": "The limit's entity tag; send it back in If-Match to write only over what you read",
    "schema": {"type": "string"},
}
QUANTITY = {"type": ["string", "null"], "description": 'An exact quantity, e.g. "16", "500m", "64Gi"; null: no limit'}
HOURS = {"type": "string", "description": 'Hours, exact to 1/10,000, e.g. "12.5"'}
USED_HOURS = {
    **HOURS,
    "description": "GPU-hours used: GPU-hours held weighted by the GPUs' utilization as the quotas service's culler"
    " read it each round (a gap between readings counts two culling intervals at most; no data counts 0). A run"
    " that spans days or months shares its use among them as its held hours. Exact to 1/10,000",
}
EFFICIENCY = {
    "type": ["string", "null"],
    "description": 'gpu_used_hours over gpu_hours, to 1/10,000 (e.g. "0.25": a quarter of the GPU time held was'
    " used); null when no GPU-hours were held",
}
UTILIZATION = {
    "type": "array",
    "description": "The server's GPU utilization over the last hour, oldest first: one point per culling round that"
    " read its GPUs (at most 120), the mean over its GPUs; [] without data (no GPUs, no source of GPU use)",
    "items": {
        "type": "object",
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "percent": {"type": "number", "description": "0-100, to a tenth"},
        },
    },
}
DATE = {"type": "string", "format": "date"}
GPUS = {
    "type": "object",
    "additionalProperties": {"type": "integer", "minimum": 0},
    "description": 'GPUs per type, e.g. {"H100": 2}',
}
TENANT_PARAM = _param("tenant", "path", {"type": "string"}, "Tenant id (tenants.yaml)")
KIND_PARAM = _param(
    "kind",
    "path",
    {"type": "string", "enum": ["users", "groups"]},
    "Whose limit: a user's (caps that person's servers) or a JupyterHub group's (caps its members together)",
)
NAME_PARAM = _param("name", "path", {"type": "string"}, "User or group name")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["status", "message", "problems"],
        "properties": {
            "status": {"type": "integer"},
            "message": {
                "type": "string",
                "description": "What went wrong and what to do, for people, in the request's language (the"
                " aidc-lang cookie, else the caller's saved choice, else Accept-Language, else English)",
            },
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Every reason, one per item, in the same language",
            },
        },
    },
    "LimitBody": {
        "type": "object",
        "additionalProperties": False,
        "description": "A limit inside the tenant's ceiling. Missing or null fields: no limit beyond the ceiling."
        " tenant/kind/name may be repeated (as GET returns them) but must match the URL.",
        "properties": {
            "gpus": GPUS,
            "servers": {"type": ["integer", "null"], "minimum": 0},
            "cpu": {"type": ["string", "number", "null"], "description": 'CPUs, e.g. "16" or "500m"'},
            "memory": {"type": ["string", "null"], "description": 'Memory, e.g. "64Gi"'},
            "gpu_hours": {"type": ["string", "number", "null"], "description": "GPU-hours per calendar month (UTC)"},
            "tenant": {"type": "string"},
            "kind": {"type": "string", "enum": ["user", "group"]},
            "name": {"type": "string"},
        },
    },
    "Limit": {
        "type": "object",
        "required": ["tenant", "kind", "name", "gpus", "servers", "cpu", "memory", "gpu_hours"],
        "properties": {
            "tenant": {"type": "string"},
            "kind": {"type": "string", "enum": ["user", "group"]},
            "name": {"type": "string"},
            "gpus": GPUS,
            "servers": {"type": ["integer", "null"]},
            "cpu": QUANTITY,
            "memory": QUANTITY,
            "gpu_hours": {"type": ["string", "null"]},
        },
    },
    "Limits": {
        "type": "object",
        "required": ["tenant", "limits"],
        "properties": {"tenant": {"type": "string"}, "limits": {"type": "array", "items": _ref("Limit")}},
    },
    "Ceiling": {
        "type": "object",
        "description": "What the platform grants the tenant (tenants.yaml); null: no limit",
        "properties": {
            "gpus": GPUS,
            "servers": {"type": ["integer", "null"]},
            "servers_per_user": {"type": ["integer", "null"]},
            "cpu": QUANTITY,
            "memory": QUANTITY,
            "storage": QUANTITY,
            "gpu_hours_per_month": {"type": ["string", "null"]},
        },
    },
    "InUse": {
        "type": "object",
        "description": "What the tenant's servers hold now, and its GPU-hours this month",
        "properties": {
            "gpus": GPUS,
            "servers": {"type": "integer"},
            "cpu": {"type": "string"},
            "memory": {"type": "string"},
            "gpu_hours": HOURS,
            "period": {"type": "string", "description": 'e.g. "November 2026"'},
            "period_resets": DATE,
        },
    },
    "Profile": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "display_name": {"type": "string"},
            "gpus": GPUS,
            "cpu": {"type": "string"},
            "memory": {"type": "string"},
            "image": {"type": "string"},
        },
    },
    "Tenant": {
        "type": "object",
        "required": ["id", "display_name", "kind", "role", "admins", "profiles", "ceiling", "in_use"],
        "properties": {
            "id": {"type": "string"},
            "display_name": {"type": "string"},
            "kind": {"type": "string", "enum": ["startup", "university", "company"]},
            "role": {"type": "string", "enum": ["admin", "platform-admin", "member"]},
            "admins": {"type": "array", "items": {"type": "string"}},
            "profiles": {"type": "array", "items": _ref("Profile")},
            "ceiling": _ref("Ceiling"),
            "in_use": _ref("InUse"),
        },
    },
    "Server": {
        "type": "object",
        "description": "A server charged to the tenant now (its reservation)",
        "properties": {
            "user": {"type": "string"},
            "server": {"type": "string", "description": "Server name; empty for the default server"},
            "profile": {"type": "string"},
            "gpus": GPUS,
            "borrowed": {
                **GPUS,
                "description": "The part of `gpus` borrowed from idle GPUs of other tenants (per type; {} if none):"
                " their owner may take them back, by stopping the server after a warning",
            },
            "cpu": {"type": "string"},
            "memory": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "started": {"type": "string", "format": "date-time"},
            "gpu_hours": HOURS,
            "gpu_used_hours": USED_HOURS,
            "efficiency": EFFICIENCY,
            "utilization": UTILIZATION,
            "run": {"type": "string", "description": "Ledger run id"},
            "stop_at": {
                "type": "string",
                "format": "date-time",
                "description": "Only for a server to be stopped soon: preempted (its borrowed GPUs go back) or its GPUs idle; when it is stopped",
            },
            "stop_note": {"type": "string", "description": "Only with stop_at: why it is stopped, for people"},
        },
    },
    "Servers": {
        "type": "object",
        "properties": {"tenant": {"type": "string"}, "servers": {"type": "array", "items": _ref("Server")}},
    },
    "UsageRow": {
        "type": "object",
        "properties": {
            "subject": {"type": "string", "description": "User, group or tenant (see `by`)"},
            "day": {"type": ["string", "null"], "format": "date", "description": "With daily=1; else null"},
            "gpu_hours": HOURS,
            "borrowed_gpu_hours": {
                **HOURS,
                "description": "The part of gpu_hours on GPUs borrowed from other tenants, exact to 1/10,000",
            },
            "gpu_used_hours": USED_HOURS,
            "efficiency": EFFICIENCY,
            "cpu_hours": HOURS,
            "runs": {"type": "integer", "description": "Runs that ended in the range (or that day)"},
        },
    },
    "UsageReport": {
        "type": "object",
        "properties": {
            "tenant": {"type": "string"},
            "from": DATE,
            "to": {"type": "string", "format": "date", "description": "Exclusive"},
            "by": {"type": "string", "enum": ["user", "group", "tenant"]},
            "daily": {"type": "boolean"},
            "rows": {"type": "array", "items": _ref("UsageRow")},
            "total": {
                "type": "object",
                "properties": {
                    "gpu_hours": HOURS,
                    "borrowed_gpu_hours": HOURS,
                    "gpu_used_hours": USED_HOURS,
                    "efficiency": EFFICIENCY,
                    "cpu_hours": HOURS,
                    "runs": {"type": "integer"},
                },
            },
        },
    },
    "MyTenant": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "display_name": {"type": "string"},
            "kind": {"type": "string"},
            "role": {"type": "string", "enum": ["admin", "platform-admin", "member"]},
            "admins": {"type": "array", "items": {"type": "string"}},
            "limits": {
                "type": "array",
                "items": _ref("Limit"),
                "description": "The limits that apply to the caller: their own and their groups'",
            },
            "usage": {
                "type": "object",
                "description": "The caller's own hours this month (UTC)",
                "properties": {
                    "gpu_hours": HOURS,
                    "gpu_used_hours": USED_HOURS,
                    "efficiency": EFFICIENCY,
                    "cpu_hours": HOURS,
                    "period": {"type": "string"},
                    "period_resets": DATE,
                },
            },
            "servers": {"type": "array", "items": _ref("Server"), "description": "The caller's own servers"},
            "queued": {
                "type": "array",
                "items": _ref("Queued"),
                "description": "The caller's own GPU requests waiting in the tenant's queue, in line order",
            },
            "ceiling": _ref("Ceiling"),
            "in_use": _ref("InUse"),
        },
    },
    "Me": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "locale": {
                "type": ["string", "null"],
                "enum": ["en", "ko", None],
                "description": "The language the caller chose (on any page's switcher); null: never chose",
            },
            "admin": {"type": "boolean", "description": "A platform admin (JupyterHub admin)"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "tenants_admin": {"type": "array", "items": {"type": "string"}},
            "tenants": {
                "type": "array",
                "items": _ref("MyTenant"),
                "description": "The caller's tenants (every tenant for platform admins)",
            },
        },
    },
}

SCHEMAS["MyWorkspace"] = {
    "type": "object",
    "description": "One of the caller's own servers, as its JupyterLab extension shows it (the caller's data only)",
    "required": [
        "user",
        "server",
        "running",
        "tenant",
        "profile",
        "gpus",
        "borrowed",
        "budget",
        "notices",
        "locale",
        "texts",
    ],
    "properties": {
        "user": {"type": "string", "description": "The caller (the token's owner)"},
        "server": {"type": "string", "description": "Server name; empty for the default server"},
        "running": {
            "type": "boolean",
            "description": "Whether the ledger has an open run of this server of the caller's; if not, tenant,"
            " profile and budget are null",
        },
        "tenant": {
            "type": ["object", "null"],
            "properties": {"id": {"type": "string"}, "display_name": {"type": "string"}},
            "description": "The tenant the server is charged to (the hub's record, written at admission)",
        },
        "profile": {"type": ["string", "null"]},
        "gpus": {**GPUS, "description": "The GPUs the server holds, per type"},
        "borrowed": {**GPUS, "description": "The part of `gpus` borrowed from other tenants ({} if none)"},
        "budget": {
            "type": ["object", "null"],
            "description": "The GPU-hour budgets this month that count against the caller's servers in the tenant",
            "properties": {
                "gpu_hours_left": {
                    "type": ["string", "null"],
                    "description": "The least left of all budgets below; null: no GPU-hour budget applies",
                },
                "period": {"type": "string", "description": 'e.g. "November 2026"'},
                "period_resets": DATE,
                "budgets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string", "enum": ["tenant", "user", "group"]},
                            "subject": {"type": "string"},
                            "gpu_hours": HOURS,
                            "used": HOURS,
                            "left": HOURS,
                        },
                    },
                    "description": "The tenant's ceiling, then the caller's own and their groups' limits",
                },
                "spent": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The budgets used up (GPU servers cannot start; the tenant may stop running ones),"
                    " each said for people",
                },
            },
        },
        "notices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "level": {"type": "string", "enum": ["warning", "info"]},
                    "text": {"type": "string"},
                },
            },
            "description": "What the hub's pages tell the caller about their servers (to be stopped, and why"
            " recent ones stopped), most urgent first",
        },
        "locale": {
            "type": "string",
            "enum": ["en", "ko"],
            "description": "The language of every sentence of this answer (notices, spent, texts): the"
            " language of the request (the caller's saved choice for a workspace's token)",
        },
        "texts": {
            "type": "object",
            "description": "Everything the JupyterLab extension shows, said for people in `locale`",
            "properties": {
                "status": {"type": "string", "description": 'The status bar, e.g. "lab · 2 × H100 · 120.0 GPU-h left"'},
                "summary": {"type": "array", "items": {"type": "string"}, "description": "Its tooltip's lines"},
                "spent": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "One warning per used-up budget",
                },
                "details": {"type": "string"},
                "details_caption": {"type": "string"},
                "dialog_title": {"type": "string"},
                "unavailable": {"type": "string", "description": "The status bar while the service cannot be reached"},
            },
        },
    },
}

SCHEMAS["Queued"] = {
    "type": "object",
    "description": "A GPU request waiting in its tenant's queue (issue 14)",
    "required": [
        "user",
        "server",
        "profile",
        "gpu_type",
        "gpu_count",
        "may_borrow",
        "enqueued",
        "position",
        "length",
        "reason",
    ],
    "properties": {
        "user": {"type": "string"},
        "server": {"type": "string", "description": "Server name; empty for the default server"},
        "profile": {"type": "string"},
        "gpu_type": {"type": "string"},
        "gpu_count": {"type": "integer", "minimum": 1},
        "may_borrow": {"type": "boolean", "description": "Whether it may start on GPUs borrowed from other tenants"},
        "enqueued": {"type": "string", "format": "date-time", "description": "When it joined the queue"},
        "position": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Its place in its tenant's line (1: next); null for a moment after it joined",
        },
        "length": {"type": ["integer", "null"], "description": "How many wait in that line"},
        "reason": {
            "type": ["string", "null"],
            "description": "Why it waits, for people, e.g. 'waiting for 2 × H100: tenant lab uses 4 of 4;"
            " you are 2nd of 2'",
        },
    },
}
SCHEMAS["Queue"] = {
    "type": "object",
    "required": ["tenant", "queue"],
    "properties": {"tenant": {"type": "string"}, "queue": {"type": "array", "items": _ref("Queued")}},
}

SCHEMAS["SshKey"] = {
    "type": "object",
    "required": ["id", "title", "type", "public_key", "fingerprint", "created", "last_used"],
    "properties": {
        "id": {"type": "integer"},
        "title": {"type": "string", "description": "The title given, else the key's comment"},
        "type": {
            "type": "string",
            "enum": ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"],
        },
        "public_key": {"type": "string", "description": "'<type> <base64>' (comment dropped)"},
        "fingerprint": {"type": "string", "description": "'SHA256:<base64>', as ssh-keygen -lf prints it"},
        "created": {"type": "string", "format": "date-time"},
        "last_used": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When the SSH gateway last looked the key up (a client offered it)",
        },
    },
}
SCHEMAS["SshKeys"] = {
    "type": "object",
    "required": ["ssh_keys"],
    "properties": {"ssh_keys": {"type": "array", "items": _ref("SshKey")}},
}
SCHEMAS["SshKeyBody"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["public_key"],
    "properties": {
        "public_key": {
            "type": "string",
            "description": "One OpenSSH public key line without options: ssh-ed25519, ecdsa-sha2-nistp256/384/521,"
            " or ssh-rsa of at least 3072 bits",
        },
        "title": {"type": "string", "maxLength": 200, "description": "e.g. laptop; default: the key's comment"},
    },
}
SCHEMAS["SshKeyOwner"] = {"type": "object", "required": ["user"], "properties": {"user": {"type": "string"}}}

ANYONE = "Anyone logged in."
READERS = "Platform admins; admins and members of the tenant."


USER_PARAM = _param("user", "path", {"type": "string"}, "Who runs the server")
NOT_VISIBLE = (
    "No such server charged to the tenant (by the hub's record of it), or one the caller may not see:"
    " the same answer, so nothing leaks"
)
SERVER_OPERATIONS: dict[str, Any] = {
    "get": {
        "summary": "One server charged to the tenant (without {server}: the default server)",
        "description": "Platform admins and the tenant's admins; members their own.",
        "responses": {
            "200": _json(_ref("Server"), "The server"),
            **_errors(403),
            "404": _json(_ref("Error"), NOT_VISIBLE),
        },
    },
    "delete": {
        "summary": "Stop one server charged to the tenant",
        "description": "Platform admins and the tenant's admins (whoever runs it, whichever other tenants that"
        " person is in); members their own. The tenant is the hub's record of the server, never the request's;"
        " the service asks the hub to stop it with its own token.",
        "responses": {
            "202": {"description": "Stopping (the hub answers before the server has stopped)"},
            "204": {"description": "Stopped"},
            **_errors(403),
            "404": _json(_ref("Error"), NOT_VISIBLE),
            "409": _json(_ref("Error"), "The hub cannot stop it now (still starting or stopping): try again"),
            "502": _json(_ref("Error"), "The hub failed to stop it"),
        },
    },
}

PATHS: dict[str, Any] = {
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "description": "No authentication.",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
        }
    },
    "/api/me": {
        "get": {
            "summary": "The caller and, for each of their tenants, their limits, hours this month, servers and"
            " waiting GPU requests",
            "description": ANYONE,
            "responses": {"200": _json(_ref("Me"), "The caller"), **_errors(403)},
        }
    },
    "/api/me/workspace": {
        "get": {
            "summary": "One of the caller's own servers: its tenant, GPUs, GPU-hours left and the hub's notices",
            "description": "Anyone logged in, for their own servers only; the workspace's own token"
            " ($JUPYTERHUB_API_TOKEN, scope access:services!service=quotas) reads its owner's. A name of"
            " a server the caller does not run answers running: false.",
            "parameters": [
                _param("server", "query", {"type": "string"}, "Server name; empty or absent for the default server")
            ],
            "responses": {"200": _json(_ref("MyWorkspace"), "The server"), **_errors(400, 403)},
        }
    },
    "/api/tenants": {
        "get": {
            "summary": "The tenants the caller may see, with ceiling and use now",
            "description": "Platform admins: every tenant. Others: their tenants.",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}}},
                    "Tenants",
                ),
                **_errors(403),
            },
        }
    },
    "/api/tenants/{tenant}": {
        "parameters": [TENANT_PARAM],
        "get": {
            "summary": "One tenant: ceiling, profiles, use now (totals)",
            "description": READERS,
            "responses": {"200": _json(_ref("Tenant"), "The tenant"), **_errors(403, 404)},
        },
    },
    "/api/tenants/{tenant}/limits": {
        "parameters": [TENANT_PARAM],
        "get": {
            "summary": "Limits delegated in the tenant",
            "description": "Platform admins and tenant admins: every limit. Members: their own and their groups'.",
            "responses": {"200": _json(_ref("Limits"), "Limits, users first"), **_errors(403, 404)},
        },
    },
    "/api/tenants/{tenant}/limits/{kind}/{name}": {
        "parameters": [TENANT_PARAM, KIND_PARAM, NAME_PARAM],
        "get": {
            "summary": "One limit",
            "description": "Platform admins and tenant admins: any. Members: their own and their groups'.",
            "responses": {
                "200": {**_json(_ref("Limit"), "The limit"), "headers": {"ETag": ETAG_HEADER}},
                **_errors(400, 403, 404),
            },
        },
        "put": {
            "summary": "Set (replace) a limit",
            "description": "Platform admins and admins of the tenant. Checked against the tenant's ceiling;"
            " nothing is written on any error. An empty body object removes every field (the ceiling applies)."
            " Conditional: `If-Match: <ETag of the GET>`, or `If-None-Match: *` when no limit was set; 412 if"
            " the limit changed in between.",
            "parameters": [
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "The ETag the caller read; the write happens only if the limit is still that",
                },
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"const": "*"},
                    "description": "Write only if no limit is set yet",
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LimitBody")}}},
            "responses": {
                "200": {**_json(_ref("Limit"), "The stored limit"), "headers": {"ETag": ETAG_HEADER}},
                **_errors(400, 403, 404, 412, 422),
            },
        },
        "delete": {
            "summary": "Remove a limit (the tenant's ceiling applies again)",
            "description": "Platform admins and admins of the tenant.",
            "responses": {"204": {"description": "Removed"}, **_errors(400, 403, 404)},
        },
    },
    "/api/tenants/{tenant}/usage": {
        "parameters": [TENANT_PARAM],
        "get": {
            "summary": "GPU- and CPU-hours from the ledger, as JSON or CSV",
            "description": "Platform admins and tenant admins: everybody, by user, group or tenant. Members: their"
            " own row of a by=user report.",
            "parameters": [
                _param("from", "query", DATE, "First day (UTC); default: the 1st of this month"),
                _param(
                    "to",
                    "query",
                    DATE,
                    "Day after the last (exclusive); default: the 1st of next month; at most 366 days after from",
                ),
                _param("by", "query", {"type": "string", "enum": ["user", "group", "tenant"], "default": "user"}),
                _param(
                    "daily",
                    "query",
                    {"type": "string", "enum": ["0", "1", "true", "false"]},
                    "One row per day and subject",
                ),
                _param("user", "query", {"type": "string"}, "Only this person's row (by=user)"),
                _param("format", "query", {"type": "string", "enum": ["json", "csv"]}, "Or send Accept: text/csv"),
            ],
            "responses": {
                "200": {
                    "description": "The report. CSV: a header row (day when daily, the `by` subject, gpu_hours,"
                    " cpu_hours, runs, gpu_used_hours), as an attachment usage-<tenant>-<from>-<to>.csv",
                    "content": {
                        "application/json": {"schema": _ref("UsageReport")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 403, 404),
            },
        },
    },
    "/api/tenants/{tenant}/servers": {
        "parameters": [TENANT_PARAM],
        "get": {
            "summary": "Servers charged to the tenant now",
            "description": "Platform admins and tenant admins: every server. Members: their own.",
            "responses": {"200": _json(_ref("Servers"), "Servers, oldest first"), **_errors(403, 404)},
        },
    },
    "/api/tenants/{tenant}/queue": {
        "parameters": [TENANT_PARAM],
        "get": {
            "summary": "GPU requests waiting in the tenant's queue, in line order, with their place and why",
            "description": "Platform admins and tenant admins: every request. Members: their own. Places and"
            " reasons are what the hub's queue keeper last wrote (every second while anyone waits).",
            "responses": {"200": _json(_ref("Queue"), "Waiting requests, first in line first"), **_errors(403, 404)},
        },
    },
    "/api/tenants/{tenant}/servers/{user}": {
        "parameters": [TENANT_PARAM, USER_PARAM],
        **SERVER_OPERATIONS,
    },
    "/api/tenants/{tenant}/servers/{user}/{server}": {
        "parameters": [TENANT_PARAM, USER_PARAM, _param("server", "path", {"type": "string"}, "Named server")],
        **SERVER_OPERATIONS,
    },
    "/api/ssh-keys": {
        "get": {
            "summary": "The caller's SSH public keys (by which the SSH gateway knows them)",
            "description": "Anyone logged in (people's tokens; a service has no keys): their own keys only.",
            "responses": {"200": _json(_ref("SshKeys"), "Keys, oldest first"), **_errors(403)},
        },
        "post": {
            "summary": "Add an SSH public key to the caller's keys",
            "description": "Anyone logged in. A key registered already (by anyone) is refused: a key identifies one"
            " person. Nothing is written on any error.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SshKeyBody")}}},
            "responses": {
                "201": _json(_ref("SshKey"), "The key as stored"),
                "400": _json(_ref("Error"), "The body is not a JSON object"),
                **_errors(403),
                "422": _json(
                    _ref("Error"),
                    "Not a key the gateway accepts (garbage, a private key, options, DSA, RSA under 3072 bits,"
                    " registered already) or unknown fields; `problems` lists every reason",
                ),
            },
        },
    },
    "/api/ssh-keys/{key_id}": {
        "parameters": [_param("key_id", "path", {"type": "integer"}, "Key id")],
        "delete": {
            "summary": "Remove one of the caller's SSH keys (refused by the gateway from the next connection)",
            "description": "Anyone logged in, for their own keys.",
            "responses": {
                "204": {"description": "Removed"},
                **_errors(403),
                "404": _json(_ref("Error"), "The caller has no key with this id (other people's keys included)"),
            },
        },
    },
    "/api/ssh-keys/lookup": {
        "get": {
            "summary": "Who owns the SSH key with this fingerprint",
            "description": "Only the SSH gateway (the JupyterHub service sshgateway); everyone else gets 403."
            " Records the key's last use.",
            "parameters": [_param("fingerprint", "query", {"type": "string"}, "'SHA256:<base64>'", required=True)],
            "responses": {
                "200": _json(_ref("SshKeyOwner"), "The owner"),
                "400": _json(_ref("Error"), "No fingerprint, or not a SHA256 fingerprint"),
                **_errors(403),
                "404": _json(_ref("Error"), "No one registered this key"),
            },
        },
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "description": "Platform admins (token or cookie), or anyone when the service runs with"
            " QuotasService.metrics_public = True. aidc_tenant_gpus_in_use, aidc_tenant_gpus_quota,"
            " aidc_tenant_servers, aidc_tenant_servers_quota, aidc_tenant_gpu_hours_month,"
            " aidc_tenant_gpu_hours_budget, aidc_tenant_gpu_used_hours_month (GPU-hours weighted by utilization),"
            " aidc_admission_refusals_total, and aidc_server_gpu_utilization{tenant,user,server} (the latest reading of"
            " each running GPU server with data).",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(403),
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "AIDC Hub quotas",
        "version": "1",
        "description": "Tenants, the limits their admins delegate inside the platform's ceilings, usage from the"
        " ledger and the servers running now. A JupyterHub service: authenticate with a JupyterHub API token"
        " (`Authorization: token <token>`) or, in a browser, through the hub's login. Errors are"
        " `{status, message, problems}`.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "token": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "'token <JupyterHub API token>'",
            },
            "hub_login": {"type": "apiKey", "in": "cookie", "name": "service-quotas"},
        },
    },
    "security": [{"token": []}, {"hub_login": []}],
    "paths": PATHS,
}


def document(prefix: str) -> dict[str, Any]:
    """The document for the service at ``prefix`` (``/services/quotas/``)."""
    doc = copy.deepcopy(DOCUMENT)
    doc["servers"] = [{"url": prefix.rstrip("/"), "description": "This quotas service, through the hub's proxy"}]
    return doc


def openapi_path(route: str) -> str:
    """The OpenAPI path of a route pattern: ``api/tenants/(?P<tenant>[^/]+)`` -> ``/api/tenants/{tenant}``."""
    return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route).lstrip("/")


class OpenAPIHandler(BaseHandler):
    async def prepare(self) -> None:  # public: describing the API reveals no data
        pass

    async def get(self) -> None:
        self.write_json(document(self.settings["service_prefix"]))


default_handlers = [(r"api/openapi.json", OpenAPIHandler)]
