"""ONNX graphs shaped like a detector (images in, ``[1, 4 + 2 classes, n]`` out) that
would take a replica's memory or cores when loaded: what ``models.sandbox`` refuses.
Shared by the unit tests of the sandbox and the integration tests of broken versions."""

from __future__ import annotations

import numpy as np

CLASSES = ["circle", "square"]  # the class count their output declares


def _detector(body) -> bytes:
    """A graph shaped like a detector (images in, [1, 4 + classes, n] out) whose output
    ``body`` computes from a list of nodes it returns."""
    import onnx
    from onnx import TensorProto, helper

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, "n"])
    nodes, initializers = body()
    graph = helper.make_graph(nodes, "bomb", [images], [out], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def memory_bomb() -> bytes:
    """~300 bytes asking for 1 x 6 x 400 M floats (9.6 GB) of zeros."""
    from onnx import TensorProto, helper, numpy_helper

    def body():
        shape = numpy_helper.from_array(np.array([1, 6, 400_000_000], dtype=np.int64), "shape")
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
        node = helper.make_node("ConstantOfShape", ["shape"], ["output0"], value=zero)
        return [node], [shape]

    return _detector(body)


def endless_loop() -> bytes:
    """A Loop of 10^12 iterations adding one to a scalar, then a tiny output."""
    from onnx import TensorProto, helper, numpy_helper

    def body():
        i = helper.make_tensor_value_info("i", TensorProto.INT64, [])
        cond_in = helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])
        acc_in = helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])
        cond_out = helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])
        acc_out = helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])
        one = numpy_helper.from_array(np.ones(1, dtype=np.float32), "one")
        loop_body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            ],
            "spin",
            [i, cond_in, acc_in],
            [cond_out, acc_out],
            [one],
        )
        trips = numpy_helper.from_array(np.array(10**12, dtype=np.int64), "trips")
        keep_going = numpy_helper.from_array(np.array(True), "keep_going")
        start = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "start")
        shape = numpy_helper.from_array(np.array([1, 6, 1], dtype=np.int64), "shape")
        return [
            helper.make_node("Loop", ["trips", "keep_going", "start"], ["acc"], body=loop_body),
            helper.make_node("Expand", ["acc", "shape"], ["output0"]),
        ], [trips, keep_going, start, shape]

    return _detector(body)
