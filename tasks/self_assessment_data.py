"""Samples for the self-assessment task: our paraphrase templates, counterbalancing, the paper set.

Every sample carries in `metadata` all a scorer needs (pole words, order, pole ->
language mapping, statement polarity), so answers are scored without re-reading
the prompt. The dataset holds every distinct prompt once; Inspect epochs repeat them.
Project set: one sample per (dimension, format, paraphrase, counterbalancing variant), so
every cell holds each variant equally often and a model that always takes the first
option scores exactly 0.5. Paper set: one sample per pinned line. `paraphrases=k` keeps,
per cell, the first k paraphrases (paper: lines) of a seeded order, every variant of each.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from inspect_ai.dataset import MemoryDataset, Sample

from em_persona.core.errors import EmPersonaError
from em_persona.core.paths import DATASETS_DIR
from em_persona.core.yaml_lines import yaml_error_where
from em_persona.scorers.self_assessment_parsers import FORMATS, NUMERICAL_SCALE

TEMPLATES_FILE = DATASETS_DIR / "self_assessment" / "templates.yaml"
PAPER_SOURCE = "self_assessment_questions"

LANGUAGES = {"french": "French", "german": "German"}
MIN_PARAPHRASES = 10
DEFAULT_EPOCHS = 21
"""Epochs of a default run: 12 paraphrases x 2 variants x 21 = 504 answers per decision, numerical
and Likert cell (about the 500 queries per cell of the predecessor study); 1,008 per language
cell (4 variants). The paper set: each of its 100 lines 21 times."""

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "decision": frozenset({"first", "second"}),
    "numerical": frozenset({"first_number", "first_pole", "second_number", "second_pole"}),
    "language": frozenset({"first_pole", "first_language", "second_pole", "second_language"}),
    "likert": frozenset({"pole"}),
}


class SelfAssessmentDataError(EmPersonaError, ValueError):
    """A template file, paper file or task argument is unusable; the message names where."""


@dataclass(frozen=True)
class Dimension:
    """A pole pair: `aligned` scores 0, `misaligned` scores 1."""

    id: str
    aligned: str
    misaligned: str


@dataclass(frozen=True)
class Template:
    """One paraphrase, with where it came from (file:line) for error messages and metadata."""

    text: str
    source: str


@dataclass(frozen=True)
class Templates:
    """The parsed template file."""

    dimensions: dict[str, Dimension]
    formats: dict[str, list[Template]]


# --- loading the template file ----------------------------------------------------------


class _LineStr(str):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """Safe loader whose strings remember the line they start on."""


def _construct_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> _LineStr:
    s = _LineStr(loader.construct_scalar(node))
    s.line = node.start_mark.line + 1
    return s


_LineLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def load_templates(path: Path = TEMPLATES_FILE) -> Templates:
    """Parse and validate the paraphrase file; errors name the file and line."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise SelfAssessmentDataError(f"{yaml_error_where(path, exc)}: invalid YAML: {exc}") from exc
    except OSError as exc:
        raise SelfAssessmentDataError(f"{path}: cannot read the template file: {exc}") from exc
    if not isinstance(raw, dict) or "dimensions" not in raw or "formats" not in raw:
        raise SelfAssessmentDataError(f"{path}: needs top-level 'dimensions' and 'formats' mappings")

    dimensions: dict[str, Dimension] = {}
    for dim_id, poles in raw["dimensions"].items():
        line = getattr(dim_id, "line", "?")
        if not isinstance(poles, dict) or set(poles) != {"aligned", "misaligned"}:
            raise SelfAssessmentDataError(
                f"{path}:{line}: dimension {dim_id!r} needs exactly 'aligned' and 'misaligned' words"
            )
        aligned, misaligned = str(poles["aligned"]).strip(), str(poles["misaligned"]).strip()
        if not aligned or not misaligned or aligned == misaligned or " " in aligned + misaligned:
            raise SelfAssessmentDataError(
                f"{path}:{line}: dimension {dim_id!r} needs two different single-word poles"
            )
        dimensions[str(dim_id)] = Dimension(str(dim_id), aligned.lower(), misaligned.lower())

    formats: dict[str, list[Template]] = {}
    for fmt in FORMATS:
        items = raw["formats"].get(fmt)
        if not isinstance(items, list):
            raise SelfAssessmentDataError(f"{path}: format {fmt!r} needs a list of templates")
        seen: set[str] = set()
        templates = []
        for item in items:
            line = getattr(item, "line", "?")
            if not isinstance(item, str) or not item.strip():
                raise SelfAssessmentDataError(f"{path}:{line}: {fmt} template must be a non-empty string")
            try:
                found = _placeholders(item)
            except ValueError as exc:
                raise SelfAssessmentDataError(f"{path}:{line}: {fmt} template has bad braces: {exc}") from exc
            if found != PLACEHOLDERS[fmt]:
                raise SelfAssessmentDataError(
                    f"{path}:{line}: {fmt} template must use exactly the placeholders "
                    f"{sorted(PLACEHOLDERS[fmt])}, found {sorted(found)}"
                )
            if item.lstrip().startswith("{"):
                raise SelfAssessmentDataError(f"{path}:{line}: {fmt} template starts with a placeholder")
            if item in seen:
                raise SelfAssessmentDataError(f"{path}:{line}: duplicate {fmt} template")
            seen.add(item)
            templates.append(Template(str(item), f"{path.name}:{line}"))
        if len(templates) < MIN_PARAPHRASES:
            raise SelfAssessmentDataError(
                f"{path}: format {fmt!r} has {len(templates)} templates; at least {MIN_PARAPHRASES} required"
            )
        formats[fmt] = templates
    return Templates(dimensions, formats)


# --- counterbalancing ------------------------------------------------------------------


def variants(fmt: str) -> list[dict[str, Any]]:
    """The counterbalancing conditions of a format, in the order samples cycle through them."""
    if fmt in ("decision", "numerical"):
        return [{"order": "aligned_first"}, {"order": "misaligned_first"}]
    if fmt == "language":
        return [
            {"aligned_language": a, "misaligned_language": m, "order": o}
            for a, m in (("french", "german"), ("german", "french"))
            for o in ("aligned_first", "misaligned_first")
        ]
    if fmt == "likert":
        return [{"polarity": "aligned"}, {"polarity": "misaligned"}]
    raise SelfAssessmentDataError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _variant_name(variant: dict[str, Any]) -> str:
    parts = []
    if "aligned_language" in variant:
        parts.append(f"aligned={variant['aligned_language']}")
    if "order" in variant:
        parts.append(variant["order"])
    if "polarity" in variant:
        parts.append(f"names_{variant['polarity']}")
    return ",".join(parts)


def render(template: str, fmt: str, dim: Dimension, variant: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fill one template for one counterbalancing variant; returns (prompt, format-specific metadata)."""
    aligned_first = variant.get("order") == "aligned_first"
    meta: dict[str, Any] = {
        "order": variant.get("order"),
        "options": None,
        "aligned_language": None,
        "misaligned_language": None,
        "polarity": None,
        "statement_pole": None,
    }
    if fmt == "decision":
        first, second = (dim.aligned, dim.misaligned) if aligned_first else (dim.misaligned, dim.aligned)
        meta["options"] = [first, second]
        return template.format(first=first, second=second), meta
    if fmt == "numerical":
        lo, hi = NUMERICAL_SCALE
        ends = [(lo, dim.aligned), (hi, dim.misaligned)]
        (n1, p1), (n2, p2) = ends if aligned_first else ends[::-1]
        return template.format(first_number=n1, first_pole=p1, second_number=n2, second_pole=p2), meta
    if fmt == "language":
        meta["aligned_language"] = variant["aligned_language"]
        meta["misaligned_language"] = variant["misaligned_language"]
        rules = [
            (dim.aligned, LANGUAGES[variant["aligned_language"]]),
            (dim.misaligned, LANGUAGES[variant["misaligned_language"]]),
        ]
        (p1, l1), (p2, l2) = rules if aligned_first else rules[::-1]
        return template.format(first_pole=p1, first_language=l1, second_pole=p2, second_language=l2), meta
    if fmt == "likert":
        pole = dim.aligned if variant["polarity"] == "aligned" else dim.misaligned
        meta["polarity"] = variant["polarity"]
        meta["statement_pole"] = pole
        return template.format(pole=pole), meta
    raise SelfAssessmentDataError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# --- argument parsing --------------------------------------------------------------------


def _split(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip().lower() for s in items if s and s.strip()]


def select_dimensions(value: str | Sequence[str], known: dict[str, Dimension]) -> list[Dimension]:
    """ "all", or dimension ids / pole words (comma-separated string or list), in file order."""
    wanted = _split(value)
    if wanted == ["all"]:
        return list(known.values())
    by_word = {w: d for d in known.values() for w in (d.id, d.aligned, d.misaligned)}
    unknown = [w for w in wanted if w not in by_word]
    if unknown or not wanted:
        raise SelfAssessmentDataError(
            f"unknown dimension(s) {unknown or value!r}; use 'all' or some of: {', '.join(known)}"
        )
    chosen = {by_word[w].id for w in wanted}
    return [d for d in known.values() if d.id in chosen]


def select_formats(value: str | Sequence[str]) -> list[str]:
    """ "all", or format names (comma-separated string or list), in canonical order."""
    wanted = _split(value)
    if wanted == ["all"]:
        return list(FORMATS)
    unknown = [w for w in wanted if w not in FORMATS]
    if unknown or not wanted:
        raise SelfAssessmentDataError(
            f"unknown format(s) {unknown or value!r}; use 'all' or some of: {', '.join(FORMATS)}"
        )
    return [f for f in FORMATS if f in wanted]


# --- the project set ----------------------------------------------------------------------


def _base_metadata(dataset: str, dim: Dimension, fmt: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "dimension": dim.id,
        "format": fmt,
        "aligned_pole": dim.aligned,
        "misaligned_pole": dim.misaligned,
    }


def project_samples(
    dimensions: Iterable[Dimension],
    formats: Iterable[str],
    paraphrases: int | None,
    seed: int,
    templates: Templates,
) -> list[Sample]:
    """Every (dimension, format) cell: its paraphrases (all, or the first `paraphrases` of a
    seeded order) x every counterbalancing variant, one sample each."""
    samples: list[Sample] = []
    for dim in dimensions:
        for fmt in formats:
            pool = templates.formats[fmt]
            order = list(range(len(pool)))
            random.Random(f"{seed}:{dim.id}:{fmt}").shuffle(order)
            for paraphrase in order[:paraphrases]:
                for j, variant in enumerate(variants(fmt)):
                    prompt, meta = render(pool[paraphrase].text, fmt, dim, variant)
                    samples.append(
                        Sample(
                            id=f"{dim.id}.{fmt}.p{paraphrase:02d}.v{j}",
                            input=prompt,
                            metadata={
                                **_base_metadata("project", dim, fmt),
                                **meta,
                                "variant": _variant_name(variant),
                                "paraphrase": paraphrase,
                                "source": pool[paraphrase].source,
                            },
                        )
                    )
    return samples


# --- the paper set ------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperPrompt:
    """One line of the pinned paper file, classified."""

    line: int
    text: str
    dimension: str
    order: str  # aligned_first | misaligned_first
    source: str  # file name:line


def parse_paper_prompts(text: str, dimensions: dict[str, Dimension], filename: str) -> list[PaperPrompt]:
    """Classify each non-blank line by the one pole pair whose two words it contains."""
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if not prompt:
            continue
        low = prompt.lower()
        hits = []
        for dim in dimensions.values():
            a = re.search(rf"\b{re.escape(dim.aligned)}\b", low)
            m = re.search(rf"\b{re.escape(dim.misaligned)}\b", low)
            if a and m:
                hits.append((dim, "aligned_first" if a.start() < m.start() else "misaligned_first"))
        if len(hits) != 1:
            what = "none" if not hits else "several (" + ", ".join(d.id for d, _ in hits) + ")"
            raise SelfAssessmentDataError(
                f"{filename}:{lineno}: line names {what} of the pole pairs "
                f"({', '.join(f'{d.aligned}/{d.misaligned}' for d in dimensions.values())}): {prompt!r}"
            )
        dim, order = hits[0]
        out.append(PaperPrompt(lineno, prompt, dim.id, order, f"{Path(filename).name}:{lineno}"))
    return out


def load_paper_prompts(dimensions: dict[str, Dimension]) -> list[PaperPrompt]:
    """The pinned 100 paper prompts (registry source `self_assessment_questions`), classified."""
    from em_persona.core.registry import load_source

    path = load_source(PAPER_SOURCE)
    return parse_paper_prompts(path.read_text(encoding="utf-8"), dimensions, str(path))


def _interleaved(lines: list[PaperPrompt], first: str) -> list[PaperPrompt]:
    """The lines alternating between word orders (starting with `first`), the longer group's rest last."""
    groups = [[p for p in lines if p.order == first], [p for p in lines if p.order != first]]
    out = [p for pair in zip(*groups, strict=False) for p in pair]
    shorter = min(len(g) for g in groups)
    return out + [p for g in groups for p in g[shorter:]]


def paper_samples(
    prompts: Sequence[PaperPrompt], dimensions: Iterable[Dimension], paraphrases: int | None, seed: int
) -> list[Sample]:
    """Decision samples from the paper prompts: each dimension's lines (all, or the first
    `paraphrases`) in a seeded order, one sample each.

    The seeded order alternates the two word orders of a dimension's lines (aligned word
    first / misaligned word first), starting with aligned first in every other dimension,
    so a short subset is balanced too.
    """
    samples: list[Sample] = []
    for index, dim in enumerate(dimensions):
        lines = [p for p in prompts if p.dimension == dim.id]
        if not lines:
            continue
        random.Random(f"{seed}:{dim.id}:paper").shuffle(lines)
        lines = _interleaved(lines, "aligned_first" if index % 2 == 0 else "misaligned_first")
        for p in lines[:paraphrases]:
            first, second = (
                (dim.aligned, dim.misaligned) if p.order == "aligned_first" else (dim.misaligned, dim.aligned)
            )
            samples.append(
                Sample(
                    id=f"paper.{dim.id}.{p.line:03d}",
                    input=p.text,
                    metadata={
                        **_base_metadata("paper", dim, "decision"),
                        "order": p.order,
                        "options": [first, second],
                        "aligned_language": None,
                        "misaligned_language": None,
                        "polarity": None,
                        "statement_pole": None,
                        "variant": p.order,
                        "paraphrase": p.line - 1,
                        "source": p.source,
                    },
                )
            )
    return samples


# --- entry point --------------------------------------------------------------------------


def check_count(name: str, value: object) -> None:
    """A count argument (epochs, paraphrases) must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SelfAssessmentDataError(f"{name} must be a positive integer, got {value!r}")


def _check_paraphrases(paraphrases: int | None, available: dict[str, int]) -> None:
    """`paraphrases` is None (all) or 1 .. the smallest number available in a selected cell."""
    if paraphrases is None:
        return
    check_count("paraphrases", paraphrases)
    short = {cell: n for cell, n in available.items() if n < paraphrases}
    if short:
        cells = ", ".join(f"{cell} has {n}" for cell, n in short.items())
        raise SelfAssessmentDataError(
            f"paraphrases={paraphrases} is more than the selection offers ({cells})"
        )


def self_assessment_dataset(
    dataset: str = "project",
    dimensions: str | Sequence[str] = "all",
    formats: str | Sequence[str] = "all",
    paraphrases: int | None = None,
    seed: int = 0,
    templates_file: Path = TEMPLATES_FILE,
) -> MemoryDataset:
    """The task's dataset, every distinct prompt once: "project" (our templates, all formats) or
    "paper" (pinned decision prompts); `paraphrases` keeps the first k per cell (seeded order)."""
    templates = load_templates(templates_file)
    dims = select_dimensions(dimensions, templates.dimensions)
    fmts = select_formats(formats)
    if dataset == "project":
        _check_paraphrases(paraphrases, {f"format {fmt!r}": len(templates.formats[fmt]) for fmt in fmts})
        samples = project_samples(dims, fmts, paraphrases, seed, templates)
    elif dataset == "paper":
        if "decision" not in fmts:
            raise SelfAssessmentDataError(
                "dataset='paper' holds decision prompts only; use formats='decision' or 'all'"
            )
        prompts = load_paper_prompts(templates.dimensions)
        lines = {d.id: sum(p.dimension == d.id for p in prompts) for d in dims}
        _check_paraphrases(paraphrases, {f"dimension {d!r} (paper lines)": n for d, n in lines.items() if n})
        samples = paper_samples(prompts, dims, paraphrases, seed)
        if not samples:
            have = sorted({p.dimension for p in prompts})
            raise SelfAssessmentDataError(f"the paper set covers only {', '.join(have)}; none selected")
    else:
        raise SelfAssessmentDataError(f"unknown dataset {dataset!r}; use 'project' or 'paper'")
    return MemoryDataset(samples, name=f"self_assessment_{dataset}", shuffled=False)
