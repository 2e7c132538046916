"""The model spec: everything that defines a normlab network's loss apart from its parameter values.

A leaf module (it imports nothing of normlab, nor numpy or JAX): the workflow names its jobs with
``normlab.variants``, which builds specs, and every model, curvature and landscape function takes one.
``model.json`` next to each variant's checkpoints is ``ModelSpec.to_json()``.

Layers are numbered l = 1..L with L = depth + 1; ``sizes[l-1]`` and ``sizes[l]`` are layer l's input and
output widths. Hidden layers (l < L) may be normalized; the output layer is linear and never normalized.
"""

from __future__ import annotations

import dataclasses
import json

NORMS = ("none", "batchnorm", "layernorm")
INPUT_NORMS = ("none", "batchnorm")  # what the network itself does to its inputs before layer 1
ACTIVATIONS = ("relu", "tanh")
LOSSES = ("softmax_cross_entropy", "mse")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the loss J(params) from saved arrays (written as model.json).

    sizes: layer widths from input to output, ``[n_features, width, ..., n_outputs]`` (two entries for a
    model with no hidden layer). activation: ``relu`` | ``tanh``. norm: ``none`` | ``batchnorm`` |
    ``layernorm``. input_norm: ``none`` | ``batchnorm``: the network standardizes its raw inputs per
    feature with the statistics of each batch (no gamma, no beta; fixed statistics may be passed instead,
    e.g. running statistics at test time) before layer 1. eps: added to the variance inside the
    normalization. loss: ``softmax_cross_entropy``
    (mean over examples) | ``mse`` (mean of the squared error over all entries). input: the input
    treatment the model was trained on (``raw`` | ``standardize`` ...), recorded for provenance only:
    specs that differ only in it compare and hash equal, so code compiled with the spec as a static
    argument serves every input treatment of a network.
    """

    sizes: tuple[int, ...]
    activation: str = "relu"
    norm: str = "none"
    eps: float = 1e-5
    loss: str = "softmax_cross_entropy"
    input_norm: str = "none"
    input: str = dataclasses.field(default="raw", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"sizes must list at least input and output widths >= 1, got {self.sizes}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.sizes) - 2

    @property
    def n_layers(self) -> int:
        """L = depth + 1, the number of weight matrices."""
        return len(self.sizes) - 1

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        d["depth"] = self.depth
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        d = json.loads(text)
        d.pop("depth", None)
        return cls(**d)


def layer_names(spec: ModelSpec) -> list[str]:
    """``["layer1", ..., "layerL"]``: the keys of the parameter dict."""
    return [f"layer{l}" for l in range(1, spec.n_layers + 1)]


def has_bias(spec: ModelSpec, l: int) -> bool:
    """Layer l (1-based) has a bias unless batch norm follows it (hidden layer under BN)."""
    return not (spec.norm == "batchnorm" and l < spec.n_layers)


def layer_param_count(spec: ModelSpec, l: int) -> int:
    """Number of parameters in layer l's W and b (gamma and beta not counted)."""
    return spec.sizes[l - 1] * spec.sizes[l] + (spec.sizes[l] if has_bias(spec, l) else 0)


def has_affine_norm(spec: ModelSpec, l: int) -> bool:
    """Hidden layers under batch norm or layer norm carry gamma and beta."""
    return spec.norm != "none" and l < spec.n_layers


def param_count(spec: ModelSpec) -> int:
    """Number of parameters of the whole model: every layer's W and b, and gamma and beta of each normalized
    hidden layer."""
    return sum(layer_param_count(spec, l) + (2 * spec.sizes[l] if has_affine_norm(spec, l) else 0)
               for l in range(1, spec.n_layers + 1))


def equal_hidden_widths(spec: ModelSpec) -> bool:
    """True when the model has hidden layers and they all have one width: what running the upper layers
    with a traced starting layer needs (``model.outputs_from``)."""
    return spec.n_layers >= 2 and len(set(spec.sizes[1:-1])) == 1


def matmul_flops(spec: ModelSpec, m: int) -> float:
    """Floating-point operations of the weight matmuls of one forward pass on m examples:
    2 m sum_l sizes[l-1] sizes[l] (the rest of the network is a few operations per unit)."""
    return 2.0 * m * sum(a * b for a, b in zip(spec.sizes[:-1], spec.sizes[1:], strict=True))
