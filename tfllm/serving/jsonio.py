"""JSON for TF Serving's REST API, shared by the client and the local server.

orjson when installed (the `serving` extra): it writes numpy arrays natively,
which keeps per-request overhead low. Binary strings travel as `{"b64": ...}`.
"""

import base64
import json as _json
import math

import numpy as np

from tfllm.serving.limits import RequestError, shown

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


_CONSTANTS = (b"NaN", b"Infinity")  # -Infinity too


def loads_request(raw):
    """A request body; a number beyond a double's range comes back as a `BigNumber`, and the literals
    `NaN`, `Infinity` and `-Infinity` as floats: TF Serving's parser (RapidJSON's kParseNanAndInfFlag)
    takes them, and the input's own check then refuses them by name, not as "Malformed JSON"."""
    try:
        return loads(raw)
    except ValueError as e:
        if "number is infinity" in str(e):  # orjson's words for a valid but huge number
            return _json.loads(bytes(raw), parse_int=_int, parse_float=_float)
        data = bytes(raw)
        if not any(constant in data for constant in _CONSTANTS):
            raise
        try:  # only where such a literal is the difference: anything else malformed stays orjson's error
            return _json.loads(data, parse_int=_int, parse_float=_float)
        except ValueError:
            raise e from None


def _default(obj):
    # numpy values orjson refuses (non-contiguous row slices) or plain json can't write.
    if hasattr(obj, "tolist"):
        return to_json_values(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def refuse_non_finite(name, values) -> None:
    """Refuses NaN and infinity in `values` (a number or an array) of input `name`: the server's check, and both
    clients' before sending (JSON has no NaN: RestClient's went as `null`, which the server then blamed)."""
    if isinstance(values, (float, np.floating, np.ndarray)):
        arr = np.asarray(values)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            where = f"Input {name!r}" if name is not None else "An input"
            raise RequestError(f"{where} holds NaN or infinite values.")


def to_json_values(value, name=None):
    """Python values with bytes turned into TF Serving's `{"b64": ...}`; NaN and infinity refused by the input
    they are in (the outermost dict's keys are input names: `{name: batch}`, a row's `{name: value}`)."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [to_json_values(v, name) for v in value]
    if isinstance(value, dict):
        return {k: to_json_values(v, k if name is None else name) for k, v in value.items()}
    refuse_non_finite(name, value)
    return value


def from_json_values(value):
    """`to_json_values` undone: TF Serving's `{"b64": ...}` back into bytes."""
    if isinstance(value, list):
        return [from_json_values(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value:
            return base64.b64decode(value["b64"])
        return {k: from_json_values(v) for k, v in value.items()}
    return value


# Request values in JSON's words, for the codec.


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words: the client wrote JSON, not Python (it read
    "got NoneType None", "got bool True")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, BigNumber)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def out_of_range(name: str, index: int, np_dtype, shape, value) -> RequestError:
    """Value `index` (row-major, in an input of `shape`) of a JSON input is a number its dtype cannot
    hold: a 5,000-digit integer was "Malformed JSON" (orjson's "number is infinity"), 2**40 for int32
    "values outside the range". Named by its instance, with the number itself: "Value 0 of input
    'max_new_tokens'" read as if 0 were the number sent."""
    dtype = np.dtype(np_dtype)
    if dtype.kind in "iu":
        span = f"[{np.iinfo(dtype).min}, {np.iinfo(dtype).max}]"
    else:
        span = f"(at most {float(np.finfo(dtype).max):.7g} in magnitude)"
    number = value.text if isinstance(value, BigNumber) else repr(value.item() if isinstance(value, np.generic) else value)
    if len(number) > 40:  # a 5,000-digit integer
        number = f"{number[:20]}... ({len(number):,} characters)"
    if not shape:  # a scalar input
        where = f"Input {name!r} ({number})"
    else:
        position = np.unravel_index(index, shape)
        inner = [int(i) for i in position[1:]]
        at = "" if not inner else f" at position {inner[0] if len(inner) == 1 else inner}"
        where = f"Instance {int(position[0])} of input {name!r} ({number}{at})"
    return RequestError(f"{where} is out of {dtype.name}'s range {span}; send a value within it.")


def is_named(value, inputs: dict) -> bool:
    # A one-input signature may be fed bare values; a {"b64": ...} value is a
    # value, not a map of input names.
    if not isinstance(value, dict):
        return False
    if "b64" in value and "b64" not in inputs:
        if len(value) == 1:
            return False
        # Read as input names, it was "Missing input(s) ['text'] and unknown input(s) ['b64', 'x']".
        raise RequestError(
            'A {"b64": ...} object must hold that one key; got keys '
            f"[{', '.join(map(shown, sorted(value)[:5]))}]. A binary value is written "
            '{"b64": "<base64>"}.')
    return True
