"""benchmarks/dedup_bench.py as a test (``-m slow``): issue 12.1's targets on the near-copy corpus.

Builds ``html-docs-near`` (needs the Debian packages python3.11-doc and
postgresql-doc-15) into ``benchmarks/.data`` once, then runs the default job
(recall banding) and datasketch once each and checks quality, recall just above
the threshold and wall time against datasketch. A few minutes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.mark.slow
def test_recall_banding_meets_issue_12_targets_on_near_copies(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import dedup_bench

    out = tmp_path / "dedup_bench.json"
    assert dedup_bench.main(["--corpora", "html-docs-near", "--contenders", "beam-exact",
                             "beam-exact-datasketch-bands", "datasketch", "--repeats", "1", "--sample", "100",
                             "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    targets = [t for t in report["targets"] if t["target"].startswith("issue 12.1")]
    assert len(targets) == 4 and all(t["pass"] for t in targets), targets
    quality = report["by_corpus"]["html-docs-near"]["quality"]
    # The failure the issue reports, with datasketch's banding: most pairs just above 0.8 missed.
    assert quality["beam-exact-datasketch-bands"]["pair_recall_by_jaccard"]["[0.80,0.85)"]["recall"] < 0.8
    assert report["by_corpus"]["html-docs-near"]["ground_truth"]["edit_pairs"]["identical"]
    sys.modules.pop("dedup_bench", None)
