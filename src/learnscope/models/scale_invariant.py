"""Scale-invariant (SI) networks of Kodryan, Lobacheva, Nakhodnov & Vetrov, "Training Scale-Invariant Neural
Networks on the Sphere Can Happen in Three Regimes" (NeurIPS 2022), and the detection of their SI parameters
from the architecture.

A parameter set S is scale-invariant when f(x; αS, rest) = f(x; S, rest) for every α > 0: then the loss
gradient is orthogonal to S and scales as 1/α, so only the direction of S matters and training can be put on a
sphere. The paper's networks get this from bias-free convolutions feeding BatchNorm (batch statistics, train
mode) and a fixed head:

- `convnet_si`: the paper's ConvNetSI (depth 3, width c): conv3x3(C→c)-BN-ReLU, then per stage
  conv(c→2c)-BN-ReLU-MaxPool2 (three stages), global max-pool, Linear(8c→classes). Each conv is SI on its own.
- `resnet18_si`: a pre-activation ResNet-18 with an extra BatchNorm in each downsampling shortcut (BN→conv1x1)
  and the tail BN-ReLU-AvgPool-Linear(8k→classes, no bias). Its convs are SI only *jointly*: an identity
  shortcut adds a block's input to its last conv's output, so the convs chained by shortcuts within a stage
  must be scaled together (`scale_invariant_groups` gives those groups).
- `mlp_si`: depth x [Linear(no bias)-BatchNorm1d-ReLU], then a Linear head, for small flattened inputs.
- `*_af` variants: the same with affine BatchNorm (γ, β trainable, not SI) and a trainable head, for training
  in the whole parameter space.

Every BatchNorm is `affine=False` in the SI kinds and every conv/linear before a BatchNorm is bias-free. The
head is rescaled to Frobenius norm `head_norm` (the original's `init_scale`/`linear_norm`, 10) and frozen
(`requires_grad=False`; the original froze it with lr = 0). With `head_seed` the head is drawn from its own
generator, so every run shares one head (the original's `--same_last_layer`, seed 228).

Initialisation: PyTorch's defaults from the global RNG, in module order (the caller seeds it); the head too is
first drawn from the global RNG, and only then, with `head_seed`, redrawn (same distribution) from a private
`torch.Generator`. So the global RNG is consumed identically whatever `head_seed` is, and the body does not
depend on it.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import MODELS
from ..sections import ModelConfig
from .convnet import image_shape
from .mlp import MLP

# --- configs -----------------------------------------------------------------------------------------------


class SIHeadConfig(ModelConfig):
    """The head options every SI kind shares."""

    # rescale the head weight to this Frobenius norm at init and freeze the head; None: leave it as drawn and
    # trainable
    head_norm: PositiveFloat | None = 10.0
    # draw the head from its own generator with this seed (one head for all runs); None: the global RNG
    head_seed: NonNegativeInt | None = 228


class ConvNetSIConfig(SIHeadConfig):
    """ConvNetSI of Kodryan et al. 2022: width c (channels c, 2c, 4c, 8c at depth 3), BN without affine."""

    kind: Literal["convnet_si"] = "convnet_si"
    width: PositiveInt = 32
    depth: PositiveInt = 3  # convs after the first; the paper's ConvNetSI has 3
    head_bias: bool = True


class ConvNetSIAfConfig(ConvNetSIConfig):
    """ConvNetSIAf: ConvNetSI with affine BatchNorm and a trainable, unrescaled head."""

    kind: Literal["convnet_si_af"] = "convnet_si_af"  # type: ignore[assignment]
    head_norm: PositiveFloat | None = None


class ResNet18SIConfig(SIHeadConfig):
    """ResNet18SI of Kodryan et al. 2022: pre-activation ResNet-18, stage widths k, 2k, 4k, 8k."""

    kind: Literal["resnet18_si"] = "resnet18_si"
    width: PositiveInt = 64
    head_bias: bool = False


class ResNet18SIAfConfig(ResNet18SIConfig):
    """ResNet18SIAf: ResNet18SI with affine BatchNorm and a trainable, unrescaled head."""

    kind: Literal["resnet18_si_af"] = "resnet18_si_af"  # type: ignore[assignment]
    head_norm: PositiveFloat | None = None


class MLPSIConfig(SIHeadConfig):
    """A fully SI MLP for small data: depth x [Linear(no bias)-BatchNorm1d(affine=False)-ReLU], a head."""

    kind: Literal["mlp_si"] = "mlp_si"
    depth: PositiveInt = 2
    width: PositiveInt = 128
    head_bias: bool = True


class MLPSIAfConfig(MLPSIConfig):
    """The SI MLP with affine BatchNorm1d and a trainable, unrescaled head."""

    kind: Literal["mlp_si_af"] = "mlp_si_af"  # type: ignore[assignment]
    head_norm: PositiveFloat | None = None


# --- the head ----------------------------------------------------------------------------------------------


def init_head(head: nn.Linear, norm: float | None, seed: int | None) -> None:
    """Redraw `head` from its own generator seeded `seed` (PyTorch's default Linear init, so the values are
    those of `torch.manual_seed(seed); nn.Linear(...)`, as the original's --same_last_layer), then rescale its
    weight to Frobenius norm `norm` and freeze the whole head (weight and bias). None skips either step."""
    with torch.no_grad():
        if seed is not None:  # drawn on the CPU, so the head is the same whatever the model's device
            g = torch.Generator().manual_seed(seed)
            w = torch.empty(head.weight.shape, dtype=head.weight.dtype)
            head.weight.copy_(nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g))
            if head.bias is not None:
                bound = 1 / math.sqrt(head.in_features) if head.in_features > 0 else 0.0
                b = torch.empty(head.bias.shape, dtype=head.bias.dtype)
                head.bias.copy_(nn.init.uniform_(b, -bound, bound, generator=g))
        if norm is not None:
            w = head.weight.detach().clone()
            head.weight.copy_(norm * w / w.norm())  # the original's alpha * W / W.norm()
    if norm is not None:
        head.requires_grad_(False)


def _norm2d(channels: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine)


# --- ConvNetSI ---------------------------------------------------------------------------------------------


class ConvNetSI(nn.Module):
    """ConvNetSI / ConvNetSIAf (Kodryan et al. 2022): conv3x3-BN-ReLU, then three stages; stage s has
    depth//3 + (depth%3 > s) blocks conv3x3-BN-ReLU, the last of which doubles the width and max-pools by 2.
    Then a global max-pool (the original's MaxPool(4) on 32x32 input; adaptive here so other sizes work),
    flatten and the Linear head. Convs have no bias."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int,
        depth: int,
        affine: bool,
        head_bias: bool,
    ):
        super().__init__()
        c_in = input_shape[0]
        blocks = [self._block(c_in, width, affine, pool=False)]
        current = width
        for stage in range(3):
            n = depth // 3 + (depth % 3 > stage)
            for i in range(n):
                last = i == n - 1
                out = 2 * current if last else current
                blocks.append(self._block(current, out, affine, pool=last))
                current = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(current, num_classes, bias=head_bias)

    @staticmethod
    def _block(c_in: int, c_out: int, affine: bool, pool: bool) -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            norm=_norm2d(c_out, affine),
            act=nn.ReLU(),
        )
        if pool:
            layers["pool"] = nn.MaxPool2d(2)
        return nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(self.pool(self.blocks(x))))

    def probe_layers(self) -> list[str]:
        """The SI convs (their pre-BN output), in forward order."""
        return [f"blocks.{i}.conv" for i in range(len(self.blocks))]

    def post_activation_layers(self) -> list[str]:
        return [f"blocks.{i}.act" for i in range(len(self.blocks))]


# --- ResNet18SI --------------------------------------------------------------------------------------------


class PreActBlockSI(nn.Module):
    """Pre-activation BasicBlock: a = ReLU(BN1(x)); y = conv2(ReLU(BN2(conv1(a)))) + shortcut, the shortcut
    being x, or BN→conv1x1 of a where the shape changes (the extra BN keeps the shortcut conv SI)."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool):
        super().__init__()
        self.norm1 = _norm2d(c_in, affine)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = _norm2d(c_out, affine)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    norm=_norm2d(c_in, affine), conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        a = self.act1(self.norm1(x))
        y = self.conv2(self.act2(self.norm2(self.conv1(a))))
        # the shortcut after conv2 (the original computes it first; same value), so modules fire in order
        return y + (x if self.shortcut is None else self.shortcut(a))


class ResNet18SI(nn.Module):
    """ResNet18SI / ResNet18SIAf (Kodryan et al. 2022): conv3x3 stem (no BN after it: each block normalises
    its input), 4 stages of 2 pre-activation blocks (strides 1, 2, 2, 2), then BN-ReLU, global average pool
    (the original's AvgPool(4) on 32x32 input), flatten and the Linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int, affine: bool, head_bias: bool):
        super().__init__()
        k = width
        self.stem = nn.Conv2d(in_channels, k, 3, padding=1, bias=False)
        self.layer1 = self._stage(k, k, 1, affine)
        self.layer2 = self._stage(k, 2 * k, 2, affine)
        self.layer3 = self._stage(2 * k, 4 * k, 2, affine)
        self.layer4 = self._stage(4 * k, 8 * k, 2, affine)
        self.norm = _norm2d(8 * k, affine)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(8 * k, num_classes, bias=head_bias)

    @staticmethod
    def _stage(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Sequential:
        return nn.Sequential(
            PreActBlockSI(c_in, c_out, stride, affine), PreActBlockSI(c_out, c_out, 1, affine)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(self.flatten(self.pool(self.act(self.norm(x)))))

    def probe_layers(self) -> list[str]:
        """The SI convs, in forward order: the stem, then per block conv1, conv2 (and the shortcut conv)."""
        names = ["stem"]
        for s in range(1, 5):
            for b in range(2):
                names += [f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2"]
                if s > 1 and b == 0:
                    names.append(f"layer{s}.{b}.shortcut.conv")
        return names


# --- MLP ---------------------------------------------------------------------------------------------------


# --- builders ----------------------------------------------------------------------------------------------


def _convnet_si(cfg: ConvNetSIConfig, input_shape: tuple[int, ...], num_classes: int, affine: bool):
    shape = image_shape(cfg.kind, input_shape)
    pools = min(cfg.depth, 3)  # one max-pool by 2 per stage that has a block
    if min(shape[1:]) < 2**pools:
        raise ConfigError(
            f"model {cfg.kind!r} at depth {cfg.depth} needs H and W >= {2**pools}; got input shape {shape}"
        )
    model = ConvNetSI(shape, num_classes, cfg.width, cfg.depth, affine, cfg.head_bias)
    init_head(model.head, cfg.head_norm, cfg.head_seed)
    return model


@MODELS.register("convnet_si", ConvNetSIConfig)
def convnet_si(cfg: ConvNetSIConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _convnet_si(cfg, input_shape, num_classes, affine=False)


@MODELS.register("convnet_si_af", ConvNetSIAfConfig)
def convnet_si_af(cfg: ConvNetSIAfConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _convnet_si(cfg, input_shape, num_classes, affine=True)


def _resnet18_si(cfg: ResNet18SIConfig, input_shape: tuple[int, ...], num_classes: int, affine: bool):
    c_in, _, _ = image_shape(cfg.kind, input_shape)
    model = ResNet18SI(c_in, num_classes, cfg.width, affine, cfg.head_bias)
    init_head(model.head, cfg.head_norm, cfg.head_seed)
    return model


@MODELS.register("resnet18_si", ResNet18SIConfig)
def resnet18_si(cfg: ResNet18SIConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _resnet18_si(cfg, input_shape, num_classes, affine=False)


@MODELS.register("resnet18_si_af", ResNet18SIAfConfig)
def resnet18_si_af(cfg: ResNet18SIAfConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _resnet18_si(cfg, input_shape, num_classes, affine=True)


def _mlp_si(cfg: MLPSIConfig, input_shape: tuple[int, ...], num_classes: int, affine: bool):
    # the MLP of mlp.py with bias-free hidden layers into BatchNorm (affine only in the _af kind)
    model = MLP(math.prod(input_shape), num_classes, cfg.depth, cfg.width, batchnorm=True, bias=False,
                norm_affine=affine, head_bias=cfg.head_bias)  # fmt: skip
    init_head(model.head, cfg.head_norm, cfg.head_seed)
    return model


@MODELS.register("mlp_si", MLPSIConfig)
def mlp_si(cfg: MLPSIConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _mlp_si(cfg, input_shape, num_classes, affine=False)


@MODELS.register("mlp_si_af", MLPSIAfConfig)
def mlp_si_af(cfg: MLPSIAfConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _mlp_si(cfg, input_shape, num_classes, affine=True)


# --- finding the SI parameters from the architecture ------------------------------------------------------
#
# The model is traced with torch.fx. For a candidate set S of weights, every value v of the graph gets a
# degree d(v): scaling all of S by α > 0 multiplies v by α^d(v) (d = 0: v does not change), or None when v is
# not positively homogeneous in S. Rules: inputs, buffers and constants have degree 0; a bias-free conv/linear
# adds 1 when its weight is in S (and is linear in its input otherwise); ReLU, max/avg pooling, flatten,
# reshapes, indexing, dropout and identity keep the degree; a sum (add, sub, cat, stack) needs operands of one
# degree; a product adds degrees; a normalisation layer (BatchNorm, affine or not, with batch statistics;
# LayerNorm, GroupNorm, InstanceNorm, RMSNorm) maps any degree to 0, since it divides out a positive factor of
# its input; any other op (a module with a bias, tanh, an unknown function) is fine on degree-0 inputs only.
#
# S starts as the weights of every bias-free conv/linear module of the graph. Where a rule fails (a mixed sum,
# an unknown op on a scaled value) or the output has a nonzero degree, the weights upstream of that point
# (through values of nonzero degree) are dropped from S, and the degrees are recomputed until nothing fails.
# What remains is SI: the output has degree 0. Dropping is conservative: it never claims a weight whose
# scaling could change the output, though a larger SI set may exist (e.g. BatchNorm's mean subtraction cancels
# the bias of a linear right before it, so that weight is SI; a bias stops the walk all the same).

_LINEAR_MODULES = (nn.Linear, nn.modules.conv._ConvNd)
_NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_KEEP_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.Dropout,  # not the alpha dropouts: they set dropped units to a fixed value, not homogeneous
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
_KEEP_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.leaky_relu,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.dropout,
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.permute,
    torch.transpose,
    torch.neg,
    operator.neg,
    operator.pos,
    operator.getitem,
}
_KEEP_METHODS = {
    "relu",
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "view_as",
    "reshape_as",
    "neg",
    "clone",
    "chunk",
    "split",
}
_SUM_FUNCTIONS = {operator.add, operator.sub, torch.add, torch.sub}
_SUM_METHODS = {"add", "sub"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.stack}
_PRODUCT_FUNCTIONS = {operator.mul, torch.mul, operator.matmul, torch.matmul, torch.mm, torch.bmm}
_PRODUCT_METHODS = {"mul", "matmul", "mm", "bmm"}
_DIV_FUNCTIONS = {operator.truediv, torch.div, torch.true_divide}
_DIV_METHODS = {"div", "true_divide"}
_NORM_FUNCTIONS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm}
_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "ndimension"}
_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


@dataclass
class _Analysis:
    """The traced graph, its modules and the SI set S (ids of parameters) at the fixed point."""

    graph: torch.fx.Graph
    modules: dict[str, nn.Module]
    attributes: dict[str, Any]
    si: set[int] = field(default_factory=set)
    degree: dict[torch.fx.Node, int | None] = field(default_factory=dict)


def _trace(model: nn.Module) -> _Analysis:
    before = set(vars(model))
    try:
        graph = torch.fx.Tracer().trace(model)
    except Exception as exc:  # tracing runs user code; any failure means: cannot read the architecture
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot find the scale-invariant parameters of {type(model).__name__}: torch.fx cannot trace it "
            f"({first})"
        ) from exc
    # the tracer stores the forward's tensor constants as attributes of the model: read them, then remove them
    added = [k for k in vars(model) if k not in before]
    modules = dict(model.named_modules(remove_duplicate=False))
    attributes: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            obj: Any = model
            for part in node.target.split("."):
                obj = getattr(obj, part)
            attributes[node.target] = obj
    for k in added:
        delattr(model, k)
    return _Analysis(graph, modules, attributes)


def _own_si(a: _Analysis, node: torch.fx.Node, si: set[int]) -> list[int]:
    """Ids of the S parameters a node itself uses (a module's parameters, or a parameter read by get_attr)."""
    if node.op == "call_module":
        return [id(p) for p in a.modules[node.target].parameters() if id(p) in si]
    if node.op == "get_attr":
        return [id(a.attributes[node.target])] if id(a.attributes[node.target]) in si else []
    return []


def _operand_degree(deg: dict[torch.fx.Node, int | None], value: Any) -> int | None:
    return deg[value] if isinstance(value, torch.fx.Node) else 0


def _is(node: torch.fx.Node, functions: set, methods: Collection[str] = ()) -> bool:
    """Whether the node calls one of `functions` or one of the tensor `methods`."""
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def _node_degree(a: _Analysis, node: torch.fx.Node, deg: dict, si: set[int]) -> int | None:
    """The degree of one node from its inputs' (see the comment above); None: not homogeneous."""
    if node.op in ("placeholder", "output"):
        return 0
    if node.op == "get_attr":
        return 1 if _own_si(a, node, si) else 0
    inputs = [deg[n] for n in node.all_input_nodes]
    if any(d is None for d in inputs):
        return None
    head = node.args[0] if node.args else None
    first = _operand_degree(deg, head)
    rest_zero = all(d == 0 for n, d in zip(node.all_input_nodes, inputs, strict=True) if n is not head)
    if node.op == "call_module":
        mod = a.modules[node.target]
        if isinstance(mod, _LINEAR_MODULES) and getattr(mod, "bias", None) is None and rest_zero:
            return first + (1 if id(mod.weight) in si else 0)
        if isinstance(mod, _NORM_MODULES) and not _own_si(a, node, si) and rest_zero:
            return 0
        if isinstance(mod, _KEEP_MODULES) and rest_zero:
            return first
    elif _is(node, set(), _SHAPE_METHODS) or (
        node.op == "call_function" and node.target is getattr and node.args[1] in _SHAPE_ATTRIBUTES
    ):
        return 0
    elif _is(node, _KEEP_FUNCTIONS, _KEEP_METHODS) and rest_zero:
        return first
    elif _is(node, _SUM_FUNCTIONS, _SUM_METHODS) and len(node.args) == 2:
        operands = {_operand_degree(deg, v) for v in node.args}
        if len(operands) == 1:
            return operands.pop()
    elif _is(node, _CAT_FUNCTIONS) and isinstance(head, list | tuple):
        operands = {_operand_degree(deg, v) for v in head}
        if len(operands) == 1:
            return operands.pop()
    elif _is(node, _PRODUCT_FUNCTIONS, _PRODUCT_METHODS) and len(node.args) == 2 and not node.kwargs:
        return first + _operand_degree(deg, node.args[1])  # type: ignore[operator]
    elif _is(node, _DIV_FUNCTIONS, _DIV_METHODS) and len(node.args) == 2 and not node.kwargs:
        return first - _operand_degree(deg, node.args[1])  # type: ignore[operator]
    elif _is(node, _NORM_FUNCTIONS) and rest_zero:
        return 0
    # anything else: unchanged by scaling S if it reads no scaled value and no S parameter
    if all(d == 0 for d in inputs) and not _own_si(a, node, si):
        return 0
    return None


def _degrees(a: _Analysis, si: set[int]) -> tuple[dict, list[torch.fx.Node]]:
    """Degrees of all nodes under scaling `si`, and the nodes where homogeneity fails first (or, for the
    output, a nonzero degree)."""
    deg: dict[torch.fx.Node, int | None] = {}
    failures = []
    for node in a.graph.nodes:
        d = _node_degree(a, node, deg, si)
        deg[node] = d
        inputs = [deg[n] for n in node.all_input_nodes]
        if d is None and all(i is not None for i in inputs):
            failures.append(node)
        if node.op == "output" and any(i not in (0, None) for i in inputs):
            failures.append(node)
    return deg, failures


def _upstream(a: _Analysis, node: torch.fx.Node, deg: dict, si: set[int]) -> set[int]:
    """S parameters that reach `node` through values of nonzero degree, and those it uses itself."""
    found = set(_own_si(a, node, si))
    stack = [n for n in node.all_input_nodes if deg[n] not in (0, None)]
    seen: set[torch.fx.Node] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        found.update(_own_si(a, n, si))
        stack.extend(m for m in n.all_input_nodes if deg[m] not in (0, None))
    return found


def _analyse(model: nn.Module) -> _Analysis:
    a = _trace(model)
    si = set()
    for node in a.graph.nodes:
        if node.op == "call_module":
            mod = a.modules[node.target]
            if isinstance(mod, _LINEAR_MODULES) and getattr(mod, "bias", None) is None:
                si.add(id(mod.weight))
    while True:
        deg, failures = _degrees(a, si)
        drop: set[int] = set()
        for node in failures:
            drop |= _upstream(a, node, deg, si)
        if not failures:
            break
        if not drop:  # a failure that no S parameter causes cannot be fixed by dropping; nothing is SI
            si = set()
            deg, _ = _degrees(a, si)
            break
        si -= drop
    a.si, a.degree = si, deg
    return a


def scale_invariant_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The scale-invariant parameters of `model`, found from its architecture, in module order.

    The set S returned is such that scaling all of it by any α > 0 leaves the model's output unchanged, given
    that normalisation layers use batch statistics (BatchNorm in train mode): the weights of bias-free
    conv/linear modules that reach a normalisation layer's input through positively homogeneous ops (ReLU,
    pooling, reshapes, sums of equal degree, other bias-free conv/linears), and reach the output only through
    normalisation layers. A BatchNorm's affine γ/β come after the normalisation, so they do not stop the
    weights before it from being SI, and are not SI themselves. A weight whose path meets a non-homogeneous op
    (a bias, tanh, an unknown function) or that reaches the output unnormalised is not claimed.
    `requires_grad` is not consulted. The model is traced with torch.fx (a ConfigError if it cannot be).

    The set is SI jointly; `scale_invariant_groups` splits it into the smallest groups that are SI alone.
    """
    si = _analyse(model).si
    return [(name, p) for name, p in model.named_parameters() if id(p) in si]


def scale_invariant_groups(model: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """The SI parameters split into groups that are each SI on their own (scaling one group, the others
    fixed, leaves the output unchanged), in module order of their first member.

    Weights are grouped when their scaled values meet in a sum (add, sub, cat, stack): e.g. in ResNet18SI an
    identity shortcut adds a block's input, which scales with the stem or an earlier conv, to the output of
    its last conv, so these convs form one group. Each group is checked by recomputing the degrees with S =
    the group; if any fails the check, the whole SI set is returned as one group (always SI)."""
    a = _analyse(model)
    si, deg = a.si, a.degree
    parent = {i: i for i in si}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for node in a.graph.nodes:
        operands: list[Any] = []
        if (node.op == "call_function" and node.target in _SUM_FUNCTIONS) or (
            node.op == "call_method" and node.target in _SUM_METHODS
        ):
            operands = list(node.args[:2])
        elif node.op == "call_function" and node.target in _CAT_FUNCTIONS:
            operands = list(node.args[0])
        joined: set[int] = set()
        for v in operands:
            if isinstance(v, torch.fx.Node) and deg[v] not in (0, None):
                joined |= {find(i) for i in _upstream(a, v, deg, si)}
        roots = sorted(joined)
        for r in roots[1:]:
            parent[find(r)] = find(roots[0])
    named = [(name, p) for name, p in model.named_parameters() if id(p) in si]
    groups: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, p in named:
        groups.setdefault(find(id(p)), []).append((name, p))
    result = list(groups.values())
    for group in result:
        _, failures = _degrees(a, {id(p) for _, p in group})
        if failures:
            return [named] if named else []
    return result


def si_norm(params: Iterable[Tensor] | Iterable[tuple[str, Tensor]]) -> float:
    """‖w‖ of the concatenated SI vector (tensors, or (name, tensor) pairs as returned above), in float64."""
    tensors = [item[1] if isinstance(item, tuple) else item for item in params]
    if not tensors:
        return 0.0
    return math.sqrt(float(sum(p.detach().double().square().sum() for p in tensors)))
