"""mode="dynamic": PyTorch's INT8 dynamic quantization (torch.ao, fbgemm), with one activation scale
per token (TokenDynamicLinear; api.py's docstring gives the measurements), and how serialize stores
and rebuilds these layers (`dynamic_state`, `dynamic_from_state`): the dynamic backend lives here alone."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..config import QuantConfig
from .targets import linear_targets, set_module

with warnings.catch_warnings():  # torch.ao.quantization is deprecated but still the CPU INT8 path
    warnings.simplefilter("ignore")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
QCONFIGS = {"per_tensor": default_dynamic_qconfig, "per_channel": per_channel_dynamic_qconfig}


class TokenDynamicLinear(DynamicLinear):
    """torch.ao's dynamic INT8 Linear with one activation scale per token (row) instead of one per
    call: each row is divided by its max |x| before the kernel, and the output multiplied back."""

    @classmethod
    def from_dynamic(cls, m: DynamicLinear, bias: torch.Tensor | None) -> "TokenDynamicLinear":
        """The same layer over m's packed INT8 weight (shared, not unpacked and packed again); `bias`
        is m's float bias, which the kernel holds packed: forward needs it apart."""
        out = copy.copy(m)
        out.__class__ = cls
        out._modules = dict(m._modules)  # its own table of children; the packed params object is shared
        out._float_bias = None if bias is None else bias.detach().clone()  # not in state_dict: the kernel holds it
        return out

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:  # what DynamicLinear.forward runs, without its checks
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # one token: the kernel's per-call range is already its own
            return self._kernel(x)
        r = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # (..., 1)
        y = self._kernel(x / r)  # every row now spans at most [-1, 1]: one range fits them all
        b = self._float_bias
        return y.mul_(r) if b is None else y.sub_(b).mul_(r).add_(b)

    def _get_name(self):
        return "TokenDynamicQuantizedLinear"


def dynamic_quantize(model: nn.Module, cfg: QuantConfig) -> None:
    """Replace, IN PLACE, the target Linears of `model` (cfg.skip resolved) by torch.ao's INT8 dynamic ones."""
    if cfg.granularity not in QCONFIGS:
        raise ValueError(f"granularity={cfg.granularity!r} is not supported by mode='dynamic': use per_tensor "
                         f"or per_channel (per_group is a weight_only option)")
    if not cfg.symmetric:
        raise ValueError("mode='dynamic' quantizes weights symmetrically (torch.ao INT8): use symmetric=True")
    targets = linear_targets(model, cfg.skip)
    names = list(targets)
    biases = {n: m.bias for n, m in targets.items()}  # float, before torch.ao packs them with the weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {n: QCONFIGS[cfg.granularity] for n in names}, dtype=torch.qint8, inplace=True)
        if cfg.activations == "per_token":
            for n in names:
                set_module(model, n, TokenDynamicLinear.from_dynamic(model.get_submodule(n), biases[n]))


def is_dynamic_linear(module: nn.Module) -> bool:
    return isinstance(module, DynamicLinear)


def dynamic_state(module: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, tensors) of a torch.ao dynamic Linear: its INT8 weight, scales, zero-points, bias."""
    w, b = module._packed_params._weight_bias()  # unpacks the backend's prepacked weight
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    if per_channel:
        scale, zp = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    else:
        scale, zp = torch.tensor([w.q_scale()], dtype=torch.float64), torch.tensor([w.q_zero_point()])
    tensors = {"weight_int8": w.int_repr(), "weight_scale": scale, "weight_zero_point": zp}
    if b is not None:
        tensors["bias"] = b.detach()
    spec = dict(in_features=module.in_features, out_features=module.out_features, bias=b is not None,
                granularity="per_channel" if per_channel else "per_tensor",
                activations="per_token" if isinstance(module, TokenDynamicLinear) else "per_tensor")
    return spec, tensors


def dynamic_from_state(spec: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The torch.ao dynamic Linear that `dynamic_state` described, with the same INT8 weight (a file
    written before activations were recorded holds per-tensor layers)."""
    q, scale, zp = tensors["weight_int8"], tensors["weight_scale"], tensors["weight_zero_point"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = (torch._make_per_channel_quantized_tensor(q, scale, zp, 0) if spec["granularity"] == "per_channel"
             else torch._make_per_tensor_quantized_tensor(q, scale.item(), int(zp.item())))
        m = DynamicLinear(spec["in_features"], spec["out_features"], bias_=spec["bias"], dtype=torch.qint8)
        m.set_weight_bias(w, tensors.get("bias"))
    if spec.get("activations") == "per_token":
        return TokenDynamicLinear.from_dynamic(m, tensors.get("bias"))
    return m
