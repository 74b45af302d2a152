"""The two OpenAPI documents: ``/v2/openapi.json`` (the vendor's surface) and
``/admin/openapi.json`` (ours), both built from the routes' own models.

The V2 document is the vendor's published one (spec/endpoints.md), operation by
operation and schema by schema: the same paths under the server URL ``/v2``, the
same operation ids (also the five the vendor gives both the mechanical keys and
the mechanical key contracts), parameter and schema names, types, required-ness,
nullability, formats, enums and defaults, and the vendor's status codes, which
it documents without a body. To that it adds, and only that, our documented
extensions: ``GET /`` (the smoke test), the optional ``role`` of a new service
account, the list filters of the mechanical key contracts, and the status codes
we send beyond the vendor's, each with the one error shape (``ErrorResponse``)
as reusable ``components.responses``.

What a model validates beyond the vendor's types (lengths, patterns, ranges,
null taken as absent) is not stated in the V2 document: docs/api.md lists each
such rule with its reason. ``tests/openapi_ts`` generates TypeScript from the
document and compares it with the vendor's, schema by schema.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import BaseModel

from keyautomat.entrypoints.api.schemas import SCHEMA_REF, ErrorResponse, component_schemas

V2_PREFIX = "/v2"
ADMIN_PREFIX = "/admin"

SECURITY_SCHEMES = {
    "serviceAccountId": {"type": "apiKey", "in": "header", "name": "x-service-account-id"},
    "timestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "x-timestamp",
        "description": "Unix time in milliseconds",
    },
    "signature": {
        "type": "apiKey",
        "in": "header",
        "name": "x-signature",
        "description": "Base64 RSA-SHA256 (PKCS#1 v1.5) signature of serviceAccountId + "
        "timestamp + hex(sha256(METHOD + URL + body)); see docs/api.md",
    },
}

# The vendor's paths in the vendor's order. The order matters for the five repeated
# operation ids: a generator keeps one definition per id, the last, which in the vendor's
# document is the mechanical keys'.
VENDOR_PATHS = (
    "/iloq/keycontracts",
    "/iloq/keycontracts/{id}",
    "/iloq/accessRights",
    "/automats",
    "/automats/{id}",
    "/automats/install",
    "/automats/{id}/uninstall",
    "/automats/{id}/replace",
    "/automats/{id}/sendPincode",
    "/automats/{id}/cancelSendPincode",
    "/groups",
    "/groups/{id}",
    "/organizationUnits",
    "/serviceAccounts",
    "/serviceAccounts/{id}",
    "/mechanical/keycontracts",
    "/mechanical/keycontracts/{id}",
    "/mechanical/keys",
    "/mechanical/keys/{id}",
)

Operation = tuple[str, str]  # (method, path relative to the document's server)

# The error statuses the vendor documents, as it does: a status without a body schema
# (every one of them carries the one error shape all the same).
VENDOR_ERRORS: dict[Operation, dict[int, str]] = {
    ("post", "/iloq/keycontracts"): {
        400: "Invalid input, or a rule of the contract type broken",
        409: "No automat has the requested number of keys or lockers free for the period",
    },
    ("delete", "/iloq/keycontracts/{id}"): {
        400: "The contract is half done (a key out, or some keys fetched or returned)",
    },
    ("patch", "/iloq/keycontracts/{id}"): {
        400: "Invalid input",
        409: "The new period overlaps another contract on the same key or locker",
    },
    ("get", "/automats/{id}"): {404: "No such automat"},
    ("post", "/automats/{id}/sendPincode"): {400: "Invalid input", 404: "No such automat"},
    ("post", "/automats/{id}/cancelSendPincode"): {400: "Invalid input", 404: "No such automat"},
    ("get", "/groups/{id}"): {404: "No such group"},
    ("delete", "/groups/{id}"): {404: "No such group"},
    ("patch", "/groups/{id}"): {404: "No such group"},
    ("delete", "/serviceAccounts/{id}"): {404: "No such service account"},
    ("post", "/mechanical/keys"): {
        400: "Invalid input",
        409: "A key with this id already exists",
    },
    ("get", "/mechanical/keys/{id}"): {404: "No such key"},
    ("delete", "/mechanical/keys/{id}"): {
        400: "The key has active contracts and deleteActiveContracts is not true",
        404: "No such key",
    },
    ("patch", "/mechanical/keys/{id}"): {400: "Invalid input", 404: "No such key"},
}

# The statuses we send beyond the vendor's, with the one error shape: reusable responses.
EXTENSION_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid input; `message` names each offending field"),
    401: ("Unauthorized", "Missing, stale, replayed or wrong signature, or unknown account"),
    403: ("Forbidden", "The caller's role or organization unit may not do this"),
    404: ("NotFound", "No such resource in the caller's organization subtree"),
    409: (
        "Conflict",
        "The request collides with another contract or key, or a request with the same "
        "Idempotency-Key is still in progress",
    ),
    413: ("PayloadTooLarge", "The body is over the limit (1 MiB)"),
    422: ("IdempotencyKeyReused", "The Idempotency-Key was used for another request"),
    429: ("TooManyRequests", "Rate limit reached: retry after `Retry-After` seconds"),
    502: ("BadGateway", "The customer's iLOQ system refused the request"),
    503: ("ServiceUnavailable", "The customer's iLOQ system cannot be reached: retry later"),
}
# Which operations send the statuses that not every operation sends.
ADMIN_ONLY: frozenset[Operation] = frozenset(
    {
        ("post", "/organizationUnits"),
        ("post", "/serviceAccounts"),
        ("delete", "/serviceAccounts/{id}"),
        ("post", "/automats/install"),
        ("patch", "/automats/{id}"),
        ("post", "/automats/{id}/uninstall"),
        ("post", "/automats/{id}/replace"),
        ("post", "/groups"),
        ("patch", "/groups/{id}"),
        ("delete", "/groups/{id}"),
    }
)
CONFLICTS: frozenset[Operation] = frozenset(
    {("post", "/mechanical/keycontracts"), ("patch", "/mechanical/keycontracts/{id}")}
)
ILOQ_BACKED: frozenset[Operation] = frozenset(
    {("get", "/iloq/accessRights"), ("post", "/iloq/keycontracts")}
)
# The pagination fields a list documents (the vendor's access-right list has no hasNext;
# ours answers it anyway).
PAGINATION_FIELDS: dict[str, tuple[str, ...]] = {"/iloq/accessRights": ("after", "limit")}
PAGINATION = ("after", "limit", "hasNext")

# Request headers we define beyond the vendor's, added to the operations of the given
# methods in both documents: (methods, parameter object).
_WRITES = frozenset({"post", "patch"})
EXTENSION_HEADERS: tuple[tuple[frozenset[str], dict[str, Any]], ...] = (
    (
        _WRITES,
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Retry-safe writes: a retry with the same key and body gets the "
            "first answer again (docs/api.md, 'Idempotent requests')",
            "schema": {"type": "string"},
        },
    ),
)

# What a schema may state in the V2 document: the rest (lengths, patterns, ranges, titles)
# is ours to check and docs/api.md's to say.
_CONSTRAINTS = frozenset(
    {
        "title",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "uniqueItems",
    }
)
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_SCHEMA_MAPS = ("properties", "$defs")


def clean(schema: Any, *, keep_constraints: bool = False) -> Any:
    """``schema`` without titles, null defaults and (unless kept) our constraints, and with
    a nullable primitive written ``type: [T, "null"]`` (so its format and enum stay on it)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key in _CONSTRAINTS and not keep_constraints):
            continue
        if key == "default" and value is None:
            continue
        if key in _SCHEMA_LISTS:
            out[key] = [clean(v, keep_constraints=keep_constraints) for v in value]
        elif key in _SCHEMA_MAPS:
            out[key] = {k: clean(v, keep_constraints=keep_constraints) for k, v in value.items()}
        elif key in {"items", "additionalProperties"}:
            out[key] = clean(value, keep_constraints=keep_constraints)
        else:
            out[key] = value
    return _nullable(out)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not options or len(options) != 2 or {"type": "null"} not in options:
        return schema
    (value,) = [o for o in options if o != {"type": "null"}]
    if "$ref" in value or not isinstance(value.get("type"), str):
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    merged.update(value)
    merged["type"] = [value["type"], "null"]
    if "enum" in value:
        merged["enum"] = [*value["enum"], None]
    return merged


def _error_response(description: str) -> dict[str, Any]:
    schema = {"$ref": SCHEMA_REF.format(model=ErrorResponse.__name__)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _pagination_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "after": {"type": "string", "description": "Offset of the next page"},
            "limit": {"type": "number", "description": "The limit used"},
            "hasNext": {"type": "boolean", "description": "Whether another page follows"},
        },
        "required": list(PAGINATION),
    }


def _paginated(schema: dict[str, Any], path: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """A list answer in the vendor's form: the pagination fields, and ``data``."""
    name = schema["$ref"].rsplit("/", 1)[1]
    data = schemas[name]["properties"]["data"]
    pagination = {
        field: {"$ref": f"{SCHEMA_REF.format(model='PaginationResponseDto')}/properties/{field}"}
        for field in PAGINATION_FIELDS.get(path, PAGINATION)
    }
    return {
        "allOf": [
            {"type": "object", "properties": pagination},
            {"type": "object", "properties": {"data": {**data, "description": "One page"}}},
        ]
    }


def _responses(
    operation: dict[str, Any], key: Operation, schemas: dict[str, Any], *, vendor: bool
) -> dict[str, Any]:
    path = key[1]
    answers: dict[str, Any] = {}
    for status, response in operation.get("responses", {}).items():
        if status == "422":  # FastAPI's; a validation failure is a 400 in the one shape
            continue
        content = response.get("content", {}).get("application/json", {})
        schema = content.get("schema")
        if not schema or status == "204":
            answers[status] = {"description": response["description"]}
            continue
        if vendor and schema.get("$ref", "").rsplit("/", 1)[-1].startswith("Paginated_"):
            schema = _paginated(schema, path, schemas)
        answers[status] = {
            "description": response["description"],
            "content": {"application/json": {"schema": clean(schema)}},
        }
    documented = VENDOR_ERRORS.get(key, {}) if vendor else {}
    for status, description in documented.items():
        answers[str(status)] = {"description": description}
    for status in _extension_statuses(operation, key, vendor=vendor):
        if status not in documented:
            name = EXTENSION_RESPONSES[status][0]
            answers[str(status)] = {"$ref": f"#/components/responses/{name}"}
    return dict(sorted(answers.items()))


def _extension_statuses(operation: dict[str, Any], key: Operation, *, vendor: bool) -> list[int]:
    statuses = [400, 401, 429]
    if "{" in key[1]:
        statuses.append(404)
    if "requestBody" in operation:
        statuses.append(413)
    if key in ADMIN_ONLY or not vendor:  # every admin route is for admins only
        statuses.append(403)
    if key in CONFLICTS or key[0] in _WRITES:
        statuses.append(409)
    if key[0] in _WRITES:
        statuses.append(422)
    if key in ILOQ_BACKED:
        statuses += [502, 503]
    return statuses


def _request_body(body: dict[str, Any]) -> dict[str, Any]:
    # Every V2 body is required and an object, as the vendor documents them all (an absent
    # DELETE body is read as {}, docs/api.md).
    schema = body["content"]["application/json"]["schema"]
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    (value,) = options
    ref = {"$ref": value["$ref"]} if "$ref" in value else clean(value)
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    # A query parameter is absent or a value: null has no place in a URL.
    schema = parameter["schema"]
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    value = options[0] if len(options) == 1 else {"anyOf": options}
    extra = {k: v for k, v in schema.items() if k not in {"anyOf", "title", "default"}}
    return {**parameter, "schema": clean({**extra, **value})}


def _operation(
    operation: dict[str, Any], key: Operation, schemas: dict[str, Any], *, vendor: bool
) -> dict[str, Any]:
    out = {k: v for k, v in operation.items() if k not in {"responses", "parameters"}}
    parameters = [_parameter(p) for p in operation.get("parameters", [])]
    for methods, header in EXTENSION_HEADERS:
        if key[0] in methods:
            parameters.append(header)
    if parameters:
        out["parameters"] = parameters
    if "requestBody" in operation:
        out["requestBody"] = _request_body(operation["requestBody"])
    out["responses"] = _responses(operation, key, schemas, vendor=vendor)
    return out


def _generate(routes: Sequence[RouteContext], title: str, version: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        # The five operation ids the vendor repeats (endpoints.md §1), on purpose.
        warnings.filterwarnings("ignore", message="Duplicate Operation ID", category=UserWarning)
        return get_openapi(
            title=title, version=version, routes=routes, separate_input_output_schemas=False
        )


def _referenced(roots: list[Any], schemas: dict[str, Any]) -> set[str]:
    """The schemas ``roots`` name, directly or through each other."""
    found: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.split("/")[3]
                if name not in found:
                    found.add(name)
                    todo.append(schemas.get(name))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def _add_schemas(schemas: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    for name, schema in component_schemas(models).items():
        if schemas.setdefault(name, schema) != schema:
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")


def _document(
    app: FastAPI,
    prefix: str,
    *,
    models: Iterable[type[BaseModel]],
    vendor: bool,
    description: str,
) -> dict[str, Any]:
    # Included routers stay nested in ``app.routes``: their routes come out with their context.
    routes = [r for r in iter_route_contexts(app.routes) if (r.path or "").startswith(f"{prefix}/")]
    generated = _generate(routes, app.title, app.version)
    components = generated.get("components", {})
    schemas: dict[str, Any] = components.get("schemas", {})
    _add_schemas(schemas, [ErrorResponse, *models])
    paths: dict[str, Any] = {}
    for path, item in generated["paths"].items():
        relative = path.removeprefix(prefix) or "/"
        paths[relative] = {
            method: _operation(operation, (method, relative), schemas, vendor=vendor)
            for method, operation in item.items()
        }
    listed = {m.__name__ for m in models} | {ErrorResponse.__name__}
    used = listed | _referenced([paths, *(schemas[name] for name in listed)], schemas)
    order = {path: index for index, path in enumerate(VENDOR_PATHS)}
    paths = dict(sorted(paths.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    kept = {
        name: clean(schema, keep_constraints=not vendor)
        for name, schema in schemas.items()
        if name in used and not (vendor and name.startswith("Paginated_"))
    }
    if vendor:
        kept["PaginationResponseDto"] = _pagination_schema()
    return {
        "openapi": generated["openapi"],
        "info": {"title": app.title, "version": app.version, "description": description},
        "servers": [{"url": prefix}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(kept.items())),
            "responses": {
                name: _error_response(text) for name, text in EXTENSION_RESPONSES.values()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
        "security": [{name: [] for name in SECURITY_SCHEMES}],
    }


V2_DESCRIPTION = (
    "The LivionKey API V2 as keyautomat serves it: the vendor's operations, schemas and "
    "status codes, plus our documented extensions (GET /, the optional role of a service "
    "account, the mechanical contract list filters, and the statuses we add). Every 4xx "
    "and 5xx answer, the vendor's too, is the one error shape ErrorResponse. "
    "Every request is signed (docs/api.md)."
)
ADMIN_DESCRIPTION = (
    "keyautomat's admin API: what the vendor does in its web UI. Admin service accounts "
    "only; signed like V2; errors in the one shape ErrorResponse."
)


def v2_document(app: FastAPI, models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """``/v2/openapi.json``: ``models`` are the schemas listed that no route names."""
    return _document(app, V2_PREFIX, models=models, vendor=True, description=V2_DESCRIPTION)


def admin_document(app: FastAPI) -> dict[str, Any]:
    """``/admin/openapi.json``."""
    return _document(app, ADMIN_PREFIX, models=(), vendor=False, description=ADMIN_DESCRIPTION)
