"""report.html: a snapshot's numbers and plots in one self-contained page.

The report is rendered from manifest.json alone, so `corpusmill report DIR`
can rewrite it for any snapshot. Plots are inline SVG (matplotlib), so the
page reads offline and can be attached to a ticket as one file.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any, Iterable, Mapping

from corpusmill.schemas.manifest import REPORT_NAME

__all__ = ["REPORT_NAME", "render_report"]



def _svg_bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, ylabel: str,
                   log_y: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Fixed fonts and no timestamps in the SVG keep the report deterministic.
    with matplotlib.rc_context({"svg.hashsalt": "corpusmill", "svg.fonttype": "none"}):
        figure, axis = plt.subplots(figsize=(7, 2.8))
        axis.bar(range(len(values)), values, color="#4c72b0")
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels(labels, rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center",
                             fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(xlabel, fontsize=9)
        axis.set_ylabel(ylabel, fontsize=9)
        if log_y and any(v > 0 for v in values):
            axis.set_yscale("log")
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def _table(rows: Iterable[Iterable[Any]], header: Iterable[str], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    klass = f" class='{css}'" if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return html.escape(str(value))


def _histogram_chart(histogram: Mapping[str, int], title: str, xlabel: str, log_y: bool = True) -> str:
    items = sorted(histogram.items(), key=lambda kv: _sort_key(kv[0]))
    return _svg_bar_chart([str(k) for k, _ in items], [v for _, v in items], title, xlabel, "count", log_y)


def _sort_key(label: str) -> tuple:
    head = str(label).split("-")[0].split("..")[0].lstrip("<>=≥≤+")
    try:
        return (0, float(head), str(label))
    except ValueError:
        return (1, 0.0, str(label))


def _accounting(manifest: Mapping[str, Any]) -> str:
    counts = manifest["counts"]
    rows = [("input records", counts["input_records"]), ("kept", counts["kept"])]
    rows += [(f"duplicate: {kind}", n) for kind, n in counts.get("duplicates_by_kind", {}).items()]
    rows += [(f"rejected: {reason}", n) for reason, n in counts.get("rejected_by_reason", {}).items()]
    rows.append(("balanced (input = kept + duplicates + rejected)", counts["balanced"]))
    return "<h2>Accounting</h2>" + _table(rows, ["", "records"])


def _outputs(manifest: Mapping[str, Any]) -> str:
    rows = [(name, len(out["shards"]), out["rows"], out["bytes"]) for name, out in manifest["outputs"].items()]
    return "<h2>Outputs</h2>" + _table(rows, ["folder", "shards", "rows", "bytes"])


def _dedup(section: Mapping[str, Any]) -> str:
    parts = ["<h2>Deduplication</h2>"]
    lsh = section.get("lsh") or {}
    components = section.get("components") or {}
    candidates = section.get("candidates") or {}
    documents = section.get("documents") or {}
    rows = [(k, v) for k, v in sorted(section.items()) if not isinstance(v, (dict, list))]
    rows += [(f"documents: {k}", v) for k, v in sorted(documents.items())]
    rows += [(f"duplicates: {k}", v) for k, v in sorted((section.get("duplicates_by_kind") or {}).items())]
    rows += [(f"lsh: {k}", v) for k, v in sorted(lsh.items())]
    rows += [(f"candidates: {k}", v) for k, v in sorted(candidates.items())]
    rows += [(f"components: {k}", v) for k, v in sorted(components.items())]
    parts.append(_table(rows, ["", "value"]))
    histogram = (section.get("clusters") or {}).get("size_histogram")
    if histogram:
        parts.append(_histogram_chart(histogram, "Duplicate clusters by size", "cluster size (documents)"))
    top = section.get("top_clusters") or []
    if top:
        rows = [(c.get("cluster_id"), c.get("size"), c.get("representative_id"), c.get("excerpt", ""))
                for c in top]
        parts.append("<h3>Largest clusters</h3>"
                     + _table(rows, ["cluster", "size", "kept document", "excerpt"], css="wide"))
    return "".join(parts)


def _decompose(section: Mapping[str, Any]) -> str:
    parts = ["<h2>Dataset decomposition</h2>"]
    scalars = {k: v for k, v in section.items() if not isinstance(v, (dict, list))}
    parts.append(_table(sorted(scalars.items()), ["", "value"]))
    buckets = section.get("buckets")
    if isinstance(buckets, Mapping) and buckets:
        ordered = sorted(buckets.items(), key=lambda kv: int(kv[0]))
        rows = [(b.get("dir", k), b.get("sequences"), b.get("tokens")) for k, b in ordered]
        parts.append("<h3>Buckets</h3>" + _table(rows, ["bucket", "sequences", "tokens"]))
        parts.append(_svg_bar_chart([b.get("dir", k) for k, b in ordered], [b.get("tokens", 0) for _, b in ordered],
                                    "Tokens per bucket", "bucket", "tokens"))
    for key, title, xlabel in (("document_length_histogram", "Document lengths (log2 bins)", "log2(tokens)"),):
        histogram = section.get(key)
        if isinstance(histogram, Mapping) and histogram:
            parts.append(_histogram_chart(histogram, title, xlabel))
    for key in ("curriculum", "baseline"):
        if isinstance(section.get(key), Mapping):
            parts.append(f"<h3>{key}</h3><pre>{html.escape(json.dumps(section[key], indent=2, sort_keys=True))}</pre>")
    return "".join(parts)


def _order(section: Mapping[str, Any]) -> str:
    parts = ["<h2>In-context order</h2>"]
    embedder, knn = section.get("embedder") or {}, section.get("knn") or {}
    recall = knn.get("recall") or {}
    rows = [("traversal", section.get("traversal"))]
    rows += [(f"embedder: {k}", v) for k, v in sorted(embedder.items())]
    rows += [(f"knn: {k}", v) for k, v in sorted(knn.items()) if not isinstance(v, Mapping)]
    rows += [(f"recall: {k}", v) for k, v in sorted(recall.items())]
    parts.append(_table(rows, ["", "value"]))
    quality = section.get("quality") or {}
    cosine = quality.get("adjacent_cosine") or {}
    if cosine:
        labels = ["order", "natural", "random", "top1_bound"]
        present = [label for label in labels if isinstance(cosine.get(label), (int, float))]
        parts.append("<h3>Ordering quality</h3><p>Mean cosine of adjacent documents in the order, beside "
                     "the input's own order (ids ascending), a random order, and the mean similarity of "
                     "each document to its nearest neighbour (the upper bound).</p>")
        parts.append(_svg_bar_chart(present, [cosine[label] for label in present], "Adjacent cosine",
                                    "order", "mean cosine"))
        rows = [(k, v) for k, v in sorted(cosine.items())]
        rows += [("knn_edge_fraction", quality.get("knn_edge_fraction"))]
        rows += [(f"adjacent near duplicates: {k}", v)
                 for k, v in sorted((quality.get("adjacent_near_duplicate") or {}).items())]
        jumps = quality.get("jumps") or {}
        rows += [(f"jumps: {k}", v) for k, v in sorted(jumps.items()) if not isinstance(v, Mapping)]
        rows += [(f"coverage: {k}", v) for k, v in sorted((quality.get("coverage") or {}).items())]
        parts.append(_table(rows, ["", "value"]))
        lengths = (jumps.get("path_lengths") or {})
        if lengths.get("histogram"):
            parts.append(_histogram_chart(lengths["histogram"], "Paths of kNN edges by length", "documents per path"))
    contexts = section.get("contexts")
    if isinstance(contexts, Mapping):
        parts.append("<h3>Packed contexts</h3>" + _table(sorted(contexts.items()), ["", "value"]))
    semantic = section.get("semantic_dedup")
    if isinstance(semantic, Mapping):
        parts.append("<h3>Semantic dedup</h3>" + _table(
            sorted((k, v) for k, v in semantic.items() if not isinstance(v, (dict, list))), ["", "value"]))
    return "".join(parts)


def _stage_section(name: str):
    """A section for a stage without its own renderer: its numbers as a table, nested parts as JSON."""

    def render(section: Mapping[str, Any]) -> str:
        scalars = sorted((k, v) for k, v in section.items() if not isinstance(v, (dict, list)))
        nested = {k: v for k, v in section.items() if isinstance(v, (dict, list))}
        parts = [f"<h2>Stage: {html.escape(name)}</h2>", _table(scalars, ["", "value"])]
        if nested:
            parts.append(f"<pre>{html.escape(json.dumps(nested, indent=2, sort_keys=True))}</pre>")
        return "".join(parts)

    return render


# Stages whose section has a renderer of its own; any other stage gets ``_stage_section``.
SECTIONS = {"dedup": _dedup, "order": _order, "decompose": _decompose}


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px;vertical-align:top}td:nth-child(n+2){font-variant-numeric:tabular-nums}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table.wide{table-layout:fixed;width:100%}table.wide td{overflow-wrap:anywhere}
.status-complete{color:#176c2c}.status-failed{color:#a11}pre{background:#f6f6f6;padding:.6em;overflow:auto}
"""


def render_report(manifest: Mapping[str, Any]) -> str:
    """The report page for one manifest.

    Args:
        manifest: A parsed manifest.json.

    Returns:
        A self-contained HTML document.
    """
    status = manifest.get("status", "unknown")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>corpusmill report: {html.escape(str(manifest.get('job', '')))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>corpusmill snapshot: {html.escape(str(manifest.get('job', '')))}</h1>",
        f"<p>Status: <b class='status-{html.escape(status)}'>{html.escape(status)}</b> · created "
        f"{html.escape(str(manifest.get('created_at', '')))} · corpusmill "
        f"{html.escape(str(manifest.get('code_version', {}).get('corpusmill', '')))}</p>",
    ]
    for warning in manifest.get("warnings", []):
        parts.append(f"<p class='status-failed'><b>Warning:</b> {html.escape(str(warning))}</p>")
    source = manifest["input"]
    parts.append("<h2>Input</h2>" + _table(
        [("files", source["files"]), ("bytes", source["bytes"]), ("records", source["records"]),
         ("blank lines skipped", source.get("blank_lines_skipped", 0)),
         ("rows lost in damaged row groups", source.get("rows_lost_in_damage", 0)),
         ("matched files not read (skipped)", source.get("skipped_files", 0)),
         ("fingerprint (sha256)", source["fingerprint"])], ["", "value"]))
    if source.get("skipped"):
        parts.append("<h3>Skipped files</h3>" + _table([(f["path"], f["reason"]) for f in source["skipped"]],
                                                      ["path", "reason"], css="wide"))
    parts.append(_accounting(manifest))
    reasons = manifest["counts"].get("rejected_by_reason", {})
    if reasons:
        parts.append(_svg_bar_chart(list(reasons), list(reasons.values()), "Rejected records by reason",
                                    "reason", "records"))
    parts.append(_outputs(manifest))
    # Manifests before the stage list named their sections dedup and decompose.
    for name in manifest.get("stages", ("dedup", "decompose")):
        if isinstance(manifest.get(name), Mapping):
            parts.append(SECTIONS.get(name, _stage_section(name))(manifest[name]))
    partitioning = manifest.get("execution", {}).get("partitioning", {})
    parts.append("<h2>Execution</h2>" + _table(
        [(k, v) for k, v in sorted(manifest.get("execution", {}).items()) if not isinstance(v, dict)]
        + [(f"partitioning.{k}", v) for k, v in sorted(partitioning.items())], ["", "value"]))
    timings = manifest.get("timings", {})
    rows = [(k, v) for k, v in sorted(timings.items()) if not isinstance(v, dict)]
    rows += [(f"stage: {k}", v) for k, v in sorted(timings.get("stage_ms", {}).items())]
    parts.append("<h2>Timings</h2>" + _table(rows, ["", "value"]))
    parts.append("<h2>Configuration</h2><pre>"
                 + html.escape(json.dumps(manifest.get("config", {}), indent=2, sort_keys=True)) + "</pre>")
    parts.append("</body></html>\n")
    return "".join(parts)
