"""Config validation: every bad key fails before a pipeline exists, naming the key."""

from __future__ import annotations

import pytest
import yaml

from corpusmill.jobs.cli import default_job_spec
from corpusmill.schemas.config import ConfigError, JobConfig, build, load_job, to_dict


def test_default_job_spec_maps_one_to_one_onto_the_dataclasses():
    spec = default_job_spec()
    config = load_job(spec)
    # Every key of the checked-in default is a field, and the round trip is lossless.
    assert build(JobConfig, to_dict(config)) == config
    assert set(spec["input"]) <= set(to_dict(config)["input"])
    assert set(spec["output"]) <= set(to_dict(config)["output"])


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (["input.txt_field=body"], "input.txt_field", "allowed keys: batch_rows"),
        (["inputs.paths=[a]"], "inputs", "allowed keys: decompose, dedup, input, name, order, output"),
        (["input.format=xml"], "input.format", "allowed values: auto, jsonl, parquet, text"),
        (["output.compression=lz4"], "output.compression", "allowed values: zstd, snappy, gzip, none"),
        (["input.batch_rows=0"], "input.batch_rows", "allowed: 1 .. 1000000"),
        (["output.num_shards=-2"], "output.num_shards", "allowed: 0 .. 65536"),
        (["output.num_shards=100000"], "output.num_shards", "allowed: 0 .. 65536"),
        (["output.overwrite=maybe"], "output.overwrite", "expected true or false"),
        (["input.max_text_bytes=big"], "input.max_text_bytes", "expected an integer"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as raised:
        load_job(default_job_spec(), overrides)
    assert raised.value.key == key
    assert allowed in str(raised.value)


def test_overrides_parse_yaml_values_into_typed_fields():
    config = load_job({}, ["input.paths=[a.jsonl, 'b/*.parquet']", "output.num_shards=8",
                           "output.compression_level=null", "name=nightly"])
    assert config.input.paths == ("a.jsonl", "b/*.parquet")
    assert config.output.num_shards == 8 and config.output.compression_level is None
    assert config.name == "nightly"


def test_a_single_path_string_is_accepted_as_a_list():
    assert load_job(yaml.safe_load("input: {paths: data/x.jsonl}")).input.paths == ("data/x.jsonl",)


def test_config_is_frozen():
    config = load_job({})
    with pytest.raises(Exception):
        config.output.path = "elsewhere"
