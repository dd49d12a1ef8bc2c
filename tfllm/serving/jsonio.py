"""JSON for TF Serving's REST API, shared by the client and the local server.

orjson when installed (the `serving` extra): it writes numpy arrays natively,
which keeps per-request overhead low. Binary strings travel as `{"b64": ...}`.
"""

import base64

try:
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is in the `serving` extra
    import json

    def dumps(obj) -> bytes:
        return json.dumps(obj, default=_default).encode()

    loads = json.loads


def _default(obj):
    # numpy values orjson refuses (non-contiguous row slices) or plain json can't write.
    if hasattr(obj, "tolist"):
        return to_json_values(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def to_json_values(value):
    """Python values with bytes turned into TF Serving's `{"b64": ...}`."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [to_json_values(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_values(v) for k, v in value.items()}
    return value
