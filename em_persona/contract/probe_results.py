"""The probes.json format: what `em-persona probes fit` writes and the report reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
RESULTS_FILE = "probes.json"
CV_COLUMNS = [
    "model",
    "task",
    "pooling",
    "layer",
    "n",
    "n_pos",
    "auroc_mean",
    "auroc_std",
    "accuracy_mean",
    "accuracy_std",
]
COSINE_COLUMNS = ["model", "pooling", "layer", "cosine", "cosine_standardized"]
TRANSFER_COLUMNS = ["task", "pooling", "layer", "train_model", "test_model", "auroc", "kind"]
SKIPPED_COLUMNS = ["model", "task", "pooling", "layer", "reason"]


def load_probe_results(out: str | Path) -> dict[str, Any]:
    """Read ``probes.json`` from a probes output folder (for the report)."""
    path = Path(out) / RESULTS_FILE
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: probes format {doc.get('format')!r}, expected {FORMAT_VERSION}")
    return doc
