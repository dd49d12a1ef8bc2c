"""numpy arrays <-> `TensorProto`s for the gRPC client and the local server.

`tf.make_tensor_proto` and `tf.make_ndarray` handle every case but cost tens of
microseconds per call in Python, several times per request; for the dtypes a
request carries, filling the proto fields directly is a few microseconds. Both
produce what TF Serving itself sends and accepts (numbers in `tensor_content`,
strings in `string_val`); anything else falls back to TensorFlow's functions.
"""

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMERIC = {
    np.dtype("float32"): types_pb2.DT_FLOAT,
    np.dtype("float64"): types_pb2.DT_DOUBLE,
    np.dtype("float16"): types_pb2.DT_HALF,
    np.dtype("int32"): types_pb2.DT_INT32,
    np.dtype("int64"): types_pb2.DT_INT64,
    np.dtype("int16"): types_pb2.DT_INT16,
    np.dtype("int8"): types_pb2.DT_INT8,
    np.dtype("uint8"): types_pb2.DT_UINT8,
    np.dtype("bool"): types_pb2.DT_BOOL,
}
_FROM_ENUM = {enum: dtype for dtype, enum in _NUMERIC.items()}


def to_tensor_proto(array, dtype=None) -> tensor_pb2.TensorProto:
    """A `TensorProto` of a numpy array (numbers, bools, or str/bytes objects).

    `dtype` (a `tf.DType`) is only used by the fallback, which raises
    `TypeError`/`ValueError` for values that do not fit it.
    """
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    enum = _NUMERIC.get(array.dtype)
    if enum is not None:
        proto.dtype = enum
        proto.tensor_content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    if array.dtype.kind in "OSU":
        values = [v.encode() if isinstance(v, str) else v for v in array.ravel().tolist()]
        if all(isinstance(v, bytes) for v in values):
            proto.dtype = types_pb2.DT_STRING
            proto.string_val.extend(values)
            return proto
    import tensorflow as tf

    return tf.make_tensor_proto(array, dtype=dtype)


def from_tensor_proto(proto) -> np.ndarray:
    """The numpy array of a `TensorProto` (strings come back as a `bytes` object array)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = math.prod(shape)  # 1 for a scalar; a Python int, without numpy's per-call cost
    dtype = _FROM_ENUM.get(proto.dtype)
    if dtype is not None and proto.tensor_content and len(proto.tensor_content) == count * dtype.itemsize:
        return np.frombuffer(proto.tensor_content, dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == count:
        array = np.empty(count, dtype=object)
        array[:] = list(proto.string_val)
        return array.reshape(shape)
    import tensorflow as tf

    return tf.make_ndarray(proto)  # typed *_val fields, broadcast scalars, other dtypes
