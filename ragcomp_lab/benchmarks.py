"""`make bench`: every benchmark ratio, measured side by side in one run, printed and written to
build/bench.json as [{"name", "value", "floor", "met"}] (the file is not committed)."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from . import quant
from .bench import compare
from .losses import kd_kl


def _ratio(name: str, ours, reference, floor: float) -> dict:
    """value = reference time / our time: 1 means no overhead; `floor` is the lowest we accept."""
    value = reference.median / ours.median
    return {"name": name, "value": round(value, 3), "floor": floor, "met": value >= floor,
            "ours_ms": round(1e3 * ours.median, 3), "reference_ms": round(1e3 * reference.median, 3)}


def core_math() -> list[dict]:
    """Our losses and quantizers against PyTorch's own ops on LLM-sized tensors."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(256, 49152, generator=g), torch.randn(256, 49152, generator=g)  # 256 tokens, SmolLM2's vocab
    w = torch.randn(1536, 576, generator=g)  # a SmolLM2 MLP weight
    scale, zp = quant.qparams(w, 8, False, "per_channel")
    rows = []
    kd = compare({"ours": lambda: kd_kl(s, t, 2.0),
                  "ref": lambda: F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4})
    rows.append(_ratio("kd_kl speed vs F.kl_div reference (256 x 49152)", kd["ours"], kd["ref"], floor=0.7))
    fq = compare({"ours": lambda: quant.fake_quant(w, 8, False, "per_channel", scale=scale, zero_point=zp),
                  "ref": lambda: torch.fake_quantize_per_channel_affine(w, scale, zp, 0, 0, 255)})
    rows.append(_ratio("fake_quant per-channel speed vs torch.fake_quantize_per_channel_affine", fq["ours"], fq["ref"],
                       floor=0.2))
    grp = compare({"group": lambda: quant.fake_quant(w, 4, True, "per_group", 32),
                   "channel": lambda: quant.fake_quant(w, 4, True, "per_channel")})
    rows.append(_ratio("fake_quant per-group(32) speed vs per-channel, 4-bit", grp["group"], grp["channel"], floor=0.5))
    return rows


def distill_step() -> list[dict]:
    """Student forward + backward on a batch of 4 RAG prompts: the LM head only at the answer
    positions (what distill() does) against the full head at every position."""
    from . import data, models
    from .data.encode import collate, encode_pair
    from .teacher_adapter import answer_loss

    teacher, tok = models.load_teacher()
    student = models.make_student(teacher, keep_layers=list(range(0, 30, 3))).train()
    rows = data.rag_splits(seed=0)["train"].select(range(4))
    batch = collate([encode_pair(tok, p, a) for p, a in zip(rows["prompt"], rows["answer"])], tok.pad_token_id)

    def answer_head():
        answer_loss(student, batch).backward()

    def full_head():
        student(**batch).loss.backward()

    with torch.enable_grad():
        t = compare({"ours": answer_head, "ref": full_head}, warmup=1, repeat=5, grad=True)
    tokens = int(batch["attention_mask"].sum())
    row = _ratio(f"distill step speed, LM head at answer positions vs full head (10-layer student, {tokens} tokens)",
                 t["ours"], t["ref"], floor=1.1)
    row["tokens_per_second"] = round(tokens / t["ours"].median)
    return [row]


def model_floors() -> list[dict]:
    """The quantization, student and pipeline floors on the real teacher (bench_models)."""
    from .bench_models import all_rows

    return all_rows()


def _line(r: dict, width: int) -> str:
    value = "  n/a " if r["value"] is None else f"{r['value']:>6.2f}"
    bound = f"{'at most' if r.get('at_most') else 'floor'} {r['floor']:.2f}"
    detail = (f"  ours {r['ours_ms']} ms, reference {r['reference_ms']} ms" if "ours_ms" in r
              else f"  {r['note']}" if r.get("note") else "")
    return f"{r['name']:<{width}}  {value}  ({bound}: {'met' if r['met'] else 'NOT MET'}){detail}"


def main(out: str = "build/bench.json") -> int:
    rows = core_math() + distill_step() + model_floors()
    width = max(len(r["name"]) for r in rows)
    print(f"ragcomp-lab benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    for r in rows:
        print(_line(r, width))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{k: r[k] for k in ("name", "value", "floor", "met")} for r in rows], indent=2))
    os.replace(tmp, path)  # never a half-written file
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
