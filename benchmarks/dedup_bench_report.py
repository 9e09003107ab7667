"""Dedup benchmark: the markdown report and its notes."""

from __future__ import annotations

from typing import Any

from dedup_bench_params import (JACCARD_BANDS, LINUX_DOC_4X, NEAR_COPIES, NGRAM, NUM_PERM, RENSA_BANDS, SCHEME, SEED,
                                THRESHOLD)
from dedup_bench_truth import band_label


NOTES = [
    "Signature throughput is the in-process signature phase only (Python shingling for the references, the "
    "kernel's own tokeniser for the kernel); MB/s counts the raw UTF-8 text bytes of the corpus, shingles/s the "
    "word 5-grams with repeats (max(1, words - 4) per non-empty normalised text).",
    "The kernel uses numba's threads (all cores); datasketch and rensa's per-document paths are single threaded. "
    "The kernel's one-thread row is the like-for-like comparison.",
    "datasketch gets its best per-document path: permutations drawn once and passed to every MinHash (a fresh "
    "MinHash per document redraws them, roughly doubling its time on small documents). It keeps its default "
    "SHA-1 shingle hash and rensa its own hash, so their signatures differ from the kernel's but have the same "
    "statistics; all three hash the same shingles.",
    f"rensa's RMinHashLSH needs num_perm divisible by the band count, so it runs {RENSA_BANDS} bands x "
    f"{NUM_PERM // RENSA_BANDS} rows (S-curve midpoint ~0.88) instead of datasketch's 9 x 13 (~0.84).",
    "Banding (issue 12.1): the Beam job with exact verification (beam-exact, the default) uses the recall rule, "
    "16 bands x 6 rows (expected recall 0.992 at J = 0.80, candidate midpoint ~0.59); beam-none and "
    "beam-signature (dedup.banding auto) and beam-exact-datasketch-bands use datasketch's 9 x 13 (0.40 at "
    "J = 0.80), as MinHashLSH does.",
    "datasketch-exact is the datasketch contender whose candidate pairs are checked by exact Jaccard of the two "
    "documents' sets of shingle strings (built for the documents of some candidate pair only) before union-find.",
    f"{NEAR_COPIES}: the Debian python3.11-doc and postgresql-doc-15 HTML pages as text (one document per page, "
    "no two with the same normalised text), plus a near copy of every page of >= 300 words and a second one of "
    "every third: word-level edits (replace, delete, insert, swap) until the exact Jaccard to the original "
    "reaches a target drawn from [0.80, 0.85) for half of the copies and [0.75, 0.80) or [0.85, 0.90] for a "
    "quarter each (benchmarks/dedup_bench_corpora.py).",
    "Whole-run wall time of the Beam job includes writing the kept documents, duplicates/, the manifest and "
    "report; stages after dedup (if the config has any with an `enabled` key) are switched off with --set. "
    "The datasketch / rensa paths end at cluster labels in memory.",
    "Peak RSS is /usr/bin/time -v's maximum resident set of the largest single process; the Beam job runs "
    "in-process on the FnApiRunner, so it is the whole job's. Tree RSS sums the process tree sampled every 50 ms.",
    "Per-worker peaks are each SDK worker process's VmHWM from /proc, sampled every 50 ms until it exits. The "
    "FnApiRunner sends a worker its whole share of a stage as one bundle (1 / workers of the stage's input), so "
    "the worker runs scale with the corpus: 2 workers at 1x, 8 at 4x, 16 MiB shards (4 and 15 partitions).",
    "Ground truth is on 32-bit shingle hashes (the sets the kernel and the job's exact verification see); the "
    "string check bounds the effect of hash collisions.",
]


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report as markdown."""
    lines = _header(report)
    for name, section in report["by_corpus"].items():
        lines += _corpus_section(name, section)
    lines += _failures(report) + _code_changed(report) + _targets_and_notes(report)
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> list[str]:
    """Command, date, machine, parameters and the Beam command lines."""
    m = report["machine"]
    return [
        "# dedup_bench: MinHash kernel, Beam dedup, datasketch, rensa vs an exact ground truth", "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; total bench wall {report['total_seconds'] / 60:.1f} min",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['platform']}; Python {m['python']}, numba {m['numba']} "
        f"({m['numba_threads']} threads), apache-beam {m['apache_beam']}, pyarrow {m['pyarrow']}, "
        f"datasketch {m['datasketch']}, rensa {m['rensa']}; corpusmill git {m['git']}"
        + (" with uncommitted changes in the working tree" if m["working_tree_modified"] else ""),
        f"- Load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. The machine is "
        "shared with other jobs and noisy: treat differences under ~15% as noise.",
        f"- Parameters: {NGRAM}-word shingles, {NUM_PERM} permutations, seed {SEED}, scheme {SCHEME}, "
        f"threshold {THRESHOLD}; default NormalizeConfig (NFKC, lowercase, collapse whitespace) before shingling "
        "for every contender.",
        f"- Repeats: {report['repeats']} (interleaved; every run a fresh subprocess); medians. "
        + "; ".join(f"{c['name']} capped at {c['max_runs']} run(s)" for c in report["contenders"] if c["max_runs"]),
        "- Beam runs (CORPUS = benchmarks/.data/<corpus>.parquet):",
        *[f"  - {name}: `{command}`" for name, command in report["beam_commands"].items()],
        "",
    ]


def _corpus_section(name: str, section: dict[str, Any]) -> list[str]:
    """Everything measured on one corpus."""
    corpus = section["corpus"]
    lines = [f"## Corpus {name}: {corpus['documents']:,} documents, {corpus['text_bytes'] / 1e6:.1f} MB "
             f"text, {corpus['shingles']:,} shingles", ""]
    if name == LINUX_DOC_4X:
        lines += ["The 4x corpus repeats every text under fresh ids, so every document has at least 3 exact "
                  "duplicates (4 copies of each text); nearly every document is a duplicate document.", ""]
    if name == NEAR_COPIES:
        lines += ["Documentation pages and near copies of them made by word-level edits, no exact copies: most "
                  "true pairs have Jaccard just above the threshold (issue 12.1; see the notes).", ""]
    lines += _signatures(section) + _whole_runs(section) + _per_process(section) + _quality(section)
    lines.append("")
    return lines


def _signatures(section: dict[str, Any]) -> list[str]:
    """The signature-throughput table (empty without signature rows)."""
    if not section["signatures"]:
        return []
    lines = ["### Signatures: text in, signatures out, shingling included (in-process phase, median)", "",
             "| contender | seconds | MB/s | M shingles/s | kernel (all threads) speed-up |",
             "|---|---:|---:|---:|---:|"]
    base = section["signatures"].get("kernel (all threads)", {}).get("seconds")
    for label, row in section["signatures"].items():
        speedup = f"{row['seconds'] / base:.1f}x" if base else "-"
        lines.append(f"| {label} | {row['seconds']:.2f} | {row['mb_per_second']:.1f} "
                     f"| {row['mshingles_per_second']:.2f} | {speedup} |")
    lines.append("")
    return lines


def _whole_runs(section: dict[str, Any]) -> list[str]:
    """The whole-run table: subprocess wall, throughput, memory and phases per contender."""
    lines = ["### Whole runs (subprocess wall, includes interpreter start, read and normalisation)", "",
             "| contender | runs | wall s (median) | MB/s | M shingles/s | peak RSS MB | tree RSS MB | "
             "phases s (median) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in section["contenders"].items():
        phases = ", ".join(f"{k} {v:.2f}" for k, v in row["phases"].items())
        if row.get("inner_seconds") is not None:
            phases = f"in-process {row['inner_seconds']:.2f}" + (f"; {phases}" if phases else "")
        lines.append(f"| {name} | {row['runs']} | {row['wall_seconds']:.2f} | {row['mb_per_second']:.2f} "
                     f"| {row['mshingles_per_second']:.3f} | {row['peak_rss_mb']:,.0f} "
                     f"| {row['tree_rss_mb'] or 0:,.0f} | {phases} |")
    lines.append("")
    return lines


def _per_process(section: dict[str, Any]) -> list[str]:
    """The per-process peak RSS table of the multi-worker Beam runs (empty without any)."""
    multi = {name: row for name, row in section["contenders"].items() if "worker_peak_rss_mb" in row}
    if not multi:
        return []
    lines = ["Per process (FnApiRunner multi_processing: SDK worker processes, the shuffle in the runner "
             "process):", "", "| contender | SDK workers | largest worker peak RSS MB (median; all runs) "
             "| runner process peak RSS MB |", "|---|---:|---:|---:|"]
    for name, row in multi.items():
        runs = ", ".join(f"{v:,.0f}" for v in row["worker_peak_rss_mb_all"])
        lines.append(f"| {name} | {row['workers']} | {row['worker_peak_rss_mb']:,.0f} ({runs}) "
                     f"| {row['runner_peak_rss_mb'] or 0:,.0f} |")
    lines.append("")
    return lines


def _quality(section: dict[str, Any]) -> list[str]:
    """Ground-truth facts, the quality table, definitions and examples (empty without a ground truth)."""
    truth = section.get("ground_truth")
    if not truth:
        return []
    lines = _ground_truth_paragraph(truth) + [
        "| method | clusters | largest | docs in clusters | removed | pair P | pair R | pair F1 "
        "| closure P | closure R | closure F1 | doc P | doc R | doc F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, q in section["quality"].items():
        p, c, d = q["pair"], q["pair_vs_closure"], q["document"]
        lines.append(f"| {name} | {q['clusters']:,} | {q['largest_cluster']} | {q['documents_in_clusters']:,} "
                     f"| {q['removed']:,} | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} "
                     f"| {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} "
                     f"| {d['precision']:.4f} | {d['recall']:.4f} | {d['f1']:.4f} |")
    labels = [band_label(lo, hi) for lo, hi in JACCARD_BANDS]
    lines += ["", "Pair recall by exact Jaccard of the ground-truth pair (pairs in the band):", "",
              "| method | " + " | ".join(f"J {label}" for label in labels) + " |",
              "|---|" + "---:|" * len(labels)]
    first = next(iter(section["quality"].values()))["pair_recall_by_jaccard"]
    lines.append("| (pairs) | " + " | ".join(f"{first[label]['pairs']:,}" if first[label] else "0"
                                              for label in labels) + " |")
    for name, q in section["quality"].items():
        cells = [f"{q['pair_recall_by_jaccard'][label]['recall']:.4f}" if q["pair_recall_by_jaccard"][label]
                 else "-" for label in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Definitions: a predicted cluster is a connected component of the method's edges (Beam: "
        "`duplicates/` rows grouped by cluster_id, plus the representative; datasketch / rensa: union-find "
        "over all LSH candidates, unverified; datasketch-exact: over the candidates that pass the exact check). "
        "*Pair*: predicted pairs are all pairs inside a predicted "
        "cluster, actual pairs are the ground-truth pairs. *Closure*: actual pairs are all pairs inside a "
        "connected component of the ground-truth graph, so chaining A~B~C is not an error. *Doc*: predicted "
        "are documents in a predicted cluster of size >= 2 (removed or representative), actual are documents "
        "in at least one ground-truth pair. *Removed* = documents minus clusters (what the method drops).", ""]
    for name, q in section["quality"].items():
        if q["missed_pair_examples"] or q["false_pair_examples"]:
            lines.append(f"- {name}: missed pairs "
                         f"{_examples(q['missed_pair_examples'])}; false pairs "
                         f"{_examples(q['false_pair_examples'])}")
    lines.append("")
    return lines


def _ground_truth_paragraph(truth: dict[str, Any]) -> list[str]:
    """The ground truth's size, join time, expected LSH recall and the brute-force / string checks."""
    check = truth["check"]
    near_label = band_label(*JACCARD_BANDS[0])
    near_expected = truth.get(f"expected_lsh_pair_recall_{near_label}", {})
    edits = truth.get("edit_pairs")
    edit_sentence = [] if not edits else [
        f"Edit pairs: {edits['copies']:,} near copies (builder's exact Jaccard to the original: "
        + ", ".join(f"{k}: {v:,}" for k, v in edits["by_jaccard"].items()) + f"); {edits['above_threshold']:,} at "
        f">= {THRESHOLD}, of which {edits['above_threshold_in_join']:,} are join pairs; "
        f"{edits['below_threshold_in_join']} below it are; the join has {edits['join_pairs_not_edit_pairs']:,} "
        f"pair(s) that no edit made ({'consistent' if edits['identical'] else 'INCONSISTENT'}).", ""]
    return [
        "### Quality against the exact ground truth", "",
        f"Ground truth: {truth['pairs']:,} pairs with Jaccard >= {THRESHOLD} over {truth['documents']:,} "
        f"documents in {truth['components']:,} components (largest {truth['largest_component']}); "
        f"a minimal removal would drop {truth['minimal_removal']:,} documents. Prefix-filter join "
        f"{truth['join_seconds']:.1f} s. Pairs by Jaccard: "
        + ", ".join(f"{k}: {v:,}" for k, v in truth["pairs_by_jaccard"].items())
        + ". Pair recall expected from LSH banding alone (mean over the ground-truth pairs of "
        "1 - (1 - J^rows)^bands): "
        + ", ".join(f"{k} {v:.4f}" for k, v in truth["expected_lsh_pair_recall"].items())
        + (f"; over the pairs at J in {near_label}: "
           + ", ".join(f"{k} {v:.4f}" for k, v in near_expected.items() if v is not None)
           if any(v is not None for v in near_expected.values()) else "")
        + f". Brute-force check on {check['sample_size']} random documents against "
        f"all: {check['brute_force_pairs']} pairs vs {check['join_pairs_touching_sample']} from the join, "
        f"{'identical' if check['identical'] else 'DIFFERENT'}. 32-bit shingle hashes vs shingle strings on "
        f"the sample's {check['near_threshold_pairs_string_checked']} pairs with Jaccard within 0.1 of the "
        f"threshold: {check['hash_vs_string_disagreements']} decision(s) differ.", "", *edit_sentence]


def _failures(report: dict[str, Any]) -> list[str]:
    """The failed runs (empty without any)."""
    if not report["failures"]:
        return []
    lines = ["## Failed runs", ""]
    for failure in report["failures"]:
        tail = " ".join(failure["error"].strip().splitlines()[-1:])
        lines.append(f"- {failure['contender']} on {failure['corpus']}, repeat {failure['repeat'] + 1}: `{tail}`")
    lines.append("")
    return lines


def _code_changed(report: dict[str, Any]) -> list[str]:
    """A warning if the measured code changed between the start and the end of the run."""
    start, end = report["machine"], report["code_version_at_end"]
    if (start["git"], start["working_tree_diff_sha256"]) != (end["git"], end["working_tree_diff_sha256"]):
        return [f"**The measured code changed during the run** (git {start['git']} -> {end['git']}, "
                "or uncommitted changes): runs before and after the change are mixed in the medians.", ""]
    return []


def _targets_and_notes(report: dict[str, Any]) -> list[str]:
    """The targets table and the notes."""
    lines = ["## Targets", "", "| target | value | pass |", "|---|---|---|"]
    for t in report["targets"]:
        verdict = "—" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        lines.append(f"| {t['target']} | {t['value']} | {verdict} |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return lines

def _examples(items: list[dict]) -> str:
    if not items:
        return "none"
    return "; ".join(f"`{a}` ~ `{b}` J={x['jaccard']}" for x in items for a, b in [x["ids"]])
