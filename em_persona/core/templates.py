"""str.format prompt templates: their placeholders, a strict check, and filling them in."""

from __future__ import annotations

import string


def template_fields(template: str) -> set[str]:
    """Names of the `{field}` placeholders in a str.format template (doubled braces are literal)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, fields: set[str], origin: str) -> str:
    """Return the template if its placeholders are exactly `fields`, else raise a clear ValueError."""
    try:
        found = template_fields(template)
    except ValueError as exc:  # unbalanced braces
        raise ValueError(
            f"{origin}: judge template is not a valid format string ({exc}); "
            "write literal braces as {{ and }}"
        ) from exc
    if found != fields:
        raise ValueError(
            f"{origin}: judge template placeholders are {sorted(found)}, expected exactly {sorted(fields)}; "
            "write literal braces as {{ and }}"
        )
    return template


def render_template(template: str, **values: str) -> str:
    """Fill a checked template; braces inside the values are kept as they are."""
    return template.format(**values)
