"""Config checks that used to come at run time or never: field names, the shard count."""

from __future__ import annotations

import pytest

from corpusmill.schemas.config import ConfigError, InputConfig, load_job


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
