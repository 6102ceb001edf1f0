"""schemathesis hooks for scripts/api_fuzz.sh: JSON lines (the import endpoint's body) are
serialized as such, so the fuzzer exercises that operation too."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    rows = value if isinstance(value, list) else [value]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()
