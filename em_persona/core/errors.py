"""The one base class of the toolkit's own errors.

Every error the toolkit raises for the user (a bad file, a missing source, a server that did not
start, ...) derives from `EmPersonaError` and carries a message meant to be read as it is: the
file and line, what went wrong, what to do. The `em-persona` command line catches this class
once and prints the message as one line (exit 1) instead of a traceback. Each subclass also keeps
its historical built-in base (ValueError, RuntimeError) so `except ValueError` callers still work.
"""

from __future__ import annotations


class EmPersonaError(Exception):
    """An error of the toolkit whose message tells the user what happened and what to do."""
