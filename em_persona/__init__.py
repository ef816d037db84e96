"""em-persona: reproduce and extend the emergent-misalignment persona studies on Inspect AI."""

__version__ = "0.1.0"
