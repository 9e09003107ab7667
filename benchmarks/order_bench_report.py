"""The markdown page of ``order_bench.py``'s results (``results/order_bench.md``)."""

from __future__ import annotations

from typing import Any


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _scale(corpus: dict[str, Any], copies: int) -> dict[str, Any] | None:
    return next((row for row in corpus.get("scales", []) if row["copies"] == copies), None)


def linearity(corpus: dict[str, Any], key: str) -> float | None:
    """Seconds per document at the largest scale over that at 1x (1.0: linear)."""
    rows = corpus.get("scales", [])
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    return (last[key] / last["documents"]) / (first[key] / first["documents"])


def target_rows(name: str, corpus: dict[str, Any], targets: dict[str, float], partitions: int) -> list[str]:
    one = _scale(corpus, 1)
    if one is None or "quality" not in one:
        return []
    quality = one["quality"]
    lines = []
    for mode in ("paper", "improved"):
        single = quality[f"{mode}/single"]["yardstick"]
        parted = quality[f"{mode}/partitioned"]
        lines.append(f"| {name} | {mode}: adjacent cosine / top-1 (single partition) | >= {targets['of_top1']} "
                     f"| {_f(single['of_top1'])} | {_mark(single['of_top1'] >= targets['of_top1'])} |")
        lines.append(f"| {name} | {mode}: adjacent cosine / natural order | >= {targets['over_natural']} "
                     f"| {_f(single['over_natural'], 2)} "
                     f"| {_mark(single['over_natural'] >= targets['over_natural'])} |")
        lines.append(f"| {name} | {mode}: loss of {partitions} partitions vs one "
                     f"| <= {targets['partition_loss']:.0%} | {parted['loss_vs_single']:.1%} "
                     f"| {_mark(parted['loss_vs_single'] <= targets['partition_loss'])} |")
    recall = [row["recall_at_10_partitioned_vs_exact"] for row in corpus["scales"]]
    lines.append(f"| {name} | recall@10, partitioned vs exact (1x..{corpus['scales'][-1]['copies']}x) "
                 f"| >= {targets['recall']} | {', '.join(_f(r) for r in recall)} "
                 f"| {_mark(min(recall) >= targets['recall'])} |")
    first, last = corpus["scales"][0], corpus["scales"][-1]
    for mode in ("paper", "improved"):
        ratio = linearity(corpus, f"traverse_{mode}_seconds")
        if ratio is not None:
            per_doc = [1e6 * row[f"traverse_{mode}_seconds"] / row["documents"] for row in (first, last)]
            lines.append(f"| {name} | {mode} traversal: µs per document, {first['copies']}x -> {last['copies']}x "
                         f"| about constant | {per_doc[0]:.1f} -> {per_doc[1]:.1f} (x{ratio:.2f}) "
                         f"| {_mark(ratio <= 1.5)} |")
    embed = min(row["embed_docs_per_second"] for row in corpus["scales"])
    lines.append(f"| {name} | embedding docs/s per core (slowest scale, fitted projection) "
                 f"| >= {targets['embed_docs_per_second']:,} | {embed:,.0f} "
                 f"| {_mark(embed >= targets['embed_docs_per_second'])} |")
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Order stage kernels benchmark",
        "",
        f"`python benchmarks/order_bench.py --repeats {report['repeats']}` on {machine['date']} "
        f"(git {machine['git']}; {machine['nproc']} CPUs, {machine['cpu']}, shared with other work: load average "
        f"{machine['load_average_at_start'][0]:.1f} at start, {machine['load_average_at_end'][0]:.1f} at end; "
        f"Python {machine['python']}, numpy {machine['numpy']}, numba {machine['numba']}, faiss {machine['faiss']} "
        f"on {machine['faiss_threads']} thread(s), BLAS on 1, scikit-learn {machine['sklearn']}). k = {report['k']}, "
        f"nprobe = {report['nprobe']}" + (
            f" (documents far from every centroid, the farthest {report['far_quantile']:.0%} of the training "
            f"sample by nearest-centroid cosine, probe {report['far_extra_probes']} more)"
            if report.get("far_quantile") is not None else "")
        + f", {report['partitions']} forced partitions, traversal partitions refined by "
        f"{report.get('refine', 'neighbour votes')}, projection fitted on up to "
        f"{report['projection_sample']:,} documents. Times are medians of {report['repeats']} runs.",
        "",
        "Corpora after `corpusmill run` dedup (decompose off): "
        + "; ".join(f"**{name}** {corpus['documents']:,} documents" for name, corpus in report["corpora"].items())
        + ". 2x / 4x add copies with word-level edits (about 2% of words), never exact duplicates. The yardstick: "
        "scikit-learn `TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)` of the 1x documents; "
        "*of top-1* divides the mean adjacent cosine by the mean exact top-1 neighbour cosine, *over natural* by "
        "the mean adjacent cosine of documents sorted by id.",
        "",
        "## Targets (issue 11)",
        "",
        "| corpus | figure | target | measured | |",
        "|---|---|---|---|---|",
    ]
    for name, corpus in report["corpora"].items():
        lines += target_rows(name, corpus, report["targets"], report["partitions"])
    for name, corpus in report["corpora"].items():
        if corpus.get("variants"):
            lines += [
                "",
                f"## Embedder variants, {name} 1x",
                "",
                "Recall@10 of each embedding's exact kNN against exact kNN of the sparse hashed TF-IDF vectors "
                "(`LexicalEmbedder.tfidf`, min_df 2) and against the yardstick's exact kNN; *fit on half* counts "
                "recall on the held-out half only (what a large corpus, fitted on a sample, gets). *Partitioned "
                f"recall*: recall@10 of the forced-partition graph (nprobe {report['nprobe']}) against the same "
                "embedding's exact kNN. "
                "Quality: the yardstick's figures of the order of each embedding's exact kNN graph (k = 20), one "
                "partition. *setup s* (one run) includes the IDF and, for pca, the sketches of the sample and the "
                "fit. The "
                "first two rows are ceilings: Algorithm 1 (`paper`) on the exact sparse graphs themselves.",
                "",
                "| variant | bytes/doc | setup s | embed docs/s | exact kNN s | recall vs TF-IDF | recall vs yardstick "
                "| partitioned recall | paper of top-1 | paper over natural | improved of top-1 "
                "| improved over natural |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for row in corpus["variants"]:
                if "dim" not in row:  # a ceiling: Algorithm 1 on an exact sparse graph
                    lines.append(f"| {row['variant']} | | | | | | | | {_f(row['paper']['of_top1'])} "
                                 f"| {_f(row['paper']['over_natural'], 2)} | | |")
                    continue
                lines.append(
                    f"| {row['variant']} | {row['bytes_per_document']:,} | {row['setup_seconds']:.1f} "
                    f"| {row['embed_docs_per_second']:,.0f} | {row['exact_knn_seconds']:.2f} "
                    f"| {_f(row['recall_vs_exact_tfidf'])} | {_f(row['recall_vs_yardstick'])} "
                    f"| {_f(row['partitioned_recall_vs_exact'])} | {_f(row['paper']['of_top1'])} "
                    f"| {_f(row['paper']['over_natural'], 2)} "
                    f"| {_f(row['improved']['of_top1'])} | {_f(row['improved']['over_natural'], 2)} |")
    for name, corpus in report["corpora"].items():
        if not corpus.get("scales"):
            continue
        lines += [
            "",
            f"## Scales, {name} (default embedder: fitted projection)",
            "",
            "| copies | docs | IDF s | embedder fit s | embed docs/s | embed MB/s | exact kNN s | partitioned kNN s "
            "| recall@10 part. "
            "| refine s | top-1 edges cut | paper s | improved s | part. paper s | part. improved s "
            "| improved µs/doc |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in corpus["scales"]:
            lines.append(
                f"| {row['copies']} | {row['documents']:,} | {row['idf_seconds']:.2f} "
                f"| {row['embedder_fit_seconds']:.1f} | {row['embed_docs_per_second']:,.0f} "
                f"| {row['embed_mb_per_second']:.1f} "
                f"| {row['exact_knn_seconds']:.2f} | {row['partitioned_knn_seconds']:.2f} "
                f"| {_f(row['recall_at_10_partitioned_vs_exact'])} | {row['refine_seconds']:.3f} "
                f"| {row['top1_edges_cut']:.1%} | {row['traverse_paper_seconds']:.3f} "
                f"| {row['traverse_improved_seconds']:.2f} | {row['partitioned_traverse_paper_seconds']:.3f} "
                f"| {row['partitioned_traverse_improved_seconds']:.2f} "
                f"| {1e6 * row['traverse_improved_seconds'] / row['documents']:.0f} |")
        one = _scale(corpus, 1)
        if one and one.get("nprobe_sweep"):
            lines += [
                "",
                f"Partitioned graph against nprobe at 1x ({name}, {report['partitions']} partitions): recall@10 "
                "against exact search, build time, and the `improved` order's loss of yardstick adjacent cosine "
                "against one partition"
                + (f" (far documents probe {report['far_extra_probes']} more at every nprobe)."
                   if report.get("far_quantile") is not None else "."),
                "",
                "| nprobe | recall@10 | partitioned kNN s | improved loss vs one partition |",
                "|---:|---:|---:|---:|",
            ]
            for sweep in one["nprobe_sweep"]:
                lines.append(f"| {sweep['nprobe']} | {_f(sweep['recall_at_10'])} "
                             f"| {sweep['partitioned_knn_seconds']:.2f} | {sweep['improved_loss_vs_single']:.1%} |")
        if one and "quality" in one:
            lines += [
                "",
                f"Quality at 1x ({name}): the yardstick's figures, then the same in the embedding's own space "
                "(`quality.ordering_quality`, top-1 from the graph the order followed).",
                "",
                "| order | yardstick adjacent | of top-1 | over natural | loss vs one partition "
                "| embedding adjacent | of top-1 | over natural | kNN-edge share | jumps per pair |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for key, figures in one["quality"].items():
                yard, own = figures["yardstick"], figures["embedding"]
                loss = figures.get("loss_vs_single")
                lines.append(
                    f"| {key} | {_f(yard['adjacent_cosine'])} | {_f(yard['of_top1'])} | {_f(yard['over_natural'], 2)} "
                    f"| {'–' if loss is None else f'{loss:.1%}'} | {_f(own['adjacent_cosine']['order'])} "
                    f"| {_f(own['adjacent_cosine']['of_top1'])} | {_f(own['adjacent_cosine']['over_natural'], 2)} "
                    f"| {_f(own['knn_edge_fraction'])} | {_f(own['jumps']['rate'])} |")
    kernels = {name: corpus["kernels_in_one_process"] for name, corpus in report["corpora"].items()
               if "kernels_in_one_process" in corpus}
    if kernels:
        lines += [
            "",
            "## The stage's kernels in one plain Python process",
            "",
            "`order_bench.kernels_in_one_process`: the embedder fitted as the stage fits it "
            "(`lexical_fit.fit_lexical_embedder`: document frequencies, IDF, sketches of the key-chosen sample, "
            "projection), embedding, kNN graph, (refine,) traversal `improved`, positions. Seconds, medians. "
            "`order_stage_bench.py` compares the Beam stage with the single-partition chain.",
            "",
            "| corpus | docs | layout | total s | fit | embed | kNN | traverse | same order every run |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, result in kernels.items():
            for layout in ("single", "partitioned"):
                row, phases = result[layout], result[layout]["phases"]
                lines.append(
                    f"| {name} x{result['copies']} | {result['documents']:,} | {layout} | {row['seconds']:.1f} "
                    f"| {phases['fit']:.1f} | {phases['embed']:.1f} "
                    f"| {phases['knn']:.1f} | {phases['traverse']:.1f} | {row['deterministic']} |")
    return "\n".join(lines) + "\n"
