"""JSON for TF Serving's REST API, shared by the client and the local server.

orjson when installed (the `serving` extra): it writes numpy arrays natively,
which keeps per-request overhead low. Binary strings travel as `{"b64": ...}`.
"""

import base64
import json as _json
import math

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


class BigNumber:
    """A JSON number beyond a double's range (a 5,000-digit integer, 1e999): valid JSON, which
    orjson refuses as "number is infinity when parsed as double"; the codec refuses it by input
    name and dtype."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _int(text: str):
    if len(text) > 400:  # beyond a double; int() refuses over 4,300 digits anyway
        return BigNumber(text)
    value = int(text)
    return value if -2**63 <= value < 2**64 else _float(text)  # as orjson: a float beyond 64 bits


def _float(text: str):
    value = float(text)
    return value if math.isfinite(value) else BigNumber(text)


def _no_constant(text: str):
    raise ValueError(f"{text} is not JSON")


def loads_request(raw):
    """A request body; a number beyond a double's range comes back as a `BigNumber`."""
    try:
        return loads(raw)
    except ValueError as e:
        if "number is infinity" not in str(e):  # orjson's words for a valid but huge number
            raise
    return _json.loads(bytes(raw), parse_int=_int, parse_float=_float, parse_constant=_no_constant)


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
