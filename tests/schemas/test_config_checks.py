"""Config checks that used to come at run time or never: field names, shard count, the tokenizer."""

from __future__ import annotations

import pytest

from corpusmill.schemas.config import ConfigError, InputConfig, hf_tokenizer_location, load_job


def _error(overrides):
    with pytest.raises(ConfigError) as raised:
        load_job({}, overrides)
    return raised.value


@pytest.mark.parametrize("key", ["text_field", "id_field", "url_field", "timestamp_field", "source_field"])
@pytest.mark.parametrize("value", ["''", "'  '"])
def test_empty_field_names_are_rejected_naming_the_key(key, value):
    error = _error([f"input.{key}={value}"])
    assert error.key == f"input.{key}" and "allowed: a non-empty field name" in str(error)


def test_an_empty_override_value_is_an_empty_field_name():
    assert _error(["input.text_field="]).key == "input.text_field"


def test_two_fields_cannot_share_one_input_name():
    error = _error(["input.id_field=text"])
    assert error.key == "input.id_field" and "is also input.text_field" in str(error)
    with pytest.raises(ConfigError, match="input.source_field"):
        InputConfig(url_field="origin", source_field="origin")


def test_field_names_are_free_otherwise():
    config = load_job({}, ["input.text_field=body", "input.id_field=key", "input.timestamp_field='created at'"])
    assert (config.input.text_field, config.input.id_field, config.input.timestamp_field) == (
        "body", "key", "created at")


def test_the_shard_count_is_bounded():
    assert load_job({}, ["output.num_shards=65536"]).output.num_shards == 65536
    error = _error(["output.num_shards=100000"])
    assert error.key == "output.num_shards" and "allowed: 0 .. 65536" in str(error)


def test_an_unknown_tiktoken_encoding_fails_when_the_config_is_loaded():
    error = _error(["decompose.tokenizer=tiktoken:nonexistent"])
    assert error.key == "decompose.tokenizer"
    assert "unknown tiktoken encoding 'nonexistent'" in str(error) and "cl100k_base" in str(error)


@pytest.mark.parametrize("spec", ["hf:/missing/tokenizer.json", "hf:./relative/org", "hf:a/b/c",
                                  "hf:org/name.json"])
def test_a_missing_local_tokenizer_fails_when_the_config_is_loaded(spec):
    error = _error([f"decompose.tokenizer={spec}"])
    assert error.key == "decompose.tokenizer" and "no tokenizer file" in str(error)
    assert "hf:org/name" in str(error)


def test_existing_files_hub_names_and_known_encodings_pass(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    for spec in ["tiktoken:cl100k_base", "tiktoken:o200k_base", f"hf:{tmp_path}", f"hf:{tmp_path}/tokenizer.json",
                 "hf:openai-community/gpt2"]:
        assert load_job({}, [f"decompose.tokenizer={spec}"]).decompose.tokenizer == spec


def test_a_folder_without_tokenizer_json_is_missing(tmp_path):
    assert hf_tokenizer_location(str(tmp_path)) == ("missing", str(tmp_path / "tokenizer.json"))
    assert _error([f"decompose.tokenizer=hf:{tmp_path}"]).key == "decompose.tokenizer"


def test_a_disabled_stage_does_not_need_its_tokenizer():
    config = load_job({}, ["decompose.enabled=false", "decompose.tokenizer=hf:/missing/tokenizer.json"])
    assert not config.decompose.enabled
