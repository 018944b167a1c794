"""Output heads that read a few hundred rows of the vocabulary per generated token instead of all of it.

A causal LM's head multiplies the last hidden state by every row of a vocab x hidden matrix: for
SmolLM2 49,152 x 576, the weights of 8 of its layers, read at every generated token. A student
that keeps a few layers is bound by its head. Two heads read fewer rows; both return logits over
the whole vocabulary, -inf outside their set, so the tokenizer, `generate`, `rl.evaluate` and the
argmax work on them unchanged, and a token outside the set can never be generated:

- `FixedHead`: an untied head over a fixed set of ids, those a corpus uses plus `general_ids`
  (vocabulary trimming, Ushio et al. 2023). It travels only as far as its corpus.
- `PromptHead`: the ids of each prompt plus `general_ids`, their rows gathered from the input
  embedding (the tied head) once per prompt. A RAG answer is mostly copied from the retrieved
  passages, so it covers any domain's extractive answers by construction.

Install one with `use_fixed_head(model, ids)` or `use_prompt_head(model, general)`; `rl.save` and
`rl.load` keep it (`config.ragcomp_head` says which).
"""
from __future__ import annotations

import torch
from torch import nn

# Words a short answer needs that its passages may not hold: the refusal, units and their plurals,
# number words. Digits are single tokens in SmolLM2's vocabulary, and all of them are added.
GENERAL_WORDS = ("The context does not say. Yes No yes no and or of the a an in on at to per by is was "
                 "year years month months day days hour hours minute minutes metre metres kilometre kilometres "
                 "centimetre centimetres kilogram kilograms gram grams litre litres dollar dollars euro euros "
                 "percent million billion thousand hundred seat seats people person AM PM am pm")
PUNCTUATION = ". , : ; - ( ) ' \" % / $"


def token_ids(tok, texts) -> list[int]:
    """The sorted distinct token ids of `texts`, as the tokenizer encodes them (no special tokens)."""
    if isinstance(texts, str):
        raise ValueError("token_ids takes a list of texts, not one string")
    seen = set()
    for t in texts:
        seen.update(tok(t, add_special_tokens=False)["input_ids"])
    return sorted(seen)


def general_ids(tok, corpus=(), top: int = 0) -> list[int]:
    """Ids every prompt's head keeps: the special tokens (EOS ends every answer), every single-digit
    token, GENERAL_WORDS and PUNCTUATION with and without a leading space, and the `top` most
    frequent ids of the answers in `corpus`."""
    from collections import Counter

    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top={top!r} is not allowed: give a count >= 0")
    words = GENERAL_WORDS.split() + PUNCTUATION.split()
    ids = set(tok.all_special_ids) | set(token_ids(tok, [" ".join(words)] + words + [" " + w for w in words]))
    ids |= set(token_ids(tok, [str(d) for d in range(10)] + [f" {d}" for d in range(10)]))
    if top:
        counts = Counter(i for text in corpus for i in tok(text, add_special_tokens=False)["input_ids"])
        ids |= {i for i, _ in counts.most_common(top)}
    return sorted(ids)


def coverage(allowed, tok, answers, prompts=None) -> float:
    """Share of `answers` whose every token a head can produce, tokenized as they follow "Answer:"
    (`encode.answer_text`): `allowed` (a set of ids) alone, or with `prompts`, per answer the
    allowed ids plus its prompt's own ids (a PromptHead)."""
    from .data.encode import answer_text

    allowed = set(allowed)
    if prompts is not None and len(prompts) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(prompts)} prompts: give one prompt per answer")
    if not len(answers):
        raise ValueError("coverage needs at least one answer")
    ok = 0
    for i, a in enumerate(answers):
        ids = set(token_ids(tok, [answer_text(a)]))
        extra = set(token_ids(tok, [prompts[i]])) if prompts is not None else set()
        ok += ids <= (allowed | extra)
    return ok / len(answers)


def _scatter(small: torch.Tensor, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    out = small.new_full((*small.shape[:-1], vocab_size), float("-inf"))
    return out.index_copy_(-1, ids, small)


class FixedHead(nn.Module):
    """Logits of the ids in `ids` from an untied (len(ids), hidden) matrix; -inf for every other id."""

    def __init__(self, weight: torch.Tensor, ids, vocab_size: int):
        super().__init__()
        ids = torch.as_tensor(ids, dtype=torch.long)
        if weight.ndim != 2 or weight.shape[0] != len(ids):
            raise ValueError(f"FixedHead needs one weight row per id: {tuple(weight.shape)} for {len(ids)} ids")
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= vocab_size or len(set(ids.tolist())) != len(ids):
            raise ValueError(f"FixedHead's ids must be distinct and within 0..{vocab_size - 1}")
        self.proj = nn.Linear(weight.shape[1], len(ids), bias=False, dtype=weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(weight)
        self.register_buffer("ids", ids)
        self.vocab_size = vocab_size
        self.in_features, self.out_features = weight.shape[1], len(ids)  # what one token multiplies

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _scatter(self.proj(hidden), self.ids, self.vocab_size)


class PromptHead(nn.Module):
    """Logits of each prompt's own ids plus `general` (rows of the input embedding, gathered once
    per prompt by `set_prompt`); -inf for every other id. `out_features` is how many rows the last
    prompts gave: what one generated token multiplies.

    The model's forward sets the prompt whenever it starts without a cache: in `generate`, from the
    prompt; in a plain forward over prompt and answer, from both (the answer's tokens are allowed).
    `distill.answer_logits`, which the answer perplexity and agreement use, sets the prompt's
    positions only, as generation sees them.
    """

    reads_input_embedding = True  # its rows are the input embedding's: no weights of its own

    def __init__(self, hidden_size: int, general, vocab_size: int):
        super().__init__()
        general = torch.as_tensor(general, dtype=torch.long)
        if len(general) and (general.min() < 0 or general.max() >= vocab_size):
            raise ValueError(f"PromptHead's general ids must be within 0..{vocab_size - 1}")
        self.register_buffer("general", general.unique())
        self.vocab_size = vocab_size
        self.in_features = hidden_size
        self._ids = self._rows = self._mask = None

    @property
    def out_features(self) -> int:
        return len(self.general) if self._ids is None else len(self._ids)

    def set_prompt(self, embedding: nn.Module, input_ids: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """The candidate ids of each row of `input_ids` (B, L): its tokens where `keep` (the
        attention mask, or the prompt's positions) is true, plus the general ids; their rows are
        read from the model's input `embedding` (whatever it stores: floats or INT8 codes)."""
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        keep = torch.ones_like(input_ids, dtype=torch.bool) if keep is None else keep.bool()
        per_row = [torch.cat([row[k], self.general]).unique() for row, k in zip(input_ids, keep)]
        ids = torch.cat(per_row).unique()
        mask = torch.zeros(len(per_row), len(ids), dtype=torch.bool)
        for b, row in enumerate(per_row):
            mask[b, torch.searchsorted(ids, row)] = True
        with torch.no_grad():
            self._rows = embedding(ids)
        self._ids, self._mask = ids, mask

    def forward(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for `hidden` (B, L, H), each row of the batch over its own prompt's ids; or for
        flattened positions (n, H) with `rows` (n,), the batch row each position belongs to."""
        if self._ids is None:
            raise RuntimeError("PromptHead has no prompt yet: call the model on one (or set_prompt) first")
        small = hidden @ self._rows.to(hidden.dtype).T
        if rows is not None:
            small = small.masked_fill(~self._mask[rows], float("-inf"))
        elif hidden.ndim == 3 and hidden.shape[0] == len(self._mask):
            small = small.masked_fill(~self._mask[:, None, :], float("-inf"))
        elif len(self._mask) != 1:
            raise ValueError(f"PromptHead holds {len(self._mask)} prompts but got hidden states {tuple(hidden.shape)} "
                             f"without the batch row of each: pass rows=")
        return _scatter(small, self._ids, self.vocab_size)


def _prompt_hook(model, args, kwargs):
    """Before the model's forward: a new prompt (no cache yet) sets the head's candidates."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is not None and cache.get_seq_length() > 0:
        return None
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is not None:
        model.get_output_embeddings().set_prompt(model.get_input_embeddings(), input_ids, kwargs.get("attention_mask"))
    return None


def use_fixed_head(model, ids) -> nn.Module:
    """Replace the model's head (in place) by a FixedHead over `ids`, its rows copied from the
    current head; the model is returned."""
    head = model.get_output_embeddings()
    weight = head.weight.detach()[torch.as_tensor(sorted(set(ids)), dtype=torch.long)].clone()
    model.set_output_embeddings(FixedHead(weight, sorted(set(ids)), model.config.vocab_size))
    model.config.tie_word_embeddings = False
    model.config.ragcomp_head = {"kind": "fixed", "rows": len(weight)}
    return model


def use_prompt_head(model, general) -> nn.Module:
    """Replace the model's head (in place) by a PromptHead reading the input embedding's rows: the
    model must tie its head to its input embedding, as SmolLM2 does. The model is returned."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(head, PromptHead) and (getattr(head, "weight", None) is None
                                            or head.weight.data_ptr() != emb.weight.data_ptr()):
        raise ValueError("use_prompt_head needs a head tied to the input embedding (its rows are the head's)")
    model.set_output_embeddings(PromptHead(emb.embedding_dim, general, model.config.vocab_size))
    model.config.ragcomp_head = {"kind": "prompt", "general": len(set(general))}
    if not any(h is _prompt_hook for h in model._forward_pre_hooks.values()):
        model.register_forward_pre_hook(_prompt_hook, with_kwargs=True)
    return model


def rebuild_head(model) -> None:
    """Install the empty head that `config.ragcomp_head` names (rl.load, before the tensors go in)."""
    spec = getattr(model.config, "ragcomp_head", None)
    if spec is None:
        return
    if spec.get("kind") == "fixed":
        emb = model.get_input_embeddings()
        weight = torch.zeros(spec["rows"], emb.embedding_dim, dtype=emb.weight.dtype)
        model.set_output_embeddings(FixedHead(weight, range(spec["rows"]), model.config.vocab_size))
    elif spec.get("kind") == "prompt":
        use_prompt_head(model, range(spec["general"]))
    else:
        raise ValueError(f"unknown ragcomp_head {spec!r} in the model's config: expected kind 'fixed' or 'prompt'")
