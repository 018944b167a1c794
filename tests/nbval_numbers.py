"""nbval plugin: stored and fresh notebook outputs compared number by number, up to rounding.

The same float code gives different last bits on different CPUs (AVX2 against AVX-512 kernels
for exp, softmax and matrix products), and nbval compares outputs as exact strings and exact
JSON: a plotly figure with 0.30000000000000004 where the stored one had 0.29999999999999993
would fail a notebook that computed exactly what it should. Before nbval compares a cell, each
fresh output is checked against the stored one: the same structure and the same text around the
numbers, every number equal up to rounding. Then the stored output stands in for the fresh one;
anything else is left to nbval's own comparison, which reports it.

Up to rounding means: a number, printed or in JSON, within a relative 1e-3 or an absolute 1e-8
(both far below what a chart or a table shows), or one unit apart in its last digit (0.1234
against 0.1235, a chart's -0.00857 against -0.00858); plotly's typed arrays (base64 "bdata")
decoded and compared within the same relative and absolute bounds; integers, printed, in JSON or
in typed arrays, exactly. Labels, words, counts and shapes still compare exactly, and the sanitize
file's masks (timings, addresses) apply first, as in nbval.

A cell tagged `cpu-dependent` holds figures that really depend on the CPU: the accuracy of INT8
kernels that quantize activations (dynamic and static PTQ, QAT's converted model). Their grids
are set by the largest activation, so last-bit differences of the FP32 layers before them move
whole rounding boundaries: measured on the teacher with one calibration, a static min-max INT8
copy's token KL is 0.051 on an Intel AVX-512 CPU, 0.076 with the same machine's AVX2 kernels and
0.095 on an AMD AVX-512 one. In such a cell every number is masked (`masked=True`): the cell must
still run, and its words, labels, table layout and chart structure still compare exactly.

Loaded by `make test` with `-p tests.nbval_numbers`.
"""
from __future__ import annotations

import base64
import math
import re

import numpy as np

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
REL = 1e-3
ABS = 1e-8  # below this a charted value is zero (a loss of identical models, a vanishing probability)


def close_numbers(a: float, b: float, printed: tuple[str, str] | None = None) -> bool:
    """Within REL relative or ABS absolute, or one unit apart in the last digit of the shorter of
    their printed forms (`printed`, else their shortest reprs: a chart's -0.00857 and -0.00858)."""
    if math.isclose(a, b, rel_tol=REL, abs_tol=ABS):
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    x, y = printed or (repr(a), repr(b))
    return abs(a - b) <= min(_last_digit(x), _last_digit(y)) * (1 + 1e-9)


CPU_DEPENDENT = "cpu-dependent"  # the cell tag whose numbers are masked


def close_text(a: str, b: str, masked: bool = False) -> bool:
    """The same text with every printed number equal up to its last printed digit (any number if `masked`)."""
    if a == b:
        return True
    if NUMBER.split(a) != NUMBER.split(b):  # the words, spaces and punctuation around the numbers
        return False
    if masked:
        return True
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        if x == y:
            continue
        if not any(c in x + y for c in ".eE"):  # integers: counts, ids, sizes compare exactly
            return False
        if not close_numbers(float(x), float(y), (x, y)):
            return False
    return True


def _last_digit(s: str) -> float:
    """The value of one unit in the last printed digit of a decimal (0.1234 -> 1e-4; 1.5e-3 -> 1e-4)."""
    mantissa, _, exponent = s.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def close(a, b, sanitize, masked: bool = False) -> bool:
    """a (stored) and b (fresh) equal up to rounding, after the sanitize masks; with `masked`, every
    number (printed, in JSON or in a typed array) stands for any other and only the rest compares."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if masked:
            return True
        if isinstance(a, int) and isinstance(b, int):  # counts, ids, sizes
            return a == b
        return a == b or close_numbers(float(a), float(b))
    if isinstance(a, str) and isinstance(b, str):
        return close_text(sanitize(a), sanitize(b), masked)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        if "bdata" in a and "dtype" in a:  # plotly's typed array: base64 of the values
            x, y = _typed_array(a), _typed_array(b)
            if masked:
                return x.shape == y.shape
            if x.shape != y.shape or x.dtype.kind != "f" or y.dtype.kind != "f":
                return x.shape == y.shape and bool(np.array_equal(x, y))
            return bool(np.isclose(x, y, rtol=REL, atol=ABS, equal_nan=True).all())
        return all(close(a[k], b[k], sanitize, masked) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, sanitize, masked) for x, y in zip(a, b))
    return a == b


def _typed_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["bdata"]), dtype=np.dtype(d["dtype"]))


def outputs_up_to_rounding(stored: list, fresh: list, sanitize, skip=(), masked: bool = False) -> list:
    """`fresh` with each output that equals its stored twin up to rounding (or up to its numbers, if
    `masked`) replaced by the stored one."""
    if len(stored) != len(fresh):
        return fresh
    return [ref if close(_comparable(ref, skip), _comparable(new, skip), sanitize, masked) else new
            for ref, new in zip(stored, fresh)]


def _comparable(output, skip) -> dict:
    """The fields nbval compares: not those in its skip list (metadata, execution counts, ...)."""
    return {k: {m: x for m, x in v.items() if m not in skip} if k == "data" else v
            for k, v in output.items() if k not in skip}


def pytest_configure(config):
    from nbval.plugin import IPyNbCell

    compare = IPyNbCell.compare_outputs

    def compare_up_to_rounding(self, test, ref, skip_compare=None):
        skip = skip_compare or self.parent.skip_compare
        masked = CPU_DEPENDENT in (self.cell.metadata.get("tags") or [])
        return compare(self, outputs_up_to_rounding(ref, test, self.sanitize, skip, masked), ref, skip_compare)

    IPyNbCell.compare_outputs = compare_up_to_rounding
