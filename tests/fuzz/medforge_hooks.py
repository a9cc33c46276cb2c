"""Schemathesis hooks of the api fuzz run (tests/api_fuzz.rs, docs/api.md).

The OpenAPI document marks query parameters that only admins may send with
`x-medforge-admin-only: true`; anyone else gets 422 naming them, which the
document says. When the run is not an admin's (MEDFORGE_FUZZ_ROLE is not
"admin"), those parameters are dropped before generation, so that valid
input for this caller is what gets generated.

The run has one Pack, `default`. A create naming another is refused (422
on `pack`, as the document says), so creates name `default` or none; and the
admin's Pack routes work on a Pack of their own (`fuzz-pack`), so that they
never deprecate or delete the one every create needs.

A Pack's GPU range must hold together (minima.gpus <= session_defaults.gpus
<= maxima.gpus; a 422 names the field otherwise), which JSON Schema cannot
say. So the Pack bodies generated here set `gpus` in `minima` only; the
range's checks are in the api tests (api/tests/api/packs.rs). Only the
request body's schema (PackSpec) changes: the shared component schemas the
responses are checked against stay as the document has them.
"""

import copy
import os

import schemathesis

FUZZ_PACK = "fuzz-pack"


def without_gpus(schemas, name):
    """A copy of component `name`, nullable, without its `gpus` property."""
    base = copy.deepcopy(schemas[name])
    base.get("properties", {}).pop("gpus", None)
    if "required" in base:
        base["required"] = [r for r in base["required"] if r != "gpus"]
    return {"anyOf": [base, {"type": "null"}]}


def pin_pack_gpu_range(raw_schema):
    schemas = raw_schema.get("components", {}).get("schemas", {})
    spec = schemas.get("PackSpec")
    if not spec:
        return
    for field, component in (
        ("session_defaults", "PackSessionDefaults"),
        ("maxima", "SessionLimitValues"),
    ):
        if field in spec.get("properties", {}) and component in schemas:
            spec["properties"][field] = without_gpus(schemas, component)


def pin_packs(raw_schema):
    pin_pack_gpu_range(raw_schema)
    create = raw_schema.get("components", {}).get("schemas", {}).get("CreateSession")
    if create and "pack" in create.get("properties", {}):
        create["properties"]["pack"] = {"enum": ["default", None]}
    for path, item in raw_schema.get("paths", {}).items():
        if not path.startswith("/api/v2/admin/packs/"):
            continue
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for p in operation.get("parameters", []):
                if p.get("in") == "path" and p.get("name") == "name":
                    p["schema"] = {"enum": [FUZZ_PACK]}


@schemathesis.hook
def before_load_schema(context, raw_schema):
    pin_packs(raw_schema)
    if os.environ.get("MEDFORGE_FUZZ_ROLE") == "admin":
        return
    for item in raw_schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [
                    p
                    for p in operation["parameters"]
                    if not p.get("x-medforge-admin-only")
                ]
