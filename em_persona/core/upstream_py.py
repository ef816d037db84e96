"""Read prompts and rules out of pinned upstream Python files with `ast`, never importing or running them.

The papers' authors keep their prompts in code: an f-string returned by a function, a regex
passed to `re.search`, literal lists of items. This module takes exactly those pieces from
the source text of a pinned file and refuses anything it could not reproduce byte for byte:

- `return_fstring(text, filename, function)`: the f-string a function returns, as a
  `FStringTemplate` whose `render(...)` equals Python's own evaluation for plain `{name}`
  fields of the function's parameters (a format spec, a conversion, `{x=}` or any other
  expression is refused with a ``file:line`` error);
- `search_rule(text, filename, function)`: the regex literal a function passes to `re.search`,
  and whether the searched text is its parameter `.strip()`-ed;
- `literal_assignments(text, filename, names)`: module-level assignments with literal values.

Every error is an `UpstreamCodeError` naming the file and line and what changed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from em_persona.core.registry import SourceError


class UpstreamCodeError(SourceError):
    """A pinned upstream .py file does not have the shape this project reads; message is `file:line: ...`."""


@dataclass(frozen=True)
class Field:
    """A `{name}` replacement field of an f-string."""

    name: str


@dataclass(frozen=True)
class FStringTemplate:
    """The f-string returned by an upstream function: literal parts and `{parameter}` fields."""

    function: str
    parameters: tuple[str, ...]
    parts: tuple[str | Field, ...]
    location: str
    """`file:line` of the `return` statement."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        """The string the upstream function returns for these arguments (bound like a call to it)."""
        if len(args) > len(self.parameters):
            raise TypeError(f"{self.function}() takes {len(self.parameters)} arguments, got {len(args)}")
        values = dict(zip(self.parameters, args, strict=False))
        for name, value in kwargs.items():
            if name not in self.parameters:
                raise TypeError(f"{self.function}() got an unexpected argument {name!r}")
            if name in values:
                raise TypeError(f"{self.function}() got multiple values for argument {name!r}")
            values[name] = value
        missing = [p for p in self.parameters if p not in values]
        if missing:
            raise TypeError(f"{self.function}() missing argument(s) {missing}")
        # A plain `{name}` field evaluates to format(value, ""), exactly as Python does.
        return "".join(p if isinstance(p, str) else format(values[p.name], "") for p in self.parts)

    __call__ = render


@dataclass(frozen=True)
class SearchRule:
    """`re.search(pattern, <parameter>[.strip()])` inside an upstream function."""

    function: str
    pattern: str
    strip: bool
    """True when the function searches `<parameter>.strip()`, False when the parameter itself."""
    location: str

    def search(self, text: str) -> re.Match[str] | None:
        """The first match, as the upstream function finds it."""
        return re.search(self.pattern, text.strip() if self.strip else text)


def _parse(text: str, filename: str) -> ast.Module:
    try:
        return ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise UpstreamCodeError(f"{filename}:{exc.lineno}: not valid Python: {exc.msg}") from exc


def _function(tree: ast.Module, filename: str, name: str) -> ast.FunctionDef:
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name]
    if not defs:
        raise UpstreamCodeError(f"{filename}: no top-level function {name!r}; the upstream file changed")
    if len(defs) > 1:
        lines = ", ".join(str(d.lineno) for d in defs)
        raise UpstreamCodeError(
            f"{filename}:{defs[-1].lineno}: {name!r} is defined {len(defs)} times (lines {lines})"
        )
    node = defs[0]
    if isinstance(node, ast.AsyncFunctionDef):
        raise UpstreamCodeError(f"{filename}:{node.lineno}: {name!r} is async; only plain functions are read")
    if node.decorator_list:
        raise UpstreamCodeError(
            f"{filename}:{node.lineno}: {name!r} is decorated; its result cannot be reproduced"
        )
    return node


def _parameters(node: ast.FunctionDef, filename: str) -> tuple[str, ...]:
    args = node.args
    if args.vararg or args.kwarg:
        raise UpstreamCodeError(
            f"{filename}:{node.lineno}: {node.name!r} takes *args/**kwargs; not supported"
        )
    return tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))


def _body_without_docstring(node: ast.FunctionDef) -> list[ast.stmt]:
    body = list(node.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return body


def return_fstring(text: str, filename: str, function: str) -> FStringTemplate:
    """The f-string (or plain string) that `function` returns, as a renderable template.

    The function body must be one `return` of a string (a docstring may precede it); each
    replacement field must be a bare parameter name, with no format spec or conversion.
    """
    node = _function(_parse(text, filename), filename, function)
    params = _parameters(node, filename)
    body = _body_without_docstring(node)
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        line = body[0].lineno if body else node.lineno
        raise UpstreamCodeError(
            f"{filename}:{line}: {function!r} must consist of a single `return <f-string>`; the upstream file changed"
        )
    ret = body[0]
    value = ret.value
    where = f"{filename}:{ret.lineno}"
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return FStringTemplate(function, params, (value.value,), where)
    if not isinstance(value, ast.JoinedStr):
        raise UpstreamCodeError(f"{where}: {function!r} returns {type(value).__name__}, not an f-string")
    parts: list[str | Field] = []
    for part in value.values:
        line = getattr(part, "lineno", ret.lineno)
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            parts.append(part.value)
            continue
        if not isinstance(part, ast.FormattedValue):  # pragma: no cover - the grammar allows nothing else
            raise UpstreamCodeError(f"{filename}:{line}: unexpected f-string part {type(part).__name__}")
        shown = ast.unparse(part.value)
        if part.conversion != -1:
            raise UpstreamCodeError(
                f"{filename}:{line}: field {{{shown}!{chr(part.conversion)}}} in {function!r} uses a conversion "
                "(or `=`); only plain {name} fields are reproduced"
            )
        if part.format_spec is not None:
            raise UpstreamCodeError(
                f"{filename}:{line}: field {{{shown}:...}} in {function!r} has a format spec; "
                "only plain {name} fields are reproduced"
            )
        if not isinstance(part.value, ast.Name):
            raise UpstreamCodeError(
                f"{filename}:{line}: field {{{shown}}} in {function!r} is an expression; "
                "only plain {name} fields are reproduced"
            )
        if part.value.id not in params:
            raise UpstreamCodeError(
                f"{filename}:{line}: field {{{part.value.id}}} in {function!r} is not one of its parameters {list(params)}"
            )
        parts.append(Field(part.value.id))
    return FStringTemplate(function, params, tuple(parts), where)


def _is_re_search(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "search"
        and isinstance(func.value, ast.Name)
        and func.value.id == "re"
    )


def search_rule(text: str, filename: str, function: str) -> SearchRule:
    """The single `re.search(<str literal>, <param> or <param>.strip())` call inside `function`."""
    node = _function(_parse(text, filename), filename, function)
    params = _parameters(node, filename)
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and _is_re_search(n)]
    if len(calls) != 1:
        raise UpstreamCodeError(
            f"{filename}:{node.lineno}: {function!r} has {len(calls)} re.search calls, expected exactly 1"
        )
    call = calls[0]
    where = f"{filename}:{call.lineno}"
    if call.keywords or len(call.args) != 2:
        raise UpstreamCodeError(
            f"{where}: re.search in {function!r} has flags or extra arguments; not supported"
        )
    pattern, subject = call.args
    if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
        raise UpstreamCodeError(f"{where}: the pattern of re.search in {function!r} is not a string literal")
    if isinstance(subject, ast.Name) and subject.id in params:
        strip = False
    elif (
        isinstance(subject, ast.Call)
        and not subject.args
        and not subject.keywords
        and isinstance(subject.func, ast.Attribute)
        and subject.func.attr == "strip"
        and isinstance(subject.func.value, ast.Name)
        and subject.func.value.id in params
    ):
        strip = True
    else:
        raise UpstreamCodeError(
            f"{where}: re.search in {function!r} searches {ast.unparse(subject)!r}; "
            "expected a parameter or parameter.strip()"
        )
    try:
        re.compile(pattern.value)
    except re.error as exc:
        raise UpstreamCodeError(f"{where}: the regex in {function!r} does not compile: {exc}") from exc
    return SearchRule(function, pattern.value, strip, where)


def literal_assignments(text: str, filename: str, names: Iterable[str]) -> dict[str, Any]:
    """Values of the module-level assignments `NAME = <literal>` (or `NAME: T = <literal>`) for `names`."""
    wanted = list(names)
    tree = _parse(text, filename)
    found: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or target.id not in wanted:
            continue
        if target.id in found:
            raise UpstreamCodeError(
                f"{filename}:{node.lineno}: {target.id} is assigned twice (first at line {lines[target.id]})"
            )
        try:
            found[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise UpstreamCodeError(f"{filename}:{node.lineno}: {target.id} is not a literal value") from exc
        lines[target.id] = node.lineno
    missing = [n for n in wanted if n not in found]
    if missing:
        raise UpstreamCodeError(
            f"{filename}: no assignment to {', '.join(missing)}; the upstream file changed"
        )
    return found
