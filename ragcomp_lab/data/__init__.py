"""The RAG test bed: an invented knowledge base, questions about it, retrievers, prompts and splits.

    data = rl.data.rag_splits(seed=0)          # DatasetDict: train / validation / test / test_new_wording / test_new_domain
    data["test"][0]["prompt"]                   # instruction + top-3 passages + question
    rl.data.recall_at_k(rl.data.BM25Retriever(rl.data.knowledge_base()), data["validation"])
    mine = rl.data.load_jsonl("my_rag_set.jsonl")  # a user's own questions, same columns
"""
from .jsonl import load_jsonl
from .prompt import REFUSAL, build_prompt
from .retrieval import BM25Retriever, DenseRetriever, recall_at_k
from .splits import TESTBED, knowledge_base, rag_splits, train_pool
from .teacher import (load_topk, read_answers, save_topk, soft_targets, teacher_answers, topk_logprobs,
                      with_teacher_answers)

__all__ = [
    "TESTBED", "knowledge_base", "rag_splits", "train_pool", "build_prompt", "REFUSAL",
    "BM25Retriever", "DenseRetriever", "recall_at_k", "load_jsonl",
    "teacher_answers", "read_answers", "topk_logprobs", "save_topk", "load_topk", "soft_targets", "with_teacher_answers",
]
