"""report.html: rendered from the manifest alone, self-contained, escaped, readable and reproducible."""

from __future__ import annotations

import copy
import json
import re

from corpusmill.jobs.report import render_report, stage_rows


def _manifest():
    return {
        "job": "t", "status": "complete", "created_at": "2026-01-01T00:00:00+00:00",
        "code_version": {"corpusmill": "0.1.0"},
        "input": {"files": 1, "bytes": 3_358_428, "records": 5, "fingerprint": "ab"},
        "counts": {"input_records": 5, "kept": 2, "duplicates": 2, "duplicates_by_kind": {"exact": 1, "near": 1},
                   "rejected": 1, "rejected_by_reason": {"malformed_json": 1}, "balanced": True},
        "outputs": {"docs": {"rows": 2, "bytes": 4_580_723, "shards": [{"path": "docs/part-00000-of-00001.parquet"}]}},
        "stages": ["dedup", "decompose"],
        "dedup": {"enabled": True, "clusters": {"count": 1, "size_histogram": {"3": 1}},
                  "lsh": {"threshold": 0.8, "num_perm": 128, "ngram": 5, "bands": 16, "rows": 6,
                          "fingerprint": "x" * 300},
                  "top_clusters": [{"cluster_id": "a", "size": 3, "representative_id": "a",
                                    "by_kind": {"exact": 1, "near": 1}, "excerpt": "<script>alert(1)</script>"}]},
        "decompose": {"token_retention": 0.9, "input_tokens": 3000, "kept_tokens": 2054,
                      "buckets": {"9": {"dir": "len-00512", "sequences": 2, "tokens": 1026},
                                  "8": {"dir": "len-00256", "sequences": 4, "tokens": 1028}},
                      "document_length_histogram": {"8": 3, "10": 1},
                      "curriculum": {"steps": 3, "tokens_per_step": 1024, "odds": "grow_p2",
                                     "buckets": [{"sequence_length": 256, "sequences": 4, "steps": 2}]}},
        "execution": {"runner": "FnApiRunner", "partitioning": {"mode": "single"}},
        "timings": {"wall_seconds": 1.5, "plan_seconds": 0.1, "pipeline_seconds": 1.2,
                    "stage_ms": {"time_read_ms": 3, "time_dedup_features_ms": 1200},
                    "stages": [
                        {"stage": "read", "documents_in": 5, "documents_out": 4, "duplicates": 0, "rejected": 1,
                         "seconds": 0.4},
                        {"stage": "dedup", "documents_in": 4, "documents_out": 2, "duplicates": 2, "rejected": 0,
                         "seconds": 0.5},
                        {"stage": "decompose", "documents_in": 2, "documents_out": 2, "duplicates": 0,
                         "rejected": 0, "seconds": 0.2},
                        {"stage": "write", "documents_in": 2, "documents_out": None, "duplicates": None,
                         "rejected": None, "seconds": 0.1}]},
        "config": {"input": {"paths": ["x.jsonl"]}, "dedup": {"threshold": 0.8}},
    }


def _visible_text(page: str) -> str:
    """The page's text as a reader sees it: no tags, no inline plots."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<(svg|style)\b.*?</\1>", "", page, flags=re.S))


def test_report_shows_every_section_with_inline_plots_units_and_escaped_text():
    page = render_report(_manifest())
    assert page.startswith("<!doctype html>")
    # Rejects by reason, cluster sizes, tokens per bucket, document lengths, seconds per stage.
    assert page.count("<svg") == 5
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    text = _visible_text(page)
    for section in ("Input", "Accounting", "Outputs", "Deduplication", "Dataset decomposition", "Timings",
                    "Execution", "Configuration"):
        assert f"id='{section.split()[0].lower()}'" in page or section in text
    assert "duplicate (near)" in text and "rejected: malformed_json" in text
    assert "3.4 MB" in text and "4.6 MB" in text  # sizes with units, not bare byte counts
    # Buckets appear in size order, not string order.
    assert page.index("len-00256") < page.index("len-00512")
    # No raw JSON dumps: nested values are tables (folded), never a printed dict.
    assert "<pre>" not in page and "{" not in text
    # Nothing is fetched when the page opens offline: no scripts, stylesheets or images by URL.
    assert not any(tag in page for tag in ("<script", "<link", "<img", "src=", "@import"))
    # The per-stage summary table, with the documents written filled in from the outputs.
    assert "Per stage" in text and "Seconds per stage" in page
    assert re.search(r"write\s+2\s+2\s+-\s+-\s+0\.1", text)
    assert "Refresh" not in text  # only a refresh's manifest has that section


def test_refresh_section_only_for_a_refresh_manifest():
    manifest = _manifest()
    manifest["refresh"] = {"against_previous": {"exact": 7, "near": 3}, "against_each_other": {"exact": 1, "near": 0}}
    manifest["previous"] = {"path": "/snapshots/2026-11", "manifest_sha256": "cd" * 32}
    manifest["lineage"] = [{"path": "/snapshots/2026-11", "docs_shards": ["a", "b"]}, {"path": "out", "docs_shards": []}]
    page = render_report(manifest)
    text = _visible_text(page)
    assert "Refresh: duplicates against the previous snapshot" in text and "/snapshots/2026-11" in text
    assert re.search(r"exact\s+7\s+1", text) and re.search(r"all\s+10\s+1", text)
    assert page.index("id='dedup'") < page.index("id='refresh'") < page.index("id='decompose'")
    # The dedup stage's own record of a refresh (dedup.refresh) is shown the same way.
    inner = _manifest()
    inner["dedup"]["refresh"] = manifest["refresh"]
    assert "Refresh: duplicates against the previous snapshot" in render_report(inner)


def test_stage_rows_fill_in_the_documents_written_and_add_the_total():
    rows = stage_rows(_manifest())
    assert [r["stage"] for r in rows] == ["read", "dedup", "decompose", "write", "total"]
    assert rows[3]["documents_out"] == 2 and rows[-1] == {
        "stage": "total", "documents_in": 5, "documents_out": 2, "duplicates": 2, "rejected": 1, "seconds": 1.5}
    old = copy.deepcopy(_manifest())
    del old["timings"]["stages"]
    assert stage_rows(old) == [] and "Per stage" not in render_report(old)  # manifests from before the table


def test_report_is_reproducible():
    assert render_report(_manifest()) == render_report(json.loads(json.dumps(_manifest())))
