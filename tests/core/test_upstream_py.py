"""em_persona.upstream_py on synthetic sources: f-string templates, re.search rules, literal lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from em_persona.core.upstream_py import (
    UpstreamCodeError,
    literal_assignments,
    return_fstring,
    search_rule,
)

SOURCE = '''\
import os
os.system("exit 3")
raise SystemExit("this file was executed")

def plain(a: str, b: str) -> str:
    return f"A={a!s}"

def wrap(persona: str, question: str) -> str:
    """A docstring is allowed."""
    return f"""Persona: {persona}

{{literal braces}} \\u00e9\\t{question}"""

def joined(x):
    return (
        f"one '{x}'. " "two \\n "
        f"three {x}"
    )

def constant():
    return "no fields at all"

def spec(x):
    return f"{x:>10}"

def conv(x):
    return f"{x!r}"

def debug(x):
    return f"{x=}"

def expr(x):
    return f"{x.upper()}"

def outsider(x):
    return f"{y}"

def two_statements(x):
    y = x
    return f"{y}"

def not_fstring(x):
    return x + "!"

def dup(x):
    return f"{x}"

def dup(x):
    return f"{x}{x}"

@staticmethod
def decorated(x):
    return f"{x}"

def star(*xs):
    return f"{xs}"

def extract(response):
    try:
        m = re.search(r"\\b[0-5]\\b", response.strip())
    except Exception:
        return -1
    return int(m.group()) if m else -1

def extract_raw(response):
    return re.search("[0-9]+", response)

def extract_flags(response):
    return re.search("a", response, re.I)

def extract_two(response):
    return re.search("a", response) or re.search("b", response)

def extract_other(response):
    return re.search("a", response.lower())

ITEMS: list = [("Harm", "item one"), ("Fairness", "item two")]
OTHER = ("x", 1)
NOT_LITERAL = [os.getcwd()]
'''


def _fn(name: str):  # type: ignore[no-untyped-def]
    """The synthetic function itself, compiled on its own (the oracle for the renderer)."""
    import ast

    tree = ast.parse(SOURCE)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "synthetic.py", "exec"), namespace)
    return namespace[name]


def test_fstring_template_matches_python_evaluation() -> None:
    wrap = return_fstring(SOURCE, "synthetic.py", "wrap")
    assert wrap.parameters == ("persona", "question") and wrap.location == "synthetic.py:10"
    assert wrap.render("P {x}", "Q") == _fn("wrap")("P {x}", "Q")
    assert wrap("P", question="Q") == _fn("wrap")("P", "Q")
    assert "{literal braces} \u00e9\tQ" in wrap("P", "Q")
    joined = return_fstring(SOURCE, "synthetic.py", "joined")
    assert joined("z") == _fn("joined")("z") == "one 'z'. two \n three z"
    assert return_fstring(SOURCE, "synthetic.py", "constant")() == "no fields at all"


@given(st.text(), st.text())
def test_render_equals_fstring_for_any_text(persona: str, question: str) -> None:
    wrap = return_fstring(SOURCE, "synthetic.py", "wrap")
    assert wrap(persona, question) == _fn("wrap")(persona, question)


def test_render_binds_like_a_call() -> None:
    wrap = return_fstring(SOURCE, "synthetic.py", "wrap")
    with pytest.raises(TypeError, match="missing"):
        wrap("only one")
    with pytest.raises(TypeError, match="unexpected"):
        wrap("a", "b", nope=1)
    with pytest.raises(TypeError, match="multiple values"):
        wrap("a", persona="b", question="c")
    with pytest.raises(TypeError, match="takes 2"):
        wrap("a", "b", "c")


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("plain", r"synthetic.py:6: field \{a!s\} in 'plain' uses a conversion"),
        ("spec", r"synthetic.py:\d+: field \{x:...\} in 'spec' has a format spec"),
        ("conv", r"synthetic.py:\d+: field \{x!r\} in 'conv' uses a conversion"),
        ("debug", r"synthetic.py:\d+: field \{x!r\} in 'debug' uses a conversion \(or `=`\)"),
        ("expr", r"synthetic.py:\d+: field \{x.upper\(\)\} in 'expr' is an expression"),
        ("outsider", r"synthetic.py:\d+: field \{y\} in 'outsider' is not one of its parameters"),
        ("two_statements", r"synthetic.py:\d+: 'two_statements' must consist of a single `return"),
        ("not_fstring", r"synthetic.py:\d+: 'not_fstring' returns BinOp, not an f-string"),
        ("dup", r"synthetic.py:\d+: 'dup' is defined 2 times"),
        ("decorated", r"synthetic.py:\d+: 'decorated' is decorated"),
        ("star", r"synthetic.py:\d+: 'star' takes \*args"),
        ("missing", r"synthetic.py: no top-level function 'missing'"),
    ],
)
def test_fstring_refusals_name_file_and_line(function: str, message: str) -> None:
    with pytest.raises(UpstreamCodeError, match=message):
        return_fstring(SOURCE, "synthetic.py", function)


def test_syntax_error_names_line() -> None:
    with pytest.raises(UpstreamCodeError, match=r"bad.py:2: not valid Python"):
        return_fstring("x = 1\ndef (:\n", "bad.py", "f")


def test_search_rule() -> None:
    rule = search_rule(SOURCE, "synthetic.py", "extract")
    assert rule.pattern == r"\b[0-5]\b" and rule.strip and rule.location.startswith("synthetic.py:")
    assert rule.search("  4 \n").group() == "4" and rule.search("12") is None
    raw = search_rule(SOURCE, "synthetic.py", "extract_raw")
    assert raw.pattern == "[0-9]+" and not raw.strip
    with pytest.raises(UpstreamCodeError, match="flags or extra arguments"):
        search_rule(SOURCE, "synthetic.py", "extract_flags")
    with pytest.raises(UpstreamCodeError, match="has 2 re.search calls"):
        search_rule(SOURCE, "synthetic.py", "extract_two")
    with pytest.raises(UpstreamCodeError, match=r"searches 'response.lower\(\)'"):
        search_rule(SOURCE, "synthetic.py", "extract_other")
    with pytest.raises(UpstreamCodeError, match="has 0 re.search calls"):
        search_rule(SOURCE, "synthetic.py", "wrap")


def test_literal_assignments_never_execute() -> None:
    values = literal_assignments(SOURCE, "synthetic.py", ["ITEMS", "OTHER"])
    assert values == {"ITEMS": [("Harm", "item one"), ("Fairness", "item two")], "OTHER": ("x", 1)}
    with pytest.raises(UpstreamCodeError, match=r"synthetic.py:\d+: NOT_LITERAL is not a literal value"):
        literal_assignments(SOURCE, "synthetic.py", ["NOT_LITERAL"])
    with pytest.raises(UpstreamCodeError, match="no assignment to MISSING"):
        literal_assignments(SOURCE, "synthetic.py", ["ITEMS", "MISSING"])
    with pytest.raises(UpstreamCodeError, match=r"s.py:2: A is assigned twice \(first at line 1\)"):
        literal_assignments("A = 1\nA = 2\n", "s.py", ["A"])
