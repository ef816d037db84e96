"""Line numbers for YAML values, so errors about a parsed file can say `file:line`.

`yaml.compose` keeps each node's position; the map goes from a key path (mapping keys and list
indices, as in a pydantic error `loc`) to the 1-based line where that key or item starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import yaml

Path_ = tuple[str | int, ...]


def node_lines(text: str) -> tuple[dict[Path_, int], list[tuple[int, str]]]:
    """(path -> line of every key and list item, [(line, problem)] for keys given twice in one mapping).

    Raises yaml.YAMLError for text that is not YAML.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path_, int] = {(): 1}
    duplicates: list[tuple[int, str]] = []
    if root is not None:
        _walk(root, (), lines, duplicates)
    return lines, duplicates


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], duplicates: list[tuple[int, str]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(
                    (line, f"key {key!r} is given twice (first on line {seen[key]}); the last one would win")
                )
            seen.setdefault(key, line)
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, duplicates)


def line_of(lines: dict[Path_, int], path: Sequence[str | int]) -> int:
    """The line of `path`, else of its nearest ancestor present in the map (1 at worst)."""
    path = tuple(path)
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


def dotted(path: Sequence[str | int]) -> str:
    """`("tasks", 2, "args", "epochs")` -> `tasks[2].args.epochs` (list items 0-based, as in the file)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(str(word), sorted(set(options)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def yaml_error_where(source: object, exc: yaml.YAMLError, default_line: int | None = None) -> str:
    """`source:line` of a YAML error (the line of its problem mark), else `source:default_line`, else
    `source` alone."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else default_line
    return str(source) if line is None else f"{source}:{line}"


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML error's problem on one line."""
    return " ".join(str(getattr(exc, "problem", None) or exc).split())
