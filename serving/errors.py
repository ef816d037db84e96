"""The one error the serving modules raise."""

from __future__ import annotations

from em_persona.core.errors import EmPersonaError


class ServeError(EmPersonaError, RuntimeError):
    """The vLLM server could not be configured, started or stopped."""
