"""report.html: rendered from the manifest alone, self-contained, escaped and reproducible."""

from __future__ import annotations

import json

from corpusmill.jobs.report import render_report


def _manifest():
    return {
        "job": "t", "status": "complete", "created_at": "2026-01-01T00:00:00+00:00",
        "code_version": {"corpusmill": "0.1.0"},
        "input": {"files": 1, "bytes": 10, "records": 5, "fingerprint": "ab"},
        "counts": {"input_records": 5, "kept": 2, "duplicates": 2, "duplicates_by_kind": {"exact": 1, "near": 1},
                   "rejected": 1, "rejected_by_reason": {"malformed_json": 1}, "balanced": True},
        "outputs": {"docs": {"rows": 2, "bytes": 100, "shards": [{"path": "docs/part-00000-of-00001.parquet"}]}},
        "dedup": {"enabled": True, "clusters": {"count": 1, "size_histogram": {"3": 1}},
                  "top_clusters": [{"cluster_id": "a", "size": 3, "representative_id": "a",
                                    "excerpt": "<script>alert(1)</script>"}]},
        "decompose": {"token_retention": 0.9, "buckets": {"9": {"dir": "len-00512", "sequences": 2, "tokens": 1026},
                                                         "8": {"dir": "len-00256", "sequences": 4, "tokens": 1028}},
                      "document_length_histogram": {"8": 3, "10": 1}},
        "execution": {"runner": "FnApiRunner", "partitioning": {"mode": "single"}},
        "timings": {"wall_seconds": 1.0, "stage_ms": {"time_read_ms": 3}},
        "config": {"input": {"paths": ["x.jsonl"]}},
    }


def test_report_shows_every_section_with_inline_plots_and_escaped_text():
    page = render_report(_manifest())
    assert page.startswith("<!doctype html>") and page.count("<svg") == 4  # rejects, clusters, buckets, lengths
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "duplicate: near" in page and "rejected: malformed_json" in page
    # Buckets appear in size order, not string order.
    assert page.index("len-00256") < page.index("len-00512")
    # Nothing is fetched when the page opens offline: no scripts, stylesheets or images by URL.
    assert not any(tag in page for tag in ("<script", "<link", "<img", "src=", "@import"))


def test_report_is_reproducible():
    assert render_report(_manifest()) == render_report(json.loads(json.dumps(_manifest())))
