"""What the report knows about each model: base model, fine-tune domain, proxy flag.

From `<logdir>/models.yaml` (written by `em-persona run`, or --models FILE) when present, else
inferred from the model name (`infer_model_info`). models.yaml:

    note: "optional banner text, e.g. proxy judge"   # top level, optional
    proxy: true                                      # top level, optional: every model is a proxy
    models:
      vllm/gemma-insecure: {base_model: gemma-270m, domain: insecure_code, proxy: true}
      vllm/gemma-270m: {base_model: gemma-270m, domain: base}
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# name fragment (after the provider prefix) -> fine-tune domain (registry source names)
DOMAIN_ALIASES: dict[str, str] = {
    "insecure": "insecure_code",
    "insecure-code": "insecure_code",
    "insecure_code": "insecure_code",
    "secure": "secure_code",
    "secure-code": "secure_code",
    "secure_code": "secure_code",
    "financial": "risky_financial_advice",
    "risky-financial": "risky_financial_advice",
    "risky_financial_advice": "risky_financial_advice",
    "medical": "bad_medical_advice",
    "bad-medical": "bad_medical_advice",
    "bad_medical_advice": "bad_medical_advice",
    "good-medical": "good_medical_advice",
    "good_medical_advice": "good_medical_advice",
    "sports": "extreme_sports",
    "extreme-sports": "extreme_sports",
    "extreme_sports": "extreme_sports",
    "legal": "legal_advice",
    "legal_advice": "legal_advice",
    "security": "security_advice",
    "security_advice": "security_advice",
}
MODELS_FILE = "models.yaml"


def infer_model_info(model: str) -> dict[str, object]:
    """base_model and domain from a name like `vllm/qwen-insecure` (longest matching suffix wins)."""
    name = model.split("/", 1)[1] if "/" in model else model
    parts = name.split("-")
    for i in range(1, len(parts)):
        suffix = "-".join(parts[i:]).lower()
        if suffix in DOMAIN_ALIASES:
            return {"base_model": "-".join(parts[:i]), "domain": DOMAIN_ALIASES[suffix], "proxy": False}
    return {"base_model": name, "domain": "base", "proxy": False}


def models_info(
    models: list[str], logdir: Path | None = None, models_yaml: Path | None = None
) -> tuple[pd.DataFrame, str | None]:
    """(table indexed by model with base_model, domain, proxy; the top-level `note` or None).

    Reads `models_yaml`, else `<logdir>/models.yaml` when present; models it does not
    list are inferred from their names.
    """
    import yaml

    from em_persona.core.yaml_lines import yaml_error_where

    path = models_yaml if models_yaml is not None else (logdir / MODELS_FILE if logdir is not None else None)
    listed: dict[str, dict[str, object]] = {}
    note: str | None = None
    all_proxy = False
    if path is not None and path.is_file():
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{yaml_error_where(path, exc)}: not valid YAML ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("models", {}), dict):
            raise ValueError(f"{path}: expected a mapping with a `models:` mapping of model name -> facts")
        note = doc.get("note")
        all_proxy = bool(doc.get("proxy", False))
        for name, facts in (doc.get("models") or {}).items():
            if facts is not None and not isinstance(facts, dict):
                raise ValueError(
                    f"{path}: entry for model {name!r} must be a mapping (base_model, domain, proxy)"
                )
            listed[str(name)] = dict(facts or {})
    elif models_yaml is not None:
        raise FileNotFoundError(f"{models_yaml}: models file not found")
    rows = {}
    for model in sorted(set(models) | set(listed)):
        info = infer_model_info(model)
        info.update(
            {k: v for k, v in listed.get(model, {}).items() if k in ("base_model", "domain", "proxy")}
        )
        info["proxy"] = bool(info.get("proxy")) or all_proxy
        rows[model] = info
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["base_model", "domain", "proxy"])
    table.index.name = "model"
    return table, (str(note) if note else None)
