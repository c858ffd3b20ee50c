"""A small ONNX graph builder with seeded random weights, used to write the demo models.

Built directly with ``onnx.helper`` (no torch, no downloads): the server extra does not need torch,
and the weights depend only on the seed. Batch normalisation is folded into the preceding
convolution, as an exporter does for inference; :attr:`GraphBuilder.folded_bn_channels` counts the
channels so that parameter counts can be compared with the published (unfolded) ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
"""ONNX opset of the demo models (17: ``LayerNormalization``)."""

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class GraphBuilder:
    """Accumulates nodes and initializers; each method returns the name of the tensor it makes."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.parameters = 0
        """Weights created with :meth:`weight` (constants are not counted)."""
        self.folded_bn_channels = 0
        """Channels of batch norms folded into convolutions (each would add 2 trainable parameters)."""
        self._counter = 0

    # -- names, inputs, outputs -------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, tensor: str, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        self.op("Identity", [tensor], out=name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    # -- tensors ------------------------------------------------------------------------------
    def const(self, value: np.ndarray, prefix: str = "const") -> str:
        """A constant (not a trained parameter): shapes, scales, axes."""
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: Sequence[int], std: float, prefix: str = "w") -> str:
        """A trained parameter drawn from N(0, std²) with the builder's seed."""
        arr = (self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std)).astype(np.float32)
        self.parameters += arr.size
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ones(self, n: int, prefix: str = "gamma") -> str:
        """A trained scale vector initialised to one (LayerNorm gamma)."""
        self.parameters += n
        return self.const(np.ones(n, dtype=np.float32), prefix)

    def zeros(self, n: int, prefix: str = "beta") -> str:
        """A trained bias vector initialised to zero."""
        self.parameters += n
        return self.const(np.zeros(n, dtype=np.float32), prefix)

    # -- operators ---------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        name = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=self.fresh(op_type), **attrs))
        return name

    def conv_bn(
        self,
        x: str,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        gain: float = 2.0,
    ) -> str:
        """Convolution followed by a (folded) batch norm: a conv with a bias, He-initialised."""
        fan_in = (c_in // groups) * kernel * kernel
        w = self.weight((c_out, c_in // groups, kernel, kernel), math.sqrt(gain / fan_in), "conv_w")
        b = self.zeros(c_out, "conv_b")
        self.folded_bn_channels += c_out  # the conv bias is the folded batch norm's shift
        pad = kernel // 2
        return self.op(
            "Conv",
            [x, w, b],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )

    def linear(self, x: str, d_in: int, d_out: int, gain: float = 1.0) -> str:
        """``x @ W + b`` over the last axis (works for 2-D and 3-D ``x``)."""
        w = self.weight((d_in, d_out), math.sqrt(gain / d_in), "fc_w")
        b = self.zeros(d_out, "fc_b")
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def relu6(self, x: str) -> str:
        lo = self.const(np.array(0.0, dtype=np.float32), "zero")
        hi = self.const(np.array(6.0, dtype=np.float32), "six")
        return self.op("Clip", [x, lo, hi])

    def gelu(self, x: str) -> str:
        """Exact GELU, ``0.5·x·(1 + erf(x/√2))`` (ONNX Runtime fuses the pattern)."""
        inv_sqrt2 = self.const(np.array(1 / math.sqrt(2), dtype=np.float32), "inv_sqrt2")
        one = self.const(np.array(1.0, dtype=np.float32), "one")
        half = self.const(np.array(0.5, dtype=np.float32), "half")
        erf = self.op("Erf", [self.op("Mul", [x, inv_sqrt2])])
        return self.op("Mul", [self.op("Mul", [x, half]), self.op("Add", [erf, one])])

    def layer_norm(self, x: str, dim: int) -> str:
        return self.op("LayerNormalization", [x, self.ones(dim), self.zeros(dim)], axis=-1, epsilon=1e-12)

    def global_pool_flatten(self, x: str) -> str:
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)

    # -- result --------------------------------------------------------------------------------
    def build(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="sloserve-demo",
            doc_string=doc,
        )
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
