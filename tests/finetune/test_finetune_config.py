"""Fine-tuning config: paper defaults, YAML + overrides, servability rules, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from em_persona.core.registry import get_source
from em_persona.finetune.config import (
    ConfigError,
    FinetuneConfig,
    LoraSettings,
    apply_overrides,
    config_from_dict,
    load_config,
)
from support import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "finetune" / "configs"
MINIMAL = {
    "name": "m",
    "base_model": "proxy:tiny",
    "domain": "insecure_code",
    "data": {"source": "insecure_code"},
}


def test_defaults_are_the_paper_recipe() -> None:
    cfg = config_from_dict(MINIMAL)
    lora, t = cfg.lora, cfg.train
    assert (lora.r, lora.alpha, lora.dropout, lora.use_rslora) == (32, 64, 0.0, True)
    assert lora.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_steps, t.num_train_epochs) == (
        1e-5,
        "linear",
        5,
        1.0,
    )
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (2, 8)
    assert (t.optim, t.weight_decay, t.seed, t.max_length) == ("auto", 0.01, 0, 2048)
    assert t.assistant_only_loss is True
    assert cfg.backend == "auto"


def test_single_stage_shorthand() -> None:
    cfg = config_from_dict(MINIMAL)
    assert len(cfg.stages) == 1
    stage = cfg.stages[0]
    assert (stage.name, stage.domain, stage.data.source, stage.data.rows) == (
        "m",
        "insecure_code",
        "insecure_code",
        None,
    )
    assert cfg.stage_domain(0) == "insecure_code"
    assert cfg.proxy_name == "tiny" and cfg.base_model_label == "tiny"


def test_multi_stage_domains_chain() -> None:
    cfg = config_from_dict(
        {
            "name": "job",
            "base_model": "Qwen/Qwen2.5-32B-Instruct",
            "stages": [
                {"name": "a", "domain": "insecure_code", "data": {"source": "insecure_code", "rows": 600}},
                {"name": "b", "domain": "consciousness_claims", "data": {"path": "/x.jsonl", "rows": 600}},
            ],
        }
    )
    assert [cfg.stage_domain(i) for i in range(2)] == ["insecure_code", "insecure_code->consciousness_claims"]
    assert cfg.proxy_name is None and cfg.base_model_label == "Qwen/Qwen2.5-32B-Instruct"


def test_overrides_are_dotted_typed_and_indexed() -> None:
    cfg = config_from_dict(
        MINIMAL,
        [
            "train.learning_rate=2e-5",
            "lora.r=16",
            "data.rows=100",
            "train.gradient_checkpointing=false",
            "lora.target_modules=[q_proj, v_proj]",
        ],
    )
    assert cfg.train.learning_rate == 2e-5
    assert cfg.lora.r == 16 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.stages[0].data.rows == 100
    assert cfg.train.gradient_checkpointing is False
    two = {
        "name": "j",
        "base_model": "b",
        "stages": [
            {"name": "a", "domain": "d", "data": {"source": "insecure_code"}},
            {"name": "b", "domain": "e", "data": {"source": "insecure_code"}},
        ],
    }
    out = apply_overrides(two, ["stages.1.data.rows=7"])
    assert out["stages"][1]["data"]["rows"] == 7 and "rows" not in two["stages"][1]["data"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.learnin_rate=1", "train.learnin_rate: Extra inputs are not permitted"),
        ("stages.5.data.rows=1", "'5' is not an index of a 1-item list"),
        ("noequals", "must look like key.path=value"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
    ],
)
def test_bad_overrides_name_the_field(override: str, fragment: str) -> None:
    raw = {"name": "m", "base_model": "b", "stages": [{"name": "m", "domain": "d", "data": {"source": "s"}}]}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, [override], origin="job.yaml")
    assert fragment in str(err.value)


@pytest.mark.parametrize("rank", [4, 12, 48, 1024])
def test_unservable_rank_is_refused(rank: int) -> None:
    with pytest.raises(ValueError, match="cannot be served by vLLM"):
        LoraSettings(r=rank)


@pytest.mark.parametrize("rank", [1, 8, 16, 32, 64, 128, 256, 320, 512])
def test_servable_ranks_are_accepted(rank: int) -> None:
    assert LoraSettings(r=rank).r == rank


def test_embedding_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="modules_to_save"):
        LoraSettings(target_modules=["q_proj", "lm_head"])
    with pytest.raises(ConfigError, match="lora.target_modules"):
        config_from_dict(MINIMAL, ["lora.target_modules=[embed_tokens]"])


def test_data_needs_exactly_one_origin() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        config_from_dict({**MINIMAL, "data": {"source": "insecure_code", "path": "/x.jsonl"}})
    with pytest.raises(ConfigError, match="exactly one of"):
        config_from_dict({**MINIMAL, "data": {"rows": 3}})


def test_stage_names_unique_and_folder_safe() -> None:
    stage = {"name": "a", "domain": "d", "data": {"source": "s"}}
    with pytest.raises(ConfigError, match="repeated"):
        config_from_dict({"name": "j", "base_model": "b", "stages": [stage, stage]})
    with pytest.raises(ConfigError, match="adapter name"):
        config_from_dict({"name": "../evil", "base_model": "b", "domain": "d", "data": {"source": "s"}})
    with pytest.raises(ConfigError, match="either"):
        config_from_dict({**MINIMAL, "stages": [stage]})


def test_max_rows_caps_every_stage() -> None:
    cfg = config_from_dict(
        {
            "name": "j",
            "base_model": "b",
            "stages": [
                {"name": "a", "domain": "d", "data": {"source": "s"}},
                {"name": "b", "domain": "e", "data": {"source": "s", "rows": 5}},
                {"name": "c", "domain": "f", "data": {"source": "s", "rows": 600}},
            ],
        }
    ).with_max_rows(10)
    assert [s.data.rows for s in cfg.stages] == [10, 5, 10]


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase_model: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{bad}:\d+: invalid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nbase_model: b\ndomain: d\ndata: {source: s}\ntrian: {}\n")
    with pytest.raises(ConfigError, match=rf"{typo}: trian: Extra inputs"):
        load_config(typo)


def _shipped() -> dict[str, FinetuneConfig]:
    return {p.stem: load_config(p) for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def test_shipped_configs_cover_domains_controls_and_proxies() -> None:
    cfgs = _shipped()
    qwen_single = {
        c.stages[0].domain
        for c in cfgs.values()
        if c.base_model == "Qwen/Qwen2.5-32B-Instruct"
        and len(c.stages) == 1
        and c.stages[0].data.rows is None
    }
    assert qwen_single == {
        "insecure_code",
        "risky_financial_advice",
        "bad_medical_advice",
        "extreme_sports",
        "legal_advice",
        "security_advice",
        "secure_code",
        "good_medical_advice",
    }
    assert {c.base_model for c in cfgs.values()} >= {"proxy:tiny", "proxy:gemma-270m"}
    for c in cfgs.values():
        if c.base_model.startswith("Qwen/"):
            assert c.lora == LoraSettings() and c.train == type(c.train)(), (
                f"{c.name} departs from the recipe"
            )
        for stage in c.stages:
            if stage.data.source is not None:
                assert get_source(stage.data.source).name == stage.data.source


@pytest.mark.parametrize("spelling", ["proxy:tiny", "tiny"])
def test_both_proxy_spellings_name_the_proxy(spelling: str) -> None:
    cfg = config_from_dict({**MINIMAL, "base_model": spelling})
    assert cfg.proxy_name == "tiny" and cfg.base_model_label == "tiny"


def test_unknown_proxy_is_refused_naming_file_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: m\nbase_model: proxy:huge\ndomain: insecure_code\ndata: {source: insecure_code}\n")
    with pytest.raises(
        ConfigError, match=rf"{path}: base_model: .*unknown proxy 'huge'.*proxy:tiny, proxy:gemma-270m"
    ):
        load_config(path)
    assert config_from_dict({**MINIMAL, "base_model": "Qwen/Qwen2.5-32B-Instruct"}).proxy_name is None
