"""Requests to signature arguments and signature outputs to answers, for REST and gRPC.

Both protocols go through the same checks, in this order, before the model
runs: input names; the declared shape against the signature and the
`Limits` (nothing is allocated before that); dtype and value ranges; string
sizes and UTF-8; and equal batch sizes across inputs. A refusal is a
`RequestError` naming the input, the limit and the fix.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import numpy as np

from tfllm.serving.jsonio import BigNumber, is_named, json_kind, out_of_range, refuse_non_finite
from tfllm.serving.limits import Limits, RequestError, shown

_NO_LIMITS = Limits(max_batch_size=1 << 62, max_sequence_length=1 << 62, max_elements=1 << 62,
                    max_string_bytes=1 << 62, max_body_bytes=1 << 62)
_MAX_UNKNOWN_RANK = 8  # nesting accepted for an input whose signature has no rank


def spec_str(spec) -> str:
    dims = "unknown rank" if spec.shape.rank is None else [-1 if d is None else d for d in spec.shape.as_list()]
    return f"{spec.dtype.name} {dims}"


def describe_inputs(inputs: dict) -> str:
    return ", ".join(f"{k} ({spec_str(s)})" for k, s in sorted(inputs.items()))


def _check_signature_shape(name: str, shape, spec) -> None:
    expected = spec.shape
    if expected.rank is None:
        return
    if len(shape) != expected.rank or any(e is not None and e != got for e, got in zip(expected.as_list(), shape)):
        raise RequestError(f"Input {name!r} has shape {list(shape)} but the signature expects {spec_str(spec)} "
                           "(-1 = any size).")


def check_shape(name: str, shape, spec, limits: Limits) -> None:
    """The declared shape against the limits, then against the signature."""
    limits.check_shape(name, shape, spec.shape.rank)
    _check_signature_shape(name, shape, spec)


def _is_text(name: str) -> bool:
    # tfllm's choice, borrowing TF Serving's output rule: string inputs not named *_bytes
    # must be UTF-8 (a clear 400, not a tokenizer failure). TF Serving itself uses the
    # suffix only to write outputs as b64 and takes any bytes in any string input.
    return not name.endswith("_bytes")


def _check_strings(name: str, values, limits: Limits) -> None:
    text = _is_text(name)
    for i, v in enumerate(values):
        limits.check_string(name, v, i)
        if text and isinstance(v, bytes):
            try:
                v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RequestError(
                    f"Input {name!r} value {i} is not valid UTF-8 ({e.reason} at byte "
                    f"{e.start}); send text as UTF-8 (only inputs named *_bytes take "
                    "binary strings).") from e


def _check_ids(name: str, arr: np.ndarray) -> None:
    # Token ids are indices; a negative one would wrap around or read another row. No text has a code point outside
    # Unicode's range (a classifier's `code_points`), and the model answered one with confident probabilities.
    if arr.dtype.kind != "i" or not arr.size:
        return
    if (name == "ids" or name.endswith("_ids")) and arr.min() < 0:
        raise RequestError(f"Input {name!r} holds the negative id {int(arr.min())}; token ids must be >= 0.")
    if name == "code_points" and (arr.min() < 0 or arr.max() > 0x10FFFF):
        raise RequestError(f"Input {name!r} holds the code point {int(arr.min() if arr.min() < 0 else arr.max())}; "
                           "code points must be 0 to 1114111 (0x10FFFF, Unicode's last), 0 after the text's end.")


# --------------------------------------------------------------------------
# JSON (REST)
# --------------------------------------------------------------------------


def _decode_b64(value: dict, name: str, limits: Limits) -> bytes:
    if len(value) != 1 or "b64" not in value:
        raise RequestError(
            f"Input {name!r}: unexpected object [{', '.join(map(shown, sorted(value)[:5]))}]; a binary value is "
            'written {"b64": "<base64>"}.')
    data = value["b64"]
    if not isinstance(data, str):
        raise RequestError(f'Input {name!r}: "b64" must be a base64 string.')
    if len(data) > (limits.max_string_bytes + 2) // 3 * 4 + 4:
        raise RequestError(
            f"Input {name!r} has a base64 value of about {len(data) * 3 // 4} bytes, over the "
            f"limit of {limits.max_string_bytes} bytes per string (tfllm serve "
            "--max-string-bytes).")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"Input {name!r}: invalid base64 value ({e}).") from e


def _json_shape_and_leaves(name: str, value, spec, limits: Limits):
    """The shape a nested JSON list declares, and its leaves in row-major order.

    Walks level by level (never recursively, so no nesting depth can exhaust
    the stack) and stops at the signature's rank: deeper nesting, ragged rows
    and oversized shapes are refused before any array is built.
    """
    rank = spec.shape.rank
    level, shape = [value], []
    for depth in range(rank if rank is not None else _MAX_UNKNOWN_RANK):
        if not isinstance(level[0], list):
            if rank is None:
                break
            raise RequestError(
                f"Input {name!r} has {depth} level(s) of lists but the signature expects "
                f"{spec_str(spec)} ({rank} level(s)).")
        n = len(level[0])
        for item in level:
            if not isinstance(item, list) or len(item) != n:
                raise RequestError(
                    f"Input {name!r} is a ragged list; every row must have the same length "
                    "(and the same nesting).")
        shape.append(n)
        limits.check_shape(name, shape, None)  # before the next level is gathered
        level = [x for item in level for x in item]
        if not level:
            break
    else:
        if rank is None and level and isinstance(level[0], list):
            raise RequestError(f"Input {name!r} is nested deeper than {_MAX_UNKNOWN_RANK} levels.")
    if rank is not None and len(shape) < rank:
        shape += [0] * (rank - len(shape))  # an empty list at some level
    if rank is not None:
        check_shape(name, shape, spec, limits)
    for leaf in level[:1] + level[-1:]:
        if isinstance(leaf, list):
            raise RequestError(
                f"Input {name!r} is nested deeper than the signature's {spec_str(spec)}.")
    return shape, level


def json_to_tensor(name: str, value, spec, limits: Limits):
    """One JSON value (a list per the signature's rank) as a tensor of the signature's dtype."""
    import tensorflow as tf

    shape, leaves = _json_shape_and_leaves(name, value, spec, limits)
    if spec.dtype == tf.string:
        values = []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, dict):
                leaf = _decode_b64(leaf, name, limits)
            elif not isinstance(leaf, str):
                raise RequestError(
                    f"Input {name!r} must hold strings (signature: {spec_str(spec)}); got "
                    f"{json_kind(leaf)} at value {i} (ragged lists are not allowed either).")
            values.append(leaf)
        _check_strings(name, values, limits)
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return tf.constant(arr.reshape(shape), tf.string)
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, BigNumber) and spec.dtype != tf.bool:
            raise out_of_range(name, i, spec.dtype.as_numpy_dtype, shape, leaf)
        if isinstance(leaf, (list, dict, str, BigNumber)) or leaf is None:
            raise RequestError(
                f"Input {name!r} must be {spec.dtype.name} (signature: {spec_str(spec)}); got "
                f"{json_kind(leaf)} at value {i}.")
    try:
        arr = np.asarray(leaves).reshape(shape)
    except (ValueError, OverflowError) as e:
        raise RequestError(f"Input {name!r}: {e}.") from e
    return tf.constant(_check_numbers(name, arr, spec), spec.dtype)


_KIND_OK = {"i": "iu", "u": "iu", "f": "iuf", "c": "iufc", "b": "b"}


def _check_numbers(name: str, arr: np.ndarray, spec) -> np.ndarray:
    np_dtype = spec.dtype.as_numpy_dtype
    kind = np.dtype(np_dtype).kind
    if kind in "iu" and arr.dtype.kind in "iuf" and arr.size:
        # Before the dtype check: an integer beyond 64 bits is read as a float (orjson).
        info = np.iinfo(np_dtype)
        outside = np.flatnonzero((arr < info.min) | (arr > info.max))
        if outside.size:
            raise out_of_range(name, int(outside[0]), np_dtype, arr.shape, arr.flat[int(outside[0])])
    if arr.size and arr.dtype.kind not in _KIND_OK.get(kind, kind):
        # In JSON's words: the array's dtype is how numpy read the client's JSON numbers.
        got = {"f": "numbers with a fraction or exponent", "b": "true/false values",
               "i": "numbers", "u": "numbers"}.get(arr.dtype.kind, "mixed values")
        raise RequestError(
            f"Input {name!r} must be {spec.dtype.name} (signature: {spec_str(spec)}); "
            f"got {got}.")
    if kind == "f" and arr.size:
        arr = as_finite_floats(name, arr, np_dtype)
    _check_ids(name, arr)
    return arr


def as_finite_floats(name: str, arr: np.ndarray, np_dtype) -> np.ndarray:
    """`arr` (numbers) cast to the float dtype of its input, refusing NaN and infinity, and a value beyond that
    dtype's range: JSON's 1e39 is finite as the float64 it is read as, and +inf as the signature's float32 (a
    generator's `temperature` of +inf samples uniformly)."""
    refuse_non_finite(name, arr)
    with np.errstate(over="ignore"):
        cast = arr.astype(np_dtype)
    beyond = ~np.isfinite(cast)
    if beyond.any():
        dtype = np.dtype(np_dtype)
        raise RequestError(f"Input {name!r} holds {arr[beyond].flat[0]:g}, beyond the {dtype.name} range (at most "
                           f"{float(np.finfo(dtype).max):.7g} in magnitude), which would be infinite; send a "
                           "value within it.")
    return cast


SAMPLING_INPUTS = {"temperature", "top_k", "top_p", "seed"}  # a generator's serving_default, beside prompt, length


def check_names(given, sig, row: int | None = None) -> None:
    missing = set(sig.inputs) - set(given)
    extra = set(given) - set(sig.inputs)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing input(s) {sorted(missing)}")
        if extra:
            problems.append(f"unknown input(s) [{', '.join(map(shown, sorted(extra)[:10]))}]")
        # A generator's sampling settings read as optional, and a signature's inputs are all required (as in
        # TF Serving): its `greedy` signature is the one that takes only the prompt and the length.
        hint = (" (every input is required; the 'greedy' signature takes only prompt and max_new_tokens)"
                if missing and missing <= SAMPLING_INPUTS and "prompt" in sig.inputs else "")
        where = "" if row is None else f" in instance {row}"  # a row-format request's row
        problems = " and ".join(problems)  # capitalised by hand: str.capitalize lowercased the names ('Text')
        raise RequestError(f"{problems[0].upper()}{problems[1:]}{where}; signature {sig.name!r} takes: "
                           f"{describe_inputs(sig.inputs)}{hint}.")


def check_batch_sizes(kwargs: dict, sig) -> None:
    """Inputs that all have a batch dimension must agree on its size."""
    batched = {k: int(v.shape[0]) for k, v in kwargs.items()
               if sig.inputs[k].shape.rank and sig.inputs[k].shape.as_list()[0] is None}
    if len(batched) == len(kwargs) and len(set(batched.values())) > 1:
        raise RequestError(
            f"The inputs' batch sizes differ ({', '.join(f'{k}: {n}' for k, n in sorted(batched.items()))}); "
            "every input needs one value per row.")


def json_to_tensors(body: dict, sig, limits: Limits) -> tuple[dict, bool]:
    """Turns a `:predict` body into signature arguments.

    Returns:
        `(kwargs, row_format)`; `row_format` is True for `"instances"`.
    """
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise RequestError(
            'The request body must hold exactly one of "instances" (row format) or '
            '"inputs" (columnar format).'
        )
    if has_cols:
        inputs = body["inputs"]
        if not is_named(inputs, sig.inputs):
            if len(sig.inputs) != 1:
                raise RequestError(
                    f'"inputs" must be an object keyed by input name; signature '
                    f"{sig.name!r} takes: {describe_inputs(sig.inputs)}."
                )
            inputs = {next(iter(sig.inputs)): inputs}
        elif not set(sig.inputs) - set(inputs):  # TF Serving reads only the signature's inputs
            inputs = {k: v for k, v in inputs.items() if k in sig.inputs}  # (rows, gRPC: refused)
        check_names(inputs, sig)
        kwargs = {k: json_to_tensor(k, v, sig.inputs[k], limits) for k, v in inputs.items()}
        check_batch_sizes(kwargs, sig)
        return kwargs, False

    columns = rows_to_columns(body["instances"], sig, limits.max_batch_size)
    return {k: json_to_tensor(k, v, sig.inputs[k], limits) for k, v in columns.items()}, True


def rows_to_columns(rows, sig, max_batch_size=None) -> dict:
    """Row-format `"instances"` as `{input name: list of values}`, refused as TF Serving refuses them.
    GrpcClient checks its rows here too (gRPC has no row format), so both clients refuse the same rows
    (a bare string was sent as one row per character over gRPC)."""
    if not isinstance(rows, list) or not rows:
        raise RequestError('"instances" must be a non-empty list of rows.')
    if max_batch_size is not None and len(rows) > max_batch_size:
        raise RequestError(
            f'"instances" has {len(rows)} rows, over the limit of {max_batch_size} '
            "(tfllm serve --max-batch-size); split the request.")
    scalars = [k for k, s in sig.inputs.items() if s.shape.rank == 0]
    if scalars:
        raise RequestError(
            f"Input(s) {scalars} of signature {sig.name!r} are scalars, which the row "
            '("instances") format cannot carry; send them in the columnar "inputs" format.'
        )
    if all(is_named(r, sig.inputs) for r in rows):
        for i, r in enumerate(rows):
            check_names(r, sig, i)
        columns = {k: [r[k] for r in rows] for k in sig.inputs}
    elif len(sig.inputs) == 1 and not any(is_named(r, sig.inputs) for r in rows):
        columns = {next(iter(sig.inputs)): rows}
    else:
        raise RequestError(
            f"Each instance must be an object keyed by input name; signature "
            f"{sig.name!r} takes: {describe_inputs(sig.inputs)}."
        )
    return columns


def _strings_to_json(name: str, arr: np.ndarray):
    if name.endswith("_bytes"):
        # TF Serving's rule: binary outputs are named *_bytes and sent as b64.
        conv = [{"b64": base64.b64encode(b).decode()} for b in arr.ravel()]
    else:
        conv = []
        for b in arr.ravel():
            try:
                conv.append(b.decode())
            except UnicodeDecodeError:
                conv.append({"b64": base64.b64encode(b).decode()})
    if arr.ndim == 1:
        return conv
    if arr.ndim == 0:
        return conv[0]
    out = np.empty(len(conv), dtype=object)
    out[:] = conv
    return out.reshape(arr.shape).tolist()


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """Shapes signature outputs as TF Serving's `predictions` or `outputs`."""
    conv = {k: _strings_to_json(k, v) if v.dtype == object else v for k, v in outputs.items()}
    if not row_format:
        return {"outputs": conv if len(conv) != 1 else next(iter(conv.values()))}
    sizes = {k: (len(v) if np.ndim(outputs[k]) else None) for k, v in conv.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise RequestError(
            f"The outputs' batch sizes differ ({sizes}), which the row format cannot "
            'express; send the request in the columnar "inputs" format.'
        )
    if len(conv) == 1:
        return {"predictions": next(iter(conv.values()))}
    n = next(iter(sizes.values()))
    return {"predictions": [{k: v[i] for k, v in conv.items()} for i in range(n)]}


# --------------------------------------------------------------------------
# TensorProto (gRPC, warm-up files)
# --------------------------------------------------------------------------

_TYPED_FIELDS = ("half_val", "float_val", "double_val", "int_val", "string_val", "int64_val",
                 "bool_val", "uint32_val", "uint64_val", "scomplex_val", "dcomplex_val")


def proto_inputs_to_tensors(inputs, sig, limits: Limits = _NO_LIMITS) -> dict:
    """`PredictRequest.inputs` as signature arguments, checked before expanding them."""
    import tensorflow as tf

    from tfllm.serving import tensors as tensors_lib

    check_names(inputs, sig)
    kwargs = {}
    for name, proto in inputs.items():
        spec = sig.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            try:
                got = tf.dtypes.as_dtype(proto.dtype).name
            except TypeError:
                got = f"enum {proto.dtype}"
            raise RequestError(
                f"Input {name!r} has dtype {got} but the signature expects {spec_str(spec)}.")
        if proto.tensor_shape.unknown_rank:
            raise RequestError(f"Input {name!r} declares an unknown rank; send its shape.")
        shape = [d.size for d in proto.tensor_shape.dim]
        check_shape(name, shape, spec, limits)
        count = math.prod(shape)
        if proto.dtype == tf.string.as_datatype_enum:
            given = len(proto.string_val)
            if given not in (count, 1) or (given == 1 and count == 0):
                raise RequestError(
                    f"Input {name!r} declares shape {shape} ({count} values) but holds {given}.")
            _check_strings(name, proto.string_val, limits)
        elif proto.tensor_content:
            itemsize = spec.dtype.size
            if len(proto.tensor_content) != count * itemsize:
                raise RequestError(
                    f"Input {name!r} declares shape {shape} ({count} values, "
                    f"{count * itemsize} bytes) but tensor_content holds "
                    f"{len(proto.tensor_content)} bytes.")
        else:
            given = max(len(getattr(proto, f)) for f in _TYPED_FIELDS)
            if given > count:
                raise RequestError(
                    f"Input {name!r} declares shape {shape} ({count} values) but holds {given}.")
        try:
            arr = tensors_lib.from_tensor_proto(proto)
        except Exception as e:  # noqa: BLE001 - any malformed proto is the client's
            raise RequestError(f"Input {name!r} is not a valid TensorProto: "
                               f"{str(e).splitlines()[0][:300]}") from e
        if arr.dtype != object:
            if arr.dtype.kind == "f" and arr.size:
                arr = as_finite_floats(name, arr, spec.dtype.as_numpy_dtype)
            _check_ids(name, arr)
        kwargs[name] = tf.constant(arr, spec.dtype)
    check_batch_sizes(kwargs, sig)
    return kwargs


def clean_tf_message(message: str, vocabulary_size: int | None = None) -> str:
    """What the model said, without the graph node and call-stack lines TensorFlow adds (`vocabulary_size`: the
    signature's token embedding's rows, where known)."""
    # The op that failed, before its lines go: a token id out of range is a fact about the
    # vocabulary only if the token embedding refused it (below).
    node = re.search(r"Detected at node (\S+)|\{\{node ([^}]+)\}\}", message)
    node = (node[1] or node[2]) if node else None
    if "assertion failed:" in message:
        message = message[message.index("assertion failed:"):]
    message = re.sub(r"Graph execution error:\s*|Detected at node .*?\(most recent call "
                     r"last\):\s*(<stack traces unavailable>)?\s*", "", message)
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.lstrip().startswith(("[[", "Function call stack"))]
    message = " ".join(lines)
    # tf.debugging.assert_* appends its operands with graph tensor names ("[Condition x > y did
    # not hold element-wise:] [x (StringLength:0) = ] [0] ..."): noise to a client. The
    # assertion's own message is the bracketed text before it.
    message = re.sub(r"\s*\[Condition .*", "", message, flags=re.S)
    message = re.sub(r"^assertion failed: \[([^\[\]]*)\]$", r"\1", message)
    message = message[:2000] or "The model rejected the request."
    ids = re.search(r"indices\[[\d,]+\] = (-?\d+) is not in \[0, (\d+)\)", message)
    # Another table looked up by the same ids (a classifier's wide n-gram table: vocabulary + hash buckets rows) runs
    # beside the token embedding, and whichever refuses an id first names its own size, not the vocabulary's: ids
    # from 306 on named 'wide_ngrams' [0, 306). The servable read the embedding's size at load time for that.
    vocabulary = int(ids[2]) if ids and (node is None or re.search(r"(^|/)token_embedding", node)) else vocabulary_size
    if ids and vocabulary is not None and not 0 <= int(ids[1]) < vocabulary:
        return (f"Token id {ids[1]} is outside the model's vocabulary [0, {vocabulary}); "
                f"send ids from 0 to {vocabulary - 1}.")
    if ids:
        table = node.rsplit("/", 1)[0] if "/" in node else node
        return (f"Token id {ids[1]} is out of range for the model: its lookup table {table!r} "
                f"takes [0, {ids[2]}), and its vocabulary may be smaller; send ids within it.")
    return message
