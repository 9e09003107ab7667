"""The decompose section of a job spec: defaults, validation messages, the curriculum it describes."""

from __future__ import annotations

import pytest

from corpusmill.schemas.config import ConfigError, CurriculumSectionConfig, DecomposeConfig, build, to_dict
from corpusmill.training.curriculum import CurriculumConfig
from corpusmill.transforms.decompose.stats import curriculum_config


def build_decompose(data):
    return build(DecomposeConfig, data, "decompose.")


def test_defaults_follow_the_reference():
    config = build_decompose({})
    assert config.enabled and config.append_eot and config.plus_one
    assert config.tokenizer == "tiktoken:cl100k_base"
    assert (config.min_exp, config.max_exp, config.mode) == (8, 13, "random")
    assert (config.extra, list(config.exponents), config.piece_length(8)) == (1, [8, 9, 10, 11, 12, 13], 257)
    assert curriculum_config(config) == CurriculumConfig(tokens_per_step=1 << 20, odds="grow_p2")


def test_yaml_values_map_onto_the_kernel_configs():
    config = build_decompose(
        {
            "tokenizer": "hf:/models/tokenizer.json",
            "min_exp": 6,
            "max_exp": 10,
            "mode": "cap",
            "seed": 3,
            "plus_one": False,
            "curriculum": {"odds": "custom", "custom_odds": [5, 4, 3, 2, 1], "tokens_per_step": 4096,
                           "num_cycles": 2, "seed": 9},
        }
    )
    assert (config.min_exp, config.max_exp, config.mode, config.seed, config.extra) == (6, 10, "cap", 3, 0)
    assert curriculum_config(config) == CurriculumConfig(4096, (5.0, 4.0, 3.0, 2.0, 1.0), 2, 9)
    assert to_dict(config)["curriculum"]["custom_odds"] == [5.0, 4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"mode": "shuffle"}, "decompose.mode", "random, cap"),
        ({"min_exp": -1}, "decompose.min_exp", "out of range"),
        ({"max_exp": 31}, "decompose.max_exp", "out of range"),
        ({"min_exp": 10, "max_exp": 9}, "decompose.max_exp", "min_exp"),
        ({"tokenize_batch_docs": 0}, "decompose.tokenize_batch_docs", "out of range"),
        ({"num_threads": -1}, "decompose.num_threads", "out of range"),
        ({"tokenizer": "cl100k_base"}, "decompose.tokenizer", "tiktoken:cl100k_base"),
        ({"tokenizer": "spm:model"}, "decompose.tokenizer", "hf:"),
        ({"append_eot": "yes"}, "decompose.append_eot", "true or false"),
        ({"bucket_size": 3}, "decompose.bucket_size", "allowed keys"),
        ({"curriculum": {"odds": "shrink"}}, "decompose.curriculum.odds", "grow_linear"),
        ({"curriculum": {"odds": "custom"}}, "decompose.curriculum.custom_odds", "6 positive numbers"),
        ({"curriculum": {"odds": "custom", "custom_odds": [1, 1, 1, 1, 1, 0]}},
         "decompose.curriculum.custom_odds", "positive"),
        ({"curriculum": {"custom_odds": [1, 2, 3, 4, 5, 6]}}, "decompose.curriculum.custom_odds", "odds = custom"),
        ({"curriculum": {"tokens_per_step": 4096}}, "decompose.curriculum.tokens_per_step", "8192"),
        ({"curriculum": {"num_cycles": 0}}, "decompose.curriculum.num_cycles", "out of range"),
        ({"curriculum": 5}, "decompose.curriculum", "expected a mapping"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(data, key, words):
    with pytest.raises(ConfigError) as error:
        build_decompose(data)
    assert error.value.key == key
    assert words in str(error.value)


def test_tokens_per_step_follows_max_exp():
    config = build_decompose({"max_exp": 10, "curriculum": {"tokens_per_step": 4096}})
    assert curriculum_config(config).tokens_per_step == 4096


def test_sections_are_frozen():
    with pytest.raises(AttributeError):
        DecomposeConfig().max_exp = 14  # type: ignore[misc]
    with pytest.raises(AttributeError):
        CurriculumSectionConfig().odds = "uniform"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, key", [({"mode": "binary"}, "decompose.mode"), ({"min_exp": -1}, "decompose.min_exp"),
                                         ({"min_exp": 9, "max_exp": 8}, "decompose.max_exp")])
def test_direct_construction_checks_the_same_keys(kwargs, key):
    # Kernels take the section itself; building it in code must not skip the checks YAML gets.
    with pytest.raises(ConfigError) as error:
        DecomposeConfig(**kwargs)
    assert error.value.key == key
