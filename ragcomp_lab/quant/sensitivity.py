"""Per-layer sensitivity to quantization, and the mixed-precision skip list it suggests.

`layer_sensitivity(model, tok, rows, cfg, calib)` quantizes the model once with `cfg` (every
Linear, so that static calibration sees the float activations), then puts ONE quantized Linear
at a time into the float model and measures the damage against the float model on real prompts:

    KL(p_float || p_quant) per position (nats), and top-1 agreement (same argmax),

over the answer positions, teacher-forced, as `evaluation.token_agreement` does (or over every
prompt position with positions="all": more distributions per forward pass). The table comes back
sorted, most sensitive first; `mixed_precision_skip(table, n)` turns its head into a `skip` tuple
for QuantConfig: those layers stay in float, the rest are quantized.

Cost: one forward pass per layer, from the block that holds it (block inputs are cached, so a
layer of the last block costs one block), i.e. about half a model forward per Linear on average.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import QuantConfig
from . import api
from .targets import linear_targets, set_module, skipped, tied_embeddings

POSITIONS = ("answer", "all")
MODES = ("dynamic", "static", "weight_only", "gptq")  # modes that quantize Linear by Linear


@dataclasses.dataclass
class Reference:
    """The float model's next-token log-probabilities at the measured positions, per batch."""

    batches: list  # model inputs: {"input_ids", "attention_mask"} (B, L)
    keep: list  # (B, L-1) bool: the positions measured (position t predicts token t + 1)
    logprobs: list  # (n, V) float32 per batch
    positions: str

    @property
    def count(self) -> int:
        return sum(int(k.sum()) for k in self.keep)


def _pairs(tok, rows, positions: str):
    from ..data.encode import encode_pair

    cols = getattr(rows, "column_names", None) or (list(rows) if isinstance(rows, dict) else [])
    missing = [c for c in ("prompt", "answer", "kind") if c not in cols]
    if missing:
        raise ValueError(f"rows need the columns prompt, answer, kind (a split of rl.data.rag_splits); missing {missing}")
    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r} is not supported: use 'answer' (the gold answer's tokens, "
                         f"as token_agreement) or 'all' (every position of prompt and answer)")
    pairs = [encode_pair(tok, p, a) for p, a, k in zip(rows["prompt"], rows["answer"], rows["kind"])
             if k != "unanswerable"]
    if not pairs:
        raise ValueError("rows hold no answerable row: sensitivity is measured on the gold answers of at least one")
    return pairs


def reference(model: nn.Module, tok, rows, positions: str = "answer", batch_size: int = 8) -> Reference:
    """The float `model`'s log-probabilities on the answerable `rows`, kept for `agreement`."""
    from ..data.encode import IGNORE, collate
    from .. import _validate

    _validate.positive_int("batch_size", batch_size)
    pairs = _pairs(tok, rows, positions)
    ref = Reference([], [], [], positions)
    for start in range(0, len(pairs), batch_size):
        b = collate(pairs[start:start + batch_size], tok.pad_token_id)
        keep = (b["labels"][:, 1:] != IGNORE) if positions == "answer" else b["attention_mask"][:, 1:].bool()
        batch = {k: b[k] for k in ("input_ids", "attention_mask")}
        ref.batches.append(batch)
        ref.keep.append(keep)
        ref.logprobs.append(_logits(model, batch, keep).float().log_softmax(-1))
    return ref


def _logits(model, batch, keep) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model.get_decoder()(**batch, use_cache=False).last_hidden_state[:, :-1][keep]
        return model.get_output_embeddings()(hidden)


def _compare(ref_logprobs: torch.Tensor, logits: torch.Tensor) -> tuple[float, int]:
    """(summed KL(ref || model) over the positions, number of positions with the same argmax)."""
    q = logits.float().log_softmax(-1)
    kl = (ref_logprobs.exp() * (ref_logprobs - q)).sum(-1).clamp(min=0).sum().item()  # >= 0 up to rounding
    return kl, int((ref_logprobs.argmax(-1) == q.argmax(-1)).sum())


def agreement(model: nn.Module, ref: Reference) -> dict[str, float]:
    """{"token_kl", "top1"} of `model` against the float model that made `ref` (the same numbers
    as evaluation.token_agreement for positions="answer", without re-running the float model)."""
    kl, same = 0.0, 0
    for batch, keep, p in zip(ref.batches, ref.keep, ref.logprobs):
        k, s = _compare(p, _logits(model, batch, keep))
        kl, same = kl + k, same + s
    return {"token_kl": kl / ref.count, "top1": same / ref.count}


class _FromBlock:
    """Runs the float model from block i on cached block inputs (falls back to a full forward if
    the decoder has no `layers` list or the shortcut does not reproduce the full forward)."""

    def __init__(self, model, ref: Reference):
        self.model, self.ref = model, ref
        self.dec, self.head = model.get_decoder(), model.get_output_embeddings()
        layers = getattr(self.dec, "layers", None)
        self.layers = list(layers) if isinstance(layers, nn.ModuleList) else None
        ids = {id(m): n for n, m in model.named_modules()}
        self.head_name = ids.get(id(self.head))
        self.block_names = [ids[id(m)] for m in self.layers] if self.layers else []
        self.inputs, self.final = [], []  # per batch: [block inputs], last hidden state at kept positions
        if self.layers:
            self._cache()
            mid = len(self.layers) // 2
            for b, p in enumerate(ref.logprobs):
                if not torch.allclose(self._from(b, mid).float().log_softmax(-1), p, atol=1e-3):
                    self.layers = None
                    break

    def _cache(self) -> None:
        for batch, keep in zip(self.ref.batches, self.ref.keep):
            seen = []
            hooks = [m.register_forward_pre_hook(
                lambda mod, args, kw: seen.append(args[0] if args else kw["hidden_states"]), with_kwargs=True)
                for m in self.layers]
            try:
                with torch.inference_mode():
                    hidden = self.dec(**batch, use_cache=False).last_hidden_state[:, :-1][keep]
            finally:
                for h in hooks:
                    h.remove()
            self.inputs.append(seen)
            self.final.append(hidden)

    def _from(self, b: int, i: int) -> torch.Tensor:
        batch, keep = self.ref.batches[b], self.ref.keep[b]
        full = self.dec.layers
        self.dec.layers = nn.ModuleList(self.layers[i:])
        try:
            with torch.inference_mode():
                out = self.dec(inputs_embeds=self.inputs[b][i], attention_mask=batch["attention_mask"],
                               use_cache=False).last_hidden_state[:, :-1][keep]
                return self.head(out)
        finally:
            self.dec.layers = full

    def logits(self, b: int, name: str) -> torch.Tensor:
        """Logits of batch b with the (already swapped-in) module `name` changed."""
        if name == self.head_name and self.final:
            with torch.inference_mode():
                return self.model.get_output_embeddings()(self.final[b])
        if self.layers:
            for i, block in enumerate(self.block_names):
                if name.startswith(block + "."):
                    return self._from(b, i)
        return _logits(self.model, self.ref.batches[b], self.ref.keep[b])


def _check_cfg(cfg) -> None:
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg must be a ragcomp_lab.QuantConfig, got {type(cfg).__name__}")
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r} is not supported by layer_sensitivity: use one of {', '.join(MODES)} "
                         f"(a cast mode runs the whole model in one dtype; qat needs training)")


def candidates(model: nn.Module, cfg: QuantConfig, layers=None) -> list[str]:
    """The Linear layers `layer_sensitivity` measures: every one `cfg` would quantize with its own
    skip (None counts as nothing skipped), restricted to `layers` (names, prefixes or globs)."""
    names = list(linear_targets(model, cfg.skip or ()))
    if layers is None:
        return names
    if isinstance(layers, str) or not isinstance(layers, (tuple, list)) or not layers:
        raise ValueError(f"layers={layers!r} is not allowed: give a tuple of names, prefixes or globs, e.g. "
                         f"('*.mlp.down_proj', 'lm_head'), or None for every quantized Linear")
    unknown = [s for s in layers if not any(skipped(n, (s,)) for n in names)]
    if unknown:
        raise ValueError(f"layers has {unknown}, matching no quantizable Linear; names look like "
                         f"{names[:2] + names[-1:]}")
    return [n for n in names if skipped(n, tuple(layers))]


def layer_sensitivity(model: nn.Module, tok, rows, cfg: QuantConfig, calib=None, *, layers=None,
                      positions: str = "answer", batch_size: int = 8, progress: bool = False) -> list[dict]:
    """One row per Linear, most sensitive first: {"rank", "layer", "kind", "block", "kl", "top1"}:
    the mean KL(float || float-with-this-layer-quantized) per position in nats, and the top-1
    agreement (a tied LM head in weight_only mode is measured with its embedding, as quantize does it), on the answerable `rows` (columns prompt, answer, kind). `calib` as for
    rl.quantize (static and gptq need it). `model` is left as it was (layers are swapped back)."""
    _check_cfg(cfg)
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first (dropout would blur the measure)")
    full = dataclasses.replace(cfg, skip=cfg.skip or ())
    names = candidates(model, full, layers)
    ref = reference(model, tok, rows, positions, batch_size)
    quantized = api.quantize(model, full, calib)
    runner = _FromBlock(model, ref)
    table = []
    from tqdm.auto import tqdm

    tied = tied_embeddings(model)
    for name in tqdm(names, desc="layer sensitivity", disable=not progress):
        swap = [name]  # weight_only turns a tied embedding into a reader of the head's codes: both change
        if name in tied and type(quantized.get_submodule(tied[name])) is not type(model.get_submodule(tied[name])):
            swap.append(tied[name])
        originals = {n: model.get_submodule(n) for n in swap}
        for n in swap:
            set_module(model, n, quantized.get_submodule(n))
        try:
            kl, same = 0.0, 0
            for b, p in enumerate(ref.logprobs):
                k, s = _compare(p, runner.logits(b, swap[-1]))
                kl, same = kl + k, same + s
        finally:
            for n, m in originals.items():
                set_module(model, n, m)
        block = next((i for i, blk in enumerate(runner.block_names) if name.startswith(blk + ".")), None)
        table.append({"layer": name, "kind": name.rpartition(".")[2], "block": block, "kl": kl / ref.count,
                      "top1": same / ref.count})
    table.sort(key=lambda r: (-r["kl"], r["top1"], r["layer"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(table)]


def mixed_precision_skip(table: list[dict], n: int) -> tuple[str, ...]:
    """The `n` most sensitive layers of a `layer_sensitivity` table (highest KL first), as a
    `skip` tuple for QuantConfig: keep them in float, quantize the rest."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} is not allowed: use an integer >= 0 (the number of layers kept in float)")
    if not isinstance(table, (list, tuple)) or not all(isinstance(r, dict) and "layer" in r and "kl" in r
                                                       for r in table):
        raise ValueError("table must be the list of rows that layer_sensitivity returns (dicts with 'layer', 'kl')")
    if n > len(table):
        raise ValueError(f"n={n} is more than the {len(table)} layers in the table")
    return tuple(r["layer"] for r in sorted(table, key=lambda r: -r["kl"])[:n])
