"""Base models for serving: what a `--base` spec names, and whether an adapter was trained on it.

A spec is a local folder, a proxy (`proxy:NAME` or a bare NAME, see finetune.proxy), a model in
the local Hugging Face cache, or a hub id the Hub knows (checked with a short timeout; never when
HF_HUB_OFFLINE is set). Anything else fails at once with the candidates, instead of vLLM
retrying the Hub until its own timeout.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from em_persona.core.errors import EmPersonaError
from em_persona.core.proxies import ProxyError, proxy_candidates, proxy_folder, proxy_name, proxy_of_folder

HUB_CHECK_TIMEOUT_S = 5.0
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Unsloth loads official checkpoints from its own mirrors (same weights) and records the mirror's
# id in the adapter; these suffixes mark its pre-quantized variants of the same model.
_UNSLOTH_ORG = "unsloth"
_UNSLOTH_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


class BaseModelError(EmPersonaError, ValueError):
    """A base-model spec names nothing servable, or an adapter does not fit the served base."""


# --------------------------------------------------------------------------- Hugging Face cache


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def cached_hub_models() -> list[str]:
    """Hub ids with a downloaded model (a snapshot holding config.json) in the local cache."""
    cache = hf_hub_cache()
    if not cache.is_dir():
        return []
    found = []
    for repo in sorted(cache.glob("models--*")):
        if any((snap / "config.json").is_file() for snap in (repo / "snapshots").glob("*")):
            found.append(repo.name[len("models--") :].replace("--", "/"))
    return found


def hub_id_of_snapshot(folder: Path) -> str | None:
    """The hub id of a folder inside the Hugging Face cache (`models--ORG--NAME/snapshots/REV`), else None."""
    parts = folder.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/")
    return None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks Hugging Face never to reach the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_knows(model_id: str, timeout: float = HUB_CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """(known, why): ask the Hub about `model_id` once, with a short timeout."""
    if hub_offline():
        return False, "HF_HUB_OFFLINE is set, so the Hub is not asked"
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:
        return False, "huggingface_hub is not installed"
    try:
        HfApi().model_info(model_id, timeout=timeout)
    except RepositoryNotFoundError:
        return False, f"the Hub has no model {model_id!r} (or it is private and no token is set)"
    except Exception as exc:  # network errors come in many types; any of them means "not reachable"
        return False, f"the Hub is not reachable ({type(exc).__name__}: {str(exc)[:200]})"
    return True, "the Hub knows it"


# --------------------------------------------------------------------------- resolving --base


def candidates() -> str:
    """What `--base` can name here: the proxies (built or not) and the cached hub models."""
    lines = ["  " + c for c in proxy_candidates()]
    cached = cached_hub_models()
    lines += [f"  {m} (Hugging Face cache)" for m in cached] or [
        f"  (no model in the Hugging Face cache {hf_hub_cache()})"
    ]
    return (
        "candidates:\n"
        + "\n".join(lines)
        + "\n  or a model folder, or a hub id the Hub knows (needs network)"
    )


def resolve_base(base: str) -> tuple[str, str]:
    """(model argument for vLLM, default served name) for a folder, a proxy or a hub id.

    Raises BaseModelError, listing the candidates, when `base` names nothing servable.
    """
    try:
        folder = proxy_folder(base)
    except ProxyError as exc:
        raise BaseModelError(f"{exc}\n{candidates()}") from None
    if folder is not None:
        return str(folder), folder.name
    path = Path(base).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve().name
    if not _HUB_ID_RE.match(base):
        raise BaseModelError(f"base model folder {path} does not exist\n{candidates()}")
    if base in cached_hub_models():
        return base, base
    known, why = hub_knows(base)
    if not known:
        raise BaseModelError(
            f"base model {base!r} is not a folder, not a proxy and not in the Hugging Face cache, "
            f"and {why}\n{candidates()}"
        )
    return base, base  # a hub id vLLM downloads, e.g. Qwen/Qwen2.5-32B-Instruct


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class BaseIdentity:
    """What a base model is, for comparing where it was recorded with what is served."""

    kind: Literal["proxy", "folder", "hub"]
    key: str  # proxy name, resolved folder path, or hub id

    def __str__(self) -> str:
        return {"proxy": f"proxy:{self.key}", "folder": f"folder {self.key}", "hub": f"hub model {self.key}"}[
            self.kind
        ]

    def same_as(self, other: BaseIdentity) -> bool:
        """Proxies by name, folders by resolved path, hub ids case-insensitively (an Unsloth
        mirror of a model counts as that model)."""
        if self.kind != other.kind:
            return False
        if self.kind != "hub":
            return self.key == other.key
        return _hub_key(self.key) == _hub_key(other.key) or _unsloth_equal(self.key, other.key)


def _hub_key(model_id: str) -> str:
    return model_id.lower()


def _unsloth_equal(a: str, b: str) -> bool:
    """True when one id is Unsloth's mirror of the other (same repo name, org `unsloth`)."""

    def split(model_id: str) -> tuple[str, str]:
        org, _, name = model_id.lower().rpartition("/")
        for suffix in _UNSLOTH_SUFFIXES:
            name = name.removesuffix(suffix)
        return org, name

    (org_a, name_a), (org_b, name_b) = split(a), split(b)
    return name_a == name_b and _UNSLOTH_ORG in (org_a, org_b)


def base_identity(spec: str | Path) -> BaseIdentity:
    """The identity of a base model given as a proxy spec, a folder (maybe gone) or a hub id."""
    text = str(spec)
    try:
        proxy = proxy_name(text)
    except ProxyError:  # a recorded `proxy:X` we do not know: still a proxy, and unlike any served one
        proxy = text.split(":", 1)[1]
    if proxy is not None:
        return BaseIdentity("proxy", proxy)
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists() or not _HUB_ID_RE.match(text):
        folder = path.resolve()
        proxy = proxy_of_folder(folder)
        if proxy is not None:
            return BaseIdentity("proxy", proxy)
        hub_id = hub_id_of_snapshot(folder)
        if hub_id is not None:
            return BaseIdentity("hub", hub_id)
        return BaseIdentity("folder", str(folder))
    return BaseIdentity("hub", text)


def recorded_bases(adapter_dir: Path) -> list[tuple[str, str, BaseIdentity]]:
    """(file, field = value, identity) for each base model an adapter folder records.

    adapter_config.json `base_model_name_or_path` (written by peft) and manifest.json `base_model`
    (written by `em-persona finetune`; for a local folder its `base_model_path` is used, being resolved).
    """
    out: list[tuple[str, str, BaseIdentity]] = []
    cfg_file = adapter_dir / "adapter_config.json"
    recorded = _read_json(cfg_file).get("base_model_name_or_path")
    if isinstance(recorded, str) and recorded:
        out.append((str(cfg_file), f"base_model_name_or_path={recorded!r}", base_identity(recorded)))
    manifest_file = adapter_dir / "manifest.json"
    if manifest_file.is_file():
        manifest = _read_json(manifest_file)
        label, path = manifest.get("base_model"), manifest.get("base_model_path")
        if isinstance(label, str) and label:
            ident = base_identity(label)
            if ident.kind != "proxy" and isinstance(path, str) and path:
                ident = base_identity(path)
            out.append((str(manifest_file), f"base_model={label!r}", ident))
    return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise BaseModelError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise BaseModelError(f"{path}: expected a JSON object")
    return data


def check_adapter_base(name: str, adapter_dir: Path, served: BaseIdentity, served_spec: str) -> None:
    """Refuse an adapter whose recorded base model is not the served one, naming both."""
    for file, field, recorded in recorded_bases(adapter_dir):
        if not recorded.same_as(served):
            raise BaseModelError(
                f"adapter {name!r} was trained on another base model: {file} records {field} ({recorded}), "
                f"but the server's base is {served_spec!r} ({served}). Serve it with its own base model"
            )
