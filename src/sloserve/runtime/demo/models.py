"""The demo models: real architectures with seeded random weights, written as ONNX graphs.

Every model has a dynamic batch dimension (axis 0). Sizes are chosen for a small CPU:

- ``resnet18`` — ResNet-18 (He et al. 2016; torchvision layout, 1000 classes) on 3×112×112 images;
- ``mobilenet_v2`` — MobileNetV2 width 1.0 (Sandler et al. 2018; 1000 classes) on 3×112×112;
- ``bert`` — a BERT-mini-class encoder (4 layers, hidden 256, 4 heads, FFN 1024, vocab 30522) with a
  2-class head on the [CLS] token; inputs ``input_ids`` and ``attention_mask`` of shape
  (batch, sequence), the sequence length variable up to 512 (the demo config uses 64-128);
- ``mlp`` — 784 → 1024 → 1024 → 10 with ReLU;
- ``identity`` — ``OUTPUT0 = INPUT0`` (FP32, any shape (batch, n)), for measuring server overhead.

The CNNs use global average pooling, so the image size is a parameter (224 gives the canonical
cost; 112 is the default here: a quarter of the FLOPs, for 2-core machines).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from sloserve.runtime.demo.graph import FLOAT, INT64, GraphBuilder

DEFAULT_IMAGE_SIZE = 112
DEFAULT_SEED = 0


@dataclass(frozen=True, slots=True)
class DemoModel:
    """A built demo model and what is known about it."""

    name: str
    proto: onnx.ModelProto
    parameters: int
    """Weights in the ONNX graph (batch norms folded into convolutions)."""
    folded_bn_channels: int
    """Batch-norm channels folded away; ``parameters + folded_bn_channels`` is the unfolded count."""
    config: dict[str, Any] = field(default_factory=dict)
    """Suggested model configuration (the repository writes it into ``config.yaml``)."""


# -- CNNs ---------------------------------------------------------------------------------------


def _basic_block(g: GraphBuilder, x: str, c_in: int, c_out: int, stride: int) -> str:
    y = g.relu(g.conv_bn(x, c_in, c_out, 3, stride))
    y = g.conv_bn(y, c_out, c_out, 3, 1, gain=0.5)  # small last-layer gain keeps activations O(1)
    shortcut = g.conv_bn(x, c_in, c_out, 1, stride, gain=1.0) if stride != 1 or c_in != c_out else x
    return g.relu(g.op("Add", [y, shortcut]))


def resnet18(
    image_size: int = DEFAULT_IMAGE_SIZE, classes: int = 1000, seed: int = DEFAULT_SEED
) -> DemoModel:
    """ResNet-18: 11,689,512 parameters before folding at 1000 classes."""
    g = GraphBuilder("resnet18", seed)
    x = g.add_input("input", FLOAT, ["batch", 3, image_size, image_size])
    y = g.relu(g.conv_bn(x, 3, 64, 7, 2))
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        y = _basic_block(g, y, c_in, c_out, stride)
        y = _basic_block(g, y, c_out, c_out, 1)
        c_in = c_out
    logits = g.linear(g.global_pool_flatten(y), 512, classes)
    g.add_output(logits, "logits", FLOAT, ["batch", classes])
    return DemoModel(
        "resnet18",
        g.build(f"ResNet-18, random weights (seed {seed}), input 3x{image_size}x{image_size}"),
        g.parameters,
        g.folded_bn_channels,
        _cnn_config("resnet18", image_size),
    )


_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
"""(expansion t, channels c, repeats n, first stride s), as in the paper's Table 2."""


def mobilenet_v2(
    image_size: int = DEFAULT_IMAGE_SIZE, classes: int = 1000, seed: int = DEFAULT_SEED
) -> DemoModel:
    """MobileNetV2 width 1.0: 3,504,872 parameters before folding at 1000 classes."""
    g = GraphBuilder("mobilenet_v2", seed)
    x = g.add_input("input", FLOAT, ["batch", 3, image_size, image_size])
    y = g.relu6(g.conv_bn(x, 3, 32, 3, 2))
    c_in = 32
    for t, c, n, s in _MOBILENET_V2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            z = y if t == 1 else g.relu6(g.conv_bn(y, c_in, hidden, 1))
            z = g.relu6(g.conv_bn(z, hidden, hidden, 3, stride, groups=hidden))
            z = g.conv_bn(z, hidden, c, 1, gain=0.5 if stride == 1 and c_in == c else 1.0)
            y = g.op("Add", [y, z]) if stride == 1 and c_in == c else z
            c_in = c
    y = g.relu6(g.conv_bn(y, c_in, 1280, 1))
    logits = g.linear(g.global_pool_flatten(y), 1280, classes)
    g.add_output(logits, "logits", FLOAT, ["batch", classes])
    return DemoModel(
        "mobilenet_v2",
        g.build(f"MobileNetV2 1.0, random weights (seed {seed}), input 3x{image_size}x{image_size}"),
        g.parameters,
        g.folded_bn_channels,
        _cnn_config("mobilenet_v2", image_size),
    )


# -- BERT ---------------------------------------------------------------------------------------


def bert(
    layers: int = 4,
    hidden: int = 256,
    heads: int = 4,
    intermediate: int = 1024,
    vocab: int = 30522,
    max_positions: int = 512,
    classes: int = 2,
    seed: int = DEFAULT_SEED,
) -> DemoModel:
    """A BERT encoder with a classification head on [CLS] (BERT-mini sizes by default: 11.17 M + head).

    Padding positions (``attention_mask == 0``) are masked out of attention, so zero-padding a
    sequence on the right leaves ``logits`` unchanged: this model allows padding along axis 1.
    """
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    head_dim = hidden // heads
    g = GraphBuilder("bert", seed)
    ids = g.add_input("input_ids", INT64, ["batch", "sequence"])
    mask = g.add_input("attention_mask", INT64, ["batch", "sequence"])
    std = 0.02
    word = g.weight((vocab, hidden), std, "word_emb")
    pos = g.weight((max_positions, hidden), std, "pos_emb")
    token_type = g.weight((2, hidden), std, "type_emb")
    # positions 0..S-1 and token type 0 for every token
    seq_len = g.op("Gather", [g.op("Shape", [ids]), g.const(np.array(1, dtype=np.int64), "axis1")], axis=0)
    positions = g.op(
        "Range", [g.const(np.array(0, dtype=np.int64)), seq_len, g.const(np.array(1, dtype=np.int64))]
    )
    type0 = g.op("Gather", [token_type, g.const(np.array(0, dtype=np.int64))], axis=0)
    x = g.op("Add", [g.op("Gather", [word, ids], axis=0), g.op("Gather", [pos, positions], axis=0)])
    x = g.layer_norm(g.op("Add", [x, type0]), hidden)
    # additive mask (batch, 1, 1, S): 0 where attended, -10000 where padded
    maskf = g.op("Cast", [mask], to=FLOAT)
    one = g.const(np.array(1.0, dtype=np.float32), "one")
    neg = g.const(np.array(-10000.0, dtype=np.float32), "neg")
    bias = g.op("Mul", [g.op("Sub", [one, maskf]), neg])
    bias = g.op("Unsqueeze", [bias, g.const(np.array([1, 2], dtype=np.int64), "axes")])
    split_heads = g.const(np.array([0, 0, heads, head_dim], dtype=np.int64), "shape")
    merge_heads = g.const(np.array([0, 0, hidden], dtype=np.int64), "shape")
    scale = g.const(np.array(1 / math.sqrt(head_dim), dtype=np.float32), "scale")
    for _ in range(layers):
        q = g.op(
            "Transpose", [g.op("Reshape", [g.linear(x, hidden, hidden), split_heads])], perm=[0, 2, 1, 3]
        )
        k = g.op(
            "Transpose", [g.op("Reshape", [g.linear(x, hidden, hidden), split_heads])], perm=[0, 2, 3, 1]
        )
        v = g.op(
            "Transpose", [g.op("Reshape", [g.linear(x, hidden, hidden), split_heads])], perm=[0, 2, 1, 3]
        )
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_heads])
        x = g.layer_norm(g.op("Add", [x, g.linear(ctx, hidden, hidden)]), hidden)
        ffn = g.linear(g.gelu(g.linear(x, hidden, intermediate)), intermediate, hidden)
        x = g.layer_norm(g.op("Add", [x, ffn]), hidden)
    cls = g.op("Gather", [x, g.const(np.array(0, dtype=np.int64))], axis=1)
    pooled = g.op("Tanh", [g.linear(cls, hidden, hidden)])
    logits = g.linear(pooled, hidden, classes)
    g.add_output(logits, "logits", FLOAT, ["batch", classes])
    return DemoModel(
        "bert",
        g.build(f"BERT encoder L={layers} H={hidden} A={heads}, random weights (seed {seed})"),
        g.parameters,
        0,
        {
            "max_batch_size": 16,
            "preferred_batch_size": [4, 8, 16],
            "max_queue_delay_microseconds": 5000,
            "slo_ms": 200,
            "allow_padding": True,  # the attention mask hides padded positions
        },
    )


# -- MLP and identity ---------------------------------------------------------------------------


def mlp(sizes: tuple[int, ...] = (784, 1024, 1024, 10), seed: int = DEFAULT_SEED) -> DemoModel:
    """A multi-layer perceptron with ReLU between layers."""
    g = GraphBuilder("mlp", seed)
    x = g.add_input("input", FLOAT, ["batch", sizes[0]])
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        x = g.linear(x, d_in, d_out, gain=1.0 if last else 2.0)
        x = x if last else g.relu(x)
    g.add_output(x, "logits", FLOAT, ["batch", sizes[-1]])
    return DemoModel(
        "mlp",
        g.build(f"MLP {'-'.join(map(str, sizes))}, random weights (seed {seed})"),
        g.parameters,
        0,
        {
            "max_batch_size": 64,
            "preferred_batch_size": [16, 32, 64],
            "max_queue_delay_microseconds": 1000,
            "slo_ms": 20,
        },
    )


def identity(seed: int = DEFAULT_SEED) -> DemoModel:
    """``OUTPUT0 = INPUT0`` for FP32 tensors of shape (batch, n): the server's overhead, nothing else."""
    g = GraphBuilder("identity", seed)
    x = g.add_input("INPUT0", FLOAT, ["batch", "n"])
    g.add_output(x, "OUTPUT0", FLOAT, ["batch", "n"])
    return DemoModel(
        "identity",
        g.build("Identity (FP32), for overhead measurements"),
        0,
        0,
        {
            "max_batch_size": 256,
            "preferred_batch_size": [64, 128, 256],
            "max_queue_delay_microseconds": 200,
            "slo_ms": 10,
        },
    )


def _cnn_config(name: str, image_size: int) -> dict[str, Any]:
    return {
        "max_batch_size": 32,
        "preferred_batch_size": [4, 8, 16, 32],
        "max_queue_delay_microseconds": 5000,
        "slo_ms": 100 if name == "resnet18" else 50,
    }


DEMO_MODELS: dict[str, Callable[[], DemoModel]] = {
    "identity": identity,
    "mlp": mlp,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "bert": bert,
}
"""Demo model name → builder with the default sizes."""
