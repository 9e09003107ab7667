"""The decompose stage checks its tokenizer when the job is planned, before any pipeline runs."""

from __future__ import annotations

import pytest

from corpusmill.pipelines.corpus_job import plan_job
from corpusmill.schemas.config import ConfigError, load_job
from corpusmill.transforms.decompose.tokenizer import hf_tokenizer_location


def _error(overrides):
    with pytest.raises(ConfigError) as raised:
        plan_job(load_job({}, overrides))
    return raised.value


def test_an_unknown_tiktoken_encoding_fails_when_the_job_is_planned():
    error = _error(["decompose.tokenizer=tiktoken:nonexistent"])
    assert error.key == "decompose.tokenizer"
    assert "unknown tiktoken encoding 'nonexistent'" in str(error) and "cl100k_base" in str(error)


@pytest.mark.parametrize("spec", ["hf:/missing/tokenizer.json", "hf:./relative/org", "hf:a/b/c",
                                  "hf:org/name.json"])
def test_a_missing_local_tokenizer_fails_when_the_job_is_planned(spec):
    error = _error([f"decompose.tokenizer={spec}"])
    assert error.key == "decompose.tokenizer" and "no tokenizer file" in str(error)
    assert "hf:org/name" in str(error)


def test_existing_files_hub_names_and_known_encodings_pass(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    for spec in ["tiktoken:cl100k_base", "tiktoken:o200k_base", f"hf:{tmp_path}", f"hf:{tmp_path}/tokenizer.json",
                 "hf:openai-community/gpt2"]:
        assert plan_job(load_job({}, [f"decompose.tokenizer={spec}"])).config.decompose.tokenizer == spec


def test_a_folder_without_tokenizer_json_is_missing(tmp_path):
    assert hf_tokenizer_location(str(tmp_path)) == ("missing", str(tmp_path / "tokenizer.json"))
    assert _error([f"decompose.tokenizer=hf:{tmp_path}"]).key == "decompose.tokenizer"


def test_a_disabled_stage_does_not_need_its_tokenizer():
    plan = plan_job(load_job({}, ["decompose.enabled=false", "decompose.tokenizer=hf:/missing/tokenizer.json"]))
    assert [entry.name for entry, _ in plan.stages] == ["dedup"]
