"""`ragcomp-lab`: the lab's commands from a shell.

    ragcomp-lab check-jsonl my_set.jsonl   # validate your own RAG set (names the bad line)
    ragcomp-lab bench                      # the benchmark ratios (also `make bench`)
    ragcomp-lab teacher-adapter            # retrain the shipped LoRA adapter (~15 min)
    ragcomp-lab teacher-answers            # regenerate the shipped teacher answers (~15 min)
    ragcomp-lab experiments [name ...]     # the distillation experiments -> results/ (also `make experiments`)
"""
from __future__ import annotations

import argparse
import sys


def _check_jsonl(args) -> int:
    from collections import Counter

    from .data import load_jsonl
    from .data.questions import KINDS

    rows = load_jsonl(args.path)
    kinds = Counter(rows["kind"])
    order = [k for k in KINDS if k in kinds] + sorted(set(kinds) - set(KINDS))  # the test bed's order, then "user"
    print(f"{args.path}: {len(rows)} row{'s' * (len(rows) != 1)}: {', '.join(f'{kinds[k]} {k}' for k in order)}")
    # an unanswerable row's gold is the refusal, always set; an answerable one without a gold cannot be scored
    missing = sum(not a for a in rows["answer"])
    if missing:
        print(f"{missing} {'row has' if missing == 1 else 'rows have'} no answer: F1 and EM score them against \"\"")
    return 0


def _bench(args) -> int:
    from .benchmarks import main

    return main(args.out)


def _teacher_adapter(args) -> int:
    from .teacher_adapter import train_adapter

    print(train_adapter())
    return 0


def _teacher_answers(args) -> int:
    from .data.teacher import regenerate_shipped

    print(regenerate_shipped())
    return 0


def _experiments(args) -> int:
    from .experiments import run

    run(args.names or None, args.out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ragcomp-lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-jsonl", help="validate a RAG set in JSON Lines")
    p.add_argument("path")
    p.set_defaults(run=_check_jsonl)
    p = sub.add_parser("bench", help="print the benchmark ratios and write them as JSON")
    p.add_argument("--out", default="build/bench.json")
    p.set_defaults(run=_bench)
    sub.add_parser("teacher-adapter", help="retrain the teacher's LoRA adapter").set_defaults(run=_teacher_adapter)
    sub.add_parser("teacher-answers", help="regenerate the teacher's answers").set_defaults(run=_teacher_answers)
    p = sub.add_parser("experiments", help="run the distillation experiments and write results/<name>.json and .csv")
    p.add_argument("names", nargs="*",
                   help="names from experiments.EXPERIMENTS, e.g. kd_vs_hard pool_run ptq_vs_qat_pool (default: all)")
    p.add_argument("--out", default="results")
    p.set_defaults(run=_experiments)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: a clear message, no traceback
        print(f"ragcomp-lab: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
