"""Schemathesis hooks of the api fuzz run (tests/api_fuzz.rs, docs/api.md).

The OpenAPI document marks query parameters that only admins may send with
`x-medforge-admin-only: true`; anyone else gets 422 naming them, which the
document says. When the run is not an admin's (MEDFORGE_FUZZ_ROLE is not
"admin"), those parameters are dropped before generation, so that valid
input for this caller is what gets generated.
"""

import os

import schemathesis


@schemathesis.hook
def before_load_schema(context, raw_schema):
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
