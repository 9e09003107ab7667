"""report.html: a snapshot's numbers and plots in one self-contained page.

The report is rendered from manifest.json alone, so `corpusmill report DIR`
can rewrite it for any snapshot. Plots are inline SVG (matplotlib), so the
page reads offline and can be attached to a ticket as one file. Each section
opens with the few numbers a reader looks for, in words and with units; every
other number of the manifest is one click away in a folded table, never a raw
JSON dump. ``jobs/screenshot_report.py`` renders the page in headless Chromium
to check it as a reader sees it.
"""

from __future__ import annotations

import html
import io
from typing import Any, Iterable, Mapping, Sequence

from corpusmill.schemas.manifest import REPORT_NAME

__all__ = ["REPORT_NAME", "render_report", "stage_rows"]

# Largest duplicate clusters listed with an excerpt.
TOP_CLUSTERS_SHOWN = 10
_BLUE, _GREY, _ORANGE = "#4c72b0", "#9a9a9a", "#dd8452"


# ---------------------------------------------------------------- formatting

def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return f"{n} bytes"


def _human_count(n: float) -> str:
    """12,345,678 -> 12.3M: for plot axes and bar labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.3g}" if isinstance(n, float) and not float(n).is_integer() else f"{int(n)}"


def _bar_label(n: float) -> str:
    """A bar's value: exact up to 100,000, then short (1.27M)."""
    if isinstance(n, float) and not n.is_integer():
        return f"{n:.3g}"
    return f"{int(n):,}" if abs(n) < 100_000 else _human_count(n)


def _power_of_two(k: int) -> str:
    """2^k as a reader counts tokens: 512, 1k, 64k, 1M."""
    n = 2 ** k
    for size, suffix in ((2 ** 30, "G"), (2 ** 20, "M"), (2 ** 10, "k")):
        if n >= size:
            return f"{n // size}{suffix}"
    return str(n)


def _percent(part: float | None, whole: float | None) -> str:
    """A share as a percentage; "-" where there is none (no documents: the stage's rates are null)."""
    return f"{100.0 * part / whole:.1f}%" if whole and part is not None else "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value)) if value else "-"
    return html.escape(str(value))


def _raw(text: str) -> "_Html":
    return _Html(text)


class _Html(str):
    """A cell already rendered as HTML (not escaped again)."""


def _table(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None, css: str = "",
           numeric: Sequence[int] = ()) -> str:
    """An HTML table; ``numeric`` columns are right-aligned."""

    def td(i: int, value: Any, tag: str = "td") -> str:
        klass = " class='num'" if i in numeric else ""
        text = value if isinstance(value, _Html) else _cell(value)
        return f"<{tag}{klass}>{text}</{tag}>"

    head = ("<thead><tr>" + "".join(td(i, h, "th") for i, h in enumerate(header)) + "</tr></thead>") if header else ""
    body = "".join("<tr>" + "".join(td(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    klass = f" class='{css}'" if css else ""
    return f"<table{klass}>{head}<tbody>{body}</tbody></table>"


def _facts(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labelled values (the label says the unit)."""
    return _table([(label, value) for label, value in rows if value is not None and value != {}], css="facts",
                  numeric=(1,))


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys; lists of scalars joined; lists of dicts as numbered keys."""
    if isinstance(value, Mapping):
        rows = []
        for key in sorted(value, key=str):
            rows += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        rows = []
        for i, item in enumerate(value):
            rows += _flatten(item, f"{prefix}[{i}]")
        return rows
    return [(prefix, value)]


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _all_values(section: Mapping[str, Any], what: str, skip: Sequence[str] = ()) -> str:
    """Every value of a manifest section, folded: for the reader who wants the exact figure."""
    rows = [(k, v) for k, v in _flatten({k: v for k, v in section.items() if k not in skip})]
    return _details(f"All {what} values ({len(rows)})", _table(rows, ["key", "value"], css="wide keyvalue"))


# ---------------------------------------------------------------- plots

def _bar_chart(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str,
               log_y: bool | None = None, horizontal: bool = False, colors: Sequence[str] | None = None,
               value_format=None) -> str:
    """A bar chart as inline SVG; each bar labelled with its value.

    ``log_y`` None chooses a log scale only when the values span more than two
    orders of magnitude (a single bar or a short range reads better linear).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    value_format = value_format or _bar_label
    positive = [v for v in values if v > 0]
    if log_y is None:
        log_y = len(positive) > 1 and max(positive) / min(positive) > 100
    height = max(2.4, 0.38 * len(values) + 0.9) if horizontal else 3.0
    # A few bars need no full-width plot.
    width = 7.5 if horizontal else min(7.5, 3.6 + 0.5 * len(values))
    # Fixed fonts and no timestamps in the SVG keep the report deterministic.
    with matplotlib.rc_context({"svg.hashsalt": "corpusmill", "svg.fonttype": "none", "font.size": 9}):
        figure, axis = plt.subplots(figsize=(width, height))
        positions = range(len(values))
        color = list(colors) if colors else _BLUE
        if horizontal:
            bars = axis.barh(positions, values, color=color)
            axis.set_yticks(list(positions), labels)
            axis.invert_yaxis()
            axis.set_xlabel(ylabel)
            if xlabel:
                axis.set_ylabel(xlabel)
            axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human_count(v)))
            if log_y:
                axis.set_xscale("log")
        else:
            bars = axis.bar(positions, values, color=color)
            rotate = len(labels) > 8 or max((len(str(label)) for label in labels), default=0) > 10
            axis.set_xticks(list(positions), labels, rotation=40 if rotate else 0, ha="right" if rotate else "center")
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            if log_y:
                axis.set_yscale("log")
            else:
                axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _human_count(v)))
        axis.bar_label(bars, labels=[value_format(v) for v in values], padding=2, fontsize=8)
        axis.margins(x=0.12 if horizontal else 0.03, y=0.15 if not horizontal else 0.05)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
        axis.set_title(title, fontsize=10)
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(figure)
    svg = buffer.getvalue()
    return f"<figure>{svg[svg.index('<svg'):]}</figure>"


def _sort_key(label: str) -> tuple:
    head = str(label).split("-")[0].split("..")[0].lstrip("<>=≥≤+")
    try:
        return (0, float(head), str(label))
    except ValueError:
        return (1, 0.0, str(label))


def _histogram_chart(histogram: Mapping[str, int], title: str, xlabel: str, log_y: bool | None = None,
                     label=str) -> str:
    items = sorted(histogram.items(), key=lambda kv: _sort_key(kv[0]))
    return _bar_chart([label(k) for k, _ in items], [v for _, v in items], title, xlabel, "count", log_y)


def _log2_histogram_chart(histogram: Mapping[str, int], title: str, unit: str) -> str:
    """Counts per power-of-two bin (key k: 2^k .. 2^(k+1)-1), empty bins between shown as empty."""
    bins = {int(k): int(v) for k, v in histogram.items() if str(k).lstrip("-").isdigit()}
    if not bins:
        return ""
    exponents = range(min(bins), max(bins) + 1)
    labels = [_power_of_two(k) for k in exponents]
    return _bar_chart(labels, [bins.get(k, 0) for k in exponents], title,
                      f"{unit} (bin start; each bin up to twice its start)", "documents")


# ---------------------------------------------------------------- sections

def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>"


def _headline(manifest: Mapping[str, Any]) -> str:
    counts = manifest["counts"]
    total = counts["input_records"]
    wall = (manifest.get("timings") or {}).get("wall_seconds")
    cards = [("input records", f"{total:,}", ""),
             ("kept", f"{counts['kept']:,}", _percent(counts["kept"], total)),
             ("duplicates", f"{counts['duplicates']:,}", _percent(counts["duplicates"], total)),
             ("rejected", f"{counts['rejected']:,}", _percent(counts["rejected"], total)),
             ("wall time", f"{wall:,.1f} s" if isinstance(wall, (int, float)) else "-", "")]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='label'>{html.escape(label)}</div><div class='value'>{value}</div>"
        f"<div class='share'>{html.escape(share)}</div></div>" for label, value, share in cards) + "</div>"


def _input(manifest: Mapping[str, Any]) -> str:
    source = manifest["input"]
    rows = [("files read", source["files"]),
            ("size", _raw(f"{_human_bytes(source['bytes'])} <span class='muted'>({source['bytes']:,} bytes)</span>")),
            ("records", source["records"]),
            ("blank lines skipped", source.get("blank_lines_skipped", 0)),
            ("rows lost in damaged row groups", source.get("rows_lost_in_damage", 0)),
            ("matched files not read (skipped)", source.get("skipped_files", 0)),
            ("fingerprint (sha256 of the input files)", _raw(f"<code>{html.escape(str(source['fingerprint']))}</code>"))]
    body = _facts(rows)
    files = source.get("file_list") or []
    if files:
        shown = f"first 200 of {len(files):,}" if len(files) > 200 else f"{len(files):,}"
        body += _details(f"Input files ({shown})", _table(
            [(f.get("path"), f.get("format"), f.get("compression"), f.get("records"),
              _human_bytes(f["bytes"]) if isinstance(f.get("bytes"), (int, float)) else None) for f in files[:200]],
            ["path", "format", "compression", "records", "size"], css="wide", numeric=(3, 4)))
    if source.get("skipped"):
        body += "<h3>Skipped files</h3>" + _table([(f["path"], f["reason"]) for f in source["skipped"]],
                                                  ["path", "reason"], css="wide")
    return _section("input", "Input", body)


def _accounting(manifest: Mapping[str, Any]) -> str:
    counts = manifest["counts"]
    total = counts["input_records"]
    rows = [("kept", counts["kept"], _percent(counts["kept"], total))]
    rows += [(f"duplicate ({kind})", n, _percent(n, total)) for kind, n in counts.get("duplicates_by_kind", {}).items()]
    rows += [(f"rejected: {reason}", n, _percent(n, total)) for reason, n in counts.get("rejected_by_reason", {}).items()]
    if not counts.get("rejected_by_reason"):
        rows.append(("rejected", counts["rejected"], _percent(counts["rejected"], total)))
    rows.append((_raw("<b>input records</b>"), total, "100%"))
    balanced = counts["balanced"]
    verdict = ("<p class='ok'>Every input record is accounted for: input = kept + duplicates + rejected.</p>"
               if balanced else "<p class='bad'><b>Not balanced:</b> input records differ from kept + duplicates "
                                "+ rejected; records were lost or counted twice.</p>")
    body = verdict + _table(rows, ["where each input record went", "records", "share"], numeric=(1, 2))
    reasons = counts.get("rejected_by_reason", {})
    if reasons:
        body += _bar_chart(list(reasons), list(reasons.values()), "Rejected records by reason", "", "records",
                           horizontal=True, colors=[_ORANGE] * len(reasons))
    return _section("accounting", "Accounting", body)


def _outputs(manifest: Mapping[str, Any]) -> str:
    rows = [(_raw(f"<code>{html.escape(name)}/</code>"), len(out["shards"]), out["rows"], _human_bytes(out["bytes"]))
            for name, out in manifest["outputs"].items()]
    return _section("outputs", "Outputs", _table(rows, ["folder", "shards", "rows", "size"], numeric=(1, 2, 3)))


def _dedup(section: Mapping[str, Any]) -> str:
    documents = section.get("documents") or {}
    by_kind = section.get("duplicates_by_kind") or {}
    lsh = section.get("lsh") or {}
    candidates = section.get("candidates") or {}
    clusters = section.get("clusters") or {}
    components = section.get("components") or {}
    rows = [("documents in", documents.get("input")),
            ("documents kept", documents.get("kept")),
            *((f"removed as {kind} duplicates", n) for kind, n in by_kind.items()),
            ("duplicate clusters", clusters.get("count")),
            ("kept from each cluster", section.get("keep")),
            ("near-duplicate threshold (Jaccard of shingles)", lsh.get("threshold")),
            ("MinHash: permutations x shingle length (words)",
             f"{lsh['num_perm']} x {lsh['ngram']}" if lsh.get("num_perm") else None),
            ("LSH: bands x rows", f"{lsh['bands']} x {lsh['rows']}" if lsh.get("bands") else None),
            ("expected recall of pairs at the threshold",
             _percent(lsh["expected_recall_at_threshold"], 1) if lsh.get("expected_recall_at_threshold") else None),
            ("candidate pairs verified", candidates.get("pairs_verified")),
            ("… passed / rejected by exact verification",
             f"{candidates['passed']:,} / {candidates['rejected']:,}" if "passed" in candidates else None),
            ("connected components", components.get("mode"))]
    body = _facts(rows) + _all_values(section, "dedup", skip=("top_clusters",))
    histogram = clusters.get("size_histogram")
    if histogram:
        body += "<h3>Duplicate clusters by size</h3>" + _histogram_chart(
            histogram, "Duplicate clusters by size", "documents per cluster")
    top = list(section.get("top_clusters") or [])[:TOP_CLUSTERS_SHOWN]
    if top:
        rows = []
        for cluster in top:
            kinds = ", ".join(f"{n} {kind}" for kind, n in (cluster.get("by_kind") or {}).items() if n)
            excerpt = cluster.get("excerpt", "")
            if not excerpt and cluster.get("representative_published"):
                excerpt = _raw("<span class='muted'>published in the previous snapshot (its text is not read "
                               "again by a refresh)</span>")
            rows.append((cluster.get("size"), _raw(f"<code>{html.escape(str(cluster.get('representative_id')))}"
                                                     f"</code><div class='muted'>removed: {html.escape(kinds)}</div>"),
                         excerpt))
        body += (f"<h3>Largest clusters</h3><p class='muted'>The {len(top)} largest of "
                 f"{clusters.get('count', len(top)):,}, with the kept document and the start of its text.</p>"
                 + _table(rows, ["size", "kept document", "excerpt"], css="wide clusters", numeric=(0,)))
    return _section("dedup", "Deduplication", body)


def _refresh(manifest: Mapping[str, Any]) -> str:
    """A refresh's duplicates against the previous snapshot, apart from those among the new documents.

    Rendered only where the manifest has a ``refresh`` section (top level, or
    under ``dedup``), written by the refresh job; ``previous`` and ``lineage``
    name the snapshot it extends and the chain of snapshots.
    """
    section = manifest.get("refresh")
    if not isinstance(section, Mapping):
        section = (manifest.get("dedup") or {}).get("refresh")
    if not isinstance(section, Mapping):
        return ""
    body = ("<p>New documents removed because they duplicate a document already published in the previous "
            "snapshot (that document stays their representative), apart from new documents that duplicate "
            "each other.</p>")
    previous = manifest.get("previous")
    if isinstance(previous, Mapping):
        body += _facts([(f"previous snapshot: {k}", v) for k, v in previous.items()
                        if not isinstance(v, (Mapping, list))])
    against, each_other = section.get("against_previous"), section.get("against_each_other")
    if isinstance(against, Mapping) and isinstance(each_other, Mapping):
        kinds = sorted(set(against) | set(each_other))
        rows = [(kind, against.get(kind, 0), each_other.get(kind, 0)) for kind in kinds]
        rows.append((_raw("<b>all</b>"), sum(against.values()), sum(each_other.values())))
        body += _table(rows, ["kind", "against the previous snapshot", "among the new documents"], numeric=(1, 2))
        body += _bar_chart(["against the previous snapshot", "among the new documents"],
                           [sum(against.values()), sum(each_other.values())], "Duplicates removed in this refresh",
                           "", "documents", horizontal=True, colors=[_ORANGE, _BLUE])
    else:
        body += _table(_flatten(section), ["key", "value"], css="wide keyvalue")
    lineage = manifest.get("lineage")
    if isinstance(lineage, list) and lineage:
        rows = []
        for entry in lineage:
            entry = entry if isinstance(entry, Mapping) else {"path": entry}
            digest = str(entry.get("manifest_sha256") or "")
            rows.append((_raw(f"<code>{html.escape(str(entry.get('path', '')))}</code>"), entry.get("created_at", ""),
                         entry.get("documents", ""), f"{len(entry.get('docs') or []):,}",
                         _raw(f"<code title='{html.escape(digest)}'>{html.escape(digest[:12])}…</code>") if digest else ""))
        body += ("<h3>Lineage</h3><p class='muted'>Every snapshot of the chain, oldest first; a trainer reads "
                 "each one's <code>docs/</code> shards (listed in this manifest's <code>lineage</code>) and this "
                 "snapshot's.</p>"
                 + _table(rows, ["snapshot", "created", "documents", "docs/ shards", "manifest sha256"],
                          css="wide", numeric=(2, 3)))
    return _section("refresh", "Refresh: duplicates against the previous snapshot", body)


def _order(section: Mapping[str, Any]) -> str:
    embedder, knn = section.get("embedder") or {}, section.get("knn") or {}
    recall = knn.get("recall") or {}
    quality = section.get("quality") or {}
    cosine = quality.get("adjacent_cosine") or {}
    jumps = quality.get("jumps") or {}
    rows = [("documents ordered", quality.get("documents") or knn.get("documents")),
            ("traversal", section.get("traversal")),
            ("embedder", f"{embedder.get('spec')} ({embedder.get('dim')} dimensions)" if embedder else None),
            ("kNN graph", f"{knn.get('mode')}, k = {knn.get('k')}, {knn.get('partitions')} partition(s)"
             if knn else None),
            ("kNN recall@k", recall.get("recall_at_k")),
            ("adjacent pairs that are kNN edges", _percent(quality["knn_edge_fraction"], 1)
             if isinstance(quality.get("knn_edge_fraction"), (int, float)) else None),
            ("jumps (adjacent pairs that are not kNN edges)",
             f"{jumps['count']:,} ({_percent(jumps.get('rate', 0), 1)})" if "count" in jumps else None),
            ("adjacent near duplicates (cosine above "
             f"{(quality.get('adjacent_near_duplicate') or {}).get('threshold')})",
             _percent(quality["adjacent_near_duplicate"]["rate"], 1)
             if (quality.get("adjacent_near_duplicate") or {}).get("rate") is not None else None),
            ("every document placed exactly once", (quality.get("coverage") or {}).get("each_exactly_once"))]
    body = _facts(rows)
    if cosine:
        names = [("order", "this order", _BLUE), ("natural", "input order (ids ascending)", _GREY),
                 ("random", "random order (expected)", _GREY), ("top1_bound", "nearest-neighbour bound", _ORANGE)]
        present = [(key, label, color) for key, label, color in names if isinstance(cosine.get(key), (int, float))]
        body += ("<h3>Ordering quality</h3><p>Mean cosine similarity of adjacent documents: in this order, in the "
                 "input's own order and in a random order, beside the mean similarity of each document to its "
                 "nearest neighbour, which no order can beat on average.</p>")
        body += _bar_chart([label for _, label, _ in present], [cosine[key] for key, _, _ in present],
                           "Adjacent cosine similarity (higher is better)", "", "mean cosine of adjacent documents",
                           log_y=False, horizontal=True, colors=[color for _, _, color in present],
                           value_format=lambda v: f"{v:.3f}".replace("-0.000", "0.000"))
        summary = [("this order, as a share of the nearest-neighbour bound",
                    _percent(cosine["of_top1"], 1) if isinstance(cosine.get("of_top1"), (int, float)) else None),
                   ("this order over the input order", f"{cosine['over_natural']:.2f}x"
                    if isinstance(cosine.get("over_natural"), (int, float)) else None)]
        body += _facts(summary)
    lengths = jumps.get("path_lengths") or {}
    if lengths.get("histogram"):
        body += ("<h3>Path lengths</h3><p>The order is a chain of kNN paths joined by jumps; longer paths keep "
                 f"related documents together. {lengths.get('count', 0):,} paths, mean "
                 f"{lengths.get('mean', 0):,.1f} documents, longest {lengths.get('max', 0):,}.</p>")
        body += _histogram_chart(lengths["histogram"], "Paths of kNN edges by length", "documents per path")
    contexts = section.get("contexts")
    if isinstance(contexts, Mapping):
        body += "<h3>Packed contexts</h3>" + _facts([
            ("contexts", contexts.get("contexts")), ("tokens", contexts.get("tokens")),
            ("documents (pieces)", f"{contexts.get('documents', 0):,} ({contexts.get('pieces', 0):,})"),
            ("padding tokens", contexts.get("padding_tokens")),
            ("attention across documents", _percent(contexts["cross_document_attention"], 1)
             if isinstance(contexts.get("cross_document_attention"), (int, float)) else None)])
    body += _all_values(section, "order")
    return _section("order", "In-context order", body)


def _decompose(section: Mapping[str, Any]) -> str:
    rows = [("tokenizer", f"{section.get('tokenizer')} ({section.get('encoder')})"),
            ("documents", section.get("documents")),
            ("tokens in", section.get("input_tokens")),
            ("tokens kept in buckets", f"{section['kept_tokens']:,} ({_percent(section['kept_tokens'], section['input_tokens'])})"
             if isinstance(section.get("kept_tokens"), int) and section.get("input_tokens") else None),
            ("documents too short for any bucket", section.get("documents_without_pieces")),
            ("average context length (tokens)", section.get("average_context_length")),
            ("attention cost against packing into the longest length",
             _percent(section["attention_cost_ratio"], 1)
             if isinstance(section.get("attention_cost_ratio"), (int, float)) else None)]
    body = _facts(rows)
    buckets = section.get("buckets")
    if isinstance(buckets, Mapping) and buckets:
        ordered = sorted(buckets.items(), key=lambda kv: int(kv[0]))
        total = sum(b.get("tokens", 0) for _, b in ordered)
        body += "<h3>Buckets</h3>" + _table(
            [(_raw(f"<code>{html.escape(str(b.get('dir', k)))}</code>"), b.get("sequence_length"), b.get("sequences"),
              b.get("tokens"), _percent(b.get("tokens", 0), total)) for k, b in ordered],
            ["bucket", "sequence length (tokens)", "sequences", "tokens", "share of tokens"], numeric=(1, 2, 3, 4))
        body += _bar_chart([str(b.get("dir", k)) for k, b in ordered], [b.get("tokens", 0) for _, b in ordered],
                           "Tokens per bucket", "bucket (sequence length)", "tokens")
    histogram = section.get("document_length_histogram")
    if isinstance(histogram, Mapping) and histogram:
        body += "<h3>Document lengths</h3>" + _log2_histogram_chart(histogram, "Documents by length", "tokens")
    curriculum = section.get("curriculum")
    if isinstance(curriculum, Mapping):
        body += (f"<h3>Curriculum</h3><p>{curriculum.get('steps', 0):,} steps of "
                 f"{curriculum.get('tokens_per_step', 0):,} tokens, odds <code>{html.escape(str(curriculum.get('odds')))}"
                 f"</code>, {curriculum.get('num_cycles', 1)} cycle(s), world size {curriculum.get('world_size', 1)}.</p>")
        steps = [b for b in curriculum.get("buckets") or [] if isinstance(b, Mapping)]
        if steps:
            body += _table([(b.get("sequence_length"), b.get("sequences"), b.get("sequences_per_step"), b.get("steps"),
                             b.get("unused_sequences")) for b in steps],
                           ["sequence length (tokens)", "sequences", "sequences per step", "steps", "unused sequences"],
                           numeric=(0, 1, 2, 3, 4))
    body += _all_values(section, "decomposition")
    return _section("decompose", "Dataset decomposition", body)


def _stage_section(name: str):
    """A section for a stage without its own renderer: its values as a table."""

    def render(section: Mapping[str, Any]) -> str:
        return _section(name, f"Stage: {name}", _table(_flatten(section), ["key", "value"], css="wide keyvalue"))

    return render


# Stages whose section has a renderer of its own; any other stage gets ``_stage_section``.
SECTIONS = {"dedup": _dedup, "order": _order, "decompose": _decompose}


def stage_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's summary table (manifest ``timings.stages``) with the rows written filled in and a total row.

    Returns:
        One dict per stage (stage, documents_in, documents_out, duplicates,
        rejected, seconds), then ``total`` (the whole run, wall seconds); empty
        for a manifest without the table.
    """
    rows = [dict(row) for row in (manifest.get("timings") or {}).get("stages", [])]
    if not rows:
        return []
    docs = (manifest.get("outputs") or {}).get("docs")
    if rows[-1].get("stage") == "write" and rows[-1].get("documents_out") is None and docs:
        rows[-1]["documents_out"] = docs["rows"]
    counts = manifest["counts"]
    return [*rows, {"stage": "total", "documents_in": counts["input_records"], "documents_out": counts["kept"],
                    "duplicates": counts["duplicates"], "rejected": counts["rejected"],
                    "seconds": (manifest.get("timings") or {}).get("wall_seconds")}]


def _timings(manifest: Mapping[str, Any]) -> str:
    timings = manifest.get("timings") or {}
    body = _facts([("wall time, plan to publish (s)", timings.get("wall_seconds")),
                   ("planning: listing inputs, choosing shards (s)", timings.get("plan_seconds")),
                   ("pipeline (s)", timings.get("pipeline_seconds"))])
    rows = stage_rows(manifest)
    if rows:
        stages = rows[:-1]
        pipeline = sum(r["seconds"] or 0 for r in stages)
        body += ("<h3>Per stage</h3><p>Wall-clock seconds from the previous stage's last documents to this "
                 "stage's last; <code>write</code> is the rest of the pipeline. Beam runs fused stages "
                 "interleaved, so the split is approximate.</p>")
        body += _table([(_raw(f"<b>{r['stage']}</b>") if r["stage"] == "total" else r["stage"], r["documents_in"],
                         r["documents_out"], r["duplicates"], r["rejected"],
                         None if r["seconds"] is None else round(r["seconds"], 1),
                         _percent(r["seconds"] or 0, pipeline) if r["stage"] != "total" else "")
                        for r in rows],
                       ["stage", "documents in", "documents out", "duplicates", "rejected", "seconds", "share"],
                       numeric=(1, 2, 3, 4, 5, 6))
        if any(r["seconds"] for r in stages):
            body += _bar_chart([r["stage"] for r in stages], [r["seconds"] or 0 for r in stages],
                               "Seconds per stage", "", "seconds (wall clock)", log_y=False, horizontal=True,
                               value_format=lambda v: f"{v:.1f} s")
    kernels = timings.get("stage_ms") or {}
    if kernels:
        grouped: dict[str, list[tuple[str, float]]] = {}
        for name, ms in sorted(kernels.items()):
            step = name.removeprefix("time_").removesuffix("_ms")
            stage, _, rest = step.partition("_")
            grouped.setdefault(stage, []).append((rest or stage, ms / 1000.0))
        order = ["read", *manifest.get("stages", ()), "write"]
        rows = [(stage, ", ".join(step for step, _ in steps), round(sum(s for _, s in steps), 2))
                for stage, steps in sorted(grouped.items(),
                                           key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))]
        body += ("<h3>Time inside the kernels</h3><p>Seconds spent in each stage's own code (summed over "
                 "workers and threads; excludes Beam's overhead).</p>"
                 + _table(rows, ["stage", "steps", "seconds"], css="kernels", numeric=(2,)))
        body += _details("Per step", _table([(name.removeprefix("time_").removesuffix("_ms"), round(ms / 1000.0, 3))
                                             for name, ms in sorted(kernels.items())], ["step", "seconds"],
                                            numeric=(1,)))
    return _section("timings", "Timings", body)


def _execution(manifest: Mapping[str, Any]) -> str:
    execution = manifest.get("execution") or {}
    partitioning = execution.get("partitioning") or {}
    version = manifest.get("code_version") or {}
    rows = [("runner", execution.get("runner")), ("read tasks", execution.get("read_tasks")),
            ("shards", partitioning.get("num_shards")),
            ("partitioning", f"{partitioning.get('mode')}: {partitioning.get('reason')}" if partitioning else None),
            *((f"version: {k}", v) for k, v in version.items())]
    return _section("execution", "Execution", _facts(rows))


def _configuration(manifest: Mapping[str, Any]) -> str:
    config = manifest.get("config") or {}
    body = ("<p>The job's full configuration; <code>corpusmill run --set KEY=VALUE</code> takes these keys.</p>"
            + _details(f"Configuration ({len(_flatten(config))} keys)",
                       _table(_flatten(config), ["key", "value"], css="wide keyvalue")))
    return _section("configuration", "Configuration", body)


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1000px;margin:2em auto;color:#222;
padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{margin:1.2em 0 .4em}p{max-width:60em}.muted{color:#666;font-size:.92em}.meta{color:#555}
table{border-collapse:collapse;margin:.5em 0 1em;max-width:100%}
td,th{border:1px solid #d6d6d6;padding:3px 8px;text-align:left;font-size:14px;vertical-align:top;
overflow-wrap:anywhere}th{background:#f3f4f6}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.facts td:first-child{color:#444;width:24em}table.facts td.num{text-align:left}
table.wide{table-layout:fixed;width:100%}table.keyvalue td:first-child{width:40%}
table.clusters th:first-child{width:4em}table.clusters th:nth-child(2){width:40%}
code{font-size:.92em;overflow-wrap:anywhere}table.kernels td:first-child{white-space:nowrap}
figure{margin:.5em 0 1.2em}figure svg{max-width:100%;height:auto}
details{margin:.3em 0 1em}summary{cursor:pointer;color:#2a5db0}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}.card{border:1px solid #ddd;border-radius:6px;
padding:.5em 1em;min-width:9em}.card .label{color:#555;font-size:.85em}.card .value{font-size:1.5em;
font-weight:600;font-variant-numeric:tabular-nums}.card .share{color:#666;font-size:.85em;min-height:1.2em}
nav{font-size:.95em;color:#555}nav a{margin-right:.8em}
.ok{color:#176c2c}.bad,.status-failed{color:#a11}.status-complete{color:#176c2c}
"""


def render_report(manifest: Mapping[str, Any]) -> str:
    """The report page for one manifest.

    Args:
        manifest: A parsed manifest.json.

    Returns:
        A self-contained HTML document.
    """
    status = str(manifest.get("status", "unknown"))
    job = html.escape(str(manifest.get("job", "")))
    version = manifest.get("code_version") or {}
    git = f" (git {str(version['git'])[:10]})" if version.get("git") else ""
    sections = [_input(manifest), _accounting(manifest), _outputs(manifest)]
    stage_sections = []
    # Manifests before the stage list named their sections dedup and decompose.
    for name in manifest.get("stages", ("dedup", "decompose")):
        if isinstance(manifest.get(name), Mapping):
            stage_sections.append(SECTIONS.get(name, _stage_section(name))(manifest[name]))
            if name == "dedup":
                # A refresh's duplicates against the previous snapshot, right after the dedup section.
                stage_sections.append(_refresh(manifest))
    sections += stage_sections
    sections += [_timings(manifest), _execution(manifest), _configuration(manifest)]
    sections = [s for s in sections if s]
    contents = " ".join(
        f"<a href='#{anchor}'>{html.escape(title)}</a>" for anchor, title in (
            (s.split("'", 2)[1], s.split("<h2>", 1)[1].split("</h2>", 1)[0]) for s in sections))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>corpusmill report: {job}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>corpusmill snapshot: {job}</h1>",
        f"<p class='meta'>Status: <b class='status-{html.escape(status)}'>{html.escape(status)}</b> · created "
        f"{html.escape(str(manifest.get('created_at', '')))} · corpusmill "
        f"{html.escape(str(version.get('corpusmill', '')))}{html.escape(git)}</p>",
    ]
    for warning in manifest.get("warnings", []):
        parts.append(f"<p class='bad'><b>Warning:</b> {html.escape(str(warning))}</p>")
    parts += [_headline(manifest), f"<nav>Contents: {contents}</nav>", *sections, "</body></html>\n"]
    return "".join(parts)
