"""The transformer embedder end to end against ``SentenceTransformer.encode``, the model alone and the tokenizer alone.

Issue 11 item 9: all-MiniLM-L6-v2, 256 tokens, float16 on a GPU, on linux-doc
texts (the 10,040 documents of linux-doc 6.1 + 6.12, shuffled with seed 0 and
cycled to ``--docs``; nothing caches a text, so repeats cost what new texts do).
``measure`` times, in one process:

* ``encode``: ``SentenceTransformer.encode(normalize_embeddings=True)`` (model in
  float16 on cuda), the baseline;
* ``model_only``: the same model's forward alone over batches tokenized
  beforehand and already on the device, synchronised at the end: encode's
  batches (texts sorted by length, ``preprocess``), and the embedder's own
  (prefix cut, token-length sorted, padded to a multiple of 8 on cuda);
* ``tokenize``: ``preprocess`` alone on whole texts (one thread), the embedder's
  ``BatchTokenizer`` with 1..N threads, and the Rust encoder alone on cut texts;
* ``embedder``: ``SentenceTransformerEmbedder.embed`` end to end, the class the
  order stage uses, per batch size; its producer alone (host side, no model);
  and (``threads``) tokenizing on threads, or with other worker counts;
* ``interleaved``: the ratio to the model alone taken round by round (``--rounds``):
  the model alone and the embedder with cores - 1 and with cores tokenizer
  processes, built and warmed up once, then run once each per round in a
  rotating order, so a slow stretch of a shared host falls on all three; the
  ratio is the median of the rounds' ratios;
* the embedder's and encode's vectors for the first ``--subset`` distinct texts,
  saved for ``compare``.

Every figure is the median of ``--repeats`` timed runs after a warm-up; a run
starts no measurement after ``--budget-s`` and records what it skipped.
``compare`` embeds that subset with the embedder on the CPU (float32; the
reference) and reports max |difference| and min cosine of the GPU vectors
against it; ``report`` merges the GPU and CPU measurements and the comparison
into ``results/embed_bench.{json,md}``. ``prepare`` makes what travels to the
device machine: the model folder with float16 safetensors (45 MB) and the texts
as xz-compressed JSON (7 MB), in folders ignored through ``.git/info/exclude``.

Usage (recorded in results/embed_bench.md):
    python benchmarks/embed_bench.py prepare --model MINILM_DIR --parquet linux-doc-x1.parquet
    # on the GPU machine, carrying .device-model and .device-data:
    python benchmarks/embed_bench.py measure --model .device-model/minilm-fp16 \
        --texts .device-data/linux-doc-texts.json.xz --device cuda --docs 60000 --baseline-docs 10000 \
        --sections embedder,tokenize,encode,model_only,threads --save-subset $OUT --out $OUT/embed_bench_gpu.json
    # here:
    python benchmarks/embed_bench.py measure --model MINILM_DIR --texts ... --device cpu --docs 160 ...
    python benchmarks/embed_bench.py compare --model MINILM_DIR --texts ... --gpu-dir GPU_OUT --out ACC.json
    python benchmarks/embed_bench.py report --gpu GPU.json --cpu CPU.json --accuracy ACC.json

``--texts`` is a Parquet file with a ``text`` column or an xz-compressed JSON
list of strings (what travels to the device machine).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import lzma
import os
import platform
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "embed_bench.json"
MAX_SEQ_LENGTH = 256
TARGET_DOCS_PER_S = 20_000
TARGET_RATIO = 0.6
ISSUE_MODEL_ONLY_DOCS_PER_S = 33_000  # the issue's model-alone figure, measured before this work
SUBSET_FILES = {"embedder": "embedder_subset.npy", "encode": "encode_subset.npy"}


def transformer_module():
    """corpusmill's transformer module, from this checkout where corpusmill is not installed (device machine).

    There ``corpusmill.transforms`` is a link to this checkout's ``transforms/``
    in a temporary folder put on ``sys.path``, which the embedder's spawned
    tokenizer workers inherit, so they import the same modules by name.
    """
    try:
        from corpusmill.transforms.order import transformer
        return transformer
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("corpusmill"):
            raise
    import tempfile

    for name in [name for name in sys.modules if name.split(".")[0] == "corpusmill"]:
        del sys.modules[name]
    root = Path(tempfile.mkdtemp(prefix="corpusmill-path-"))
    (root / "corpusmill").mkdir()
    (root / "corpusmill" / "transforms").symlink_to(REPO_ROOT / "transforms", target_is_directory=True)
    sys.path.insert(0, str(root))
    from corpusmill.transforms.order import transformer
    return transformer


def load_texts(path: str) -> list[str]:
    """Distinct texts, shuffled with seed 0."""
    if path.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as handle:
            texts = json.load(handle)
    else:
        import pyarrow.parquet as pq
        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order]


def cycled(texts: list[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def median_rate(run: Callable[[], Any], docs: int, repeats: int, sync: Callable[[], None]) -> dict:
    """docs/s of ``run``: the median of ``repeats`` timed runs (after one untimed warm-up)."""
    run()
    sync()
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"docs": docs, "seconds": [round(s, 4) for s in seconds], "median_s": round(median, 4),
            "docs_per_s": round(docs / median, 1)}


def environment(device: str) -> dict:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "python": platform.python_version(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "cpu": cpu_model,
            "cores": transformer_module().available_cores(), "device": device,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"), "command": " ".join(sys.argv)}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class Deadline:
    """Skips measurements once a time budget is spent, so a run ends inside its limit with what it has."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.monotonic() < self.end:
            return True
        self.skipped.append(what)
        print(f"skipped (time budget): {what}", flush=True)
        return False


# --- measure ------------------------------------------------------------------------------


class Measurement:
    """One ``measure`` run: the texts, the baseline model, the results so far (saved after every figure)."""

    def __init__(self, args: argparse.Namespace):
        import torch
        from sentence_transformers import SentenceTransformer

        self.args = args
        self.torch = torch
        self.transformer = transformer_module()
        self.cuda = args.device.startswith("cuda")
        self.sync = (lambda: torch.cuda.synchronize(args.device)) if self.cuda else (lambda: None)
        self.deadline = Deadline(args.budget_s)
        self.distinct = load_texts(args.texts)
        self.texts = cycled(self.distinct, args.docs)
        self.baseline_texts = self.texts[: args.baseline_docs]
        self.prefix_chars = 5 * MAX_SEQ_LENGTH  # the embedder's default prefix_chars_per_token
        self.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        self.baseline_sizes = [int(b) for b in args.baseline_batch_sizes.split(",")]
        cores = self.transformer.available_cores()
        self.thread_counts = sorted({1, 4, 8, cores} & set(range(1, cores + 1)))
        self.results: dict[str, Any] = {
            "environment": environment(args.device), "docs": len(self.texts), "distinct_texts": len(self.distinct),
            "baseline_docs": len(self.baseline_texts), "max_seq_length": MAX_SEQ_LENGTH, "repeats": args.repeats,
            "encode": {}, "model_only": {"encode_batches": {}, "embedder_batches": {}}, "tokenize": {},
            "embedder": {}, "host_only": {}, "embedder_threads": {}}
        self.model = SentenceTransformer(args.model, device=args.device)
        self.model.max_seq_length = MAX_SEQ_LENGTH
        if self.cuda:
            self.model.half()
        self.model.eval()
        self.preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    def run(self) -> dict:
        """Most telling figures first, so that a spent time budget skips the least."""
        steps = {"encode": self.encode, "model_only": self.model_only_encode_batches, "embedder": self.embedder,
                 "tokenize": self.tokenize, "threads": self.embedder_threads, "interleaved": self.interleaved}
        for name in self.args.sections.split(","):
            steps[name]()
        self.save()
        return self.results

    def save(self) -> None:
        self.results["skipped"] = self.deadline.skipped
        Path(self.args.out).write_text(json.dumps(self.results, indent=1))

    def record(self, section: dict, key: str, label: str, run: Callable[[], Any], docs: int,
               sync: bool = True) -> None:
        if not self.deadline.allows(label):
            return
        rate = median_rate(run, docs, self.args.repeats, self.sync if sync else (lambda: None))
        section[key] = rate
        print(f"{label:<52} {rate['docs_per_s']:>10,.0f} docs/s  runs {rate['seconds']}", flush=True)
        self.save()

    def new_embedder(self, batch_size: int, **kwargs: Any):
        return self.transformer.SentenceTransformerEmbedder(self.args.model, device=self.args.device,
                                                            max_seq_length=MAX_SEQ_LENGTH, batch_size=batch_size,
                                                            **kwargs)

    def forward_all(self, batches: list[dict]) -> None:
        with self.torch.inference_mode():
            for features in batches:
                self.model(features)["sentence_embedding"]

    def encode(self) -> None:
        """(a) The baseline, with the tokenizers library's pool on (its default; an embedder may have turned it off)."""
        for size in self.baseline_sizes:
            with parallelism_env("true"):
                self.record(self.results["encode"], str(size), f"encode, batch {size}",
                            lambda: self.model.encode(self.baseline_texts, batch_size=size,
                                                      normalize_embeddings=True, show_progress_bar=False,
                                                      convert_to_numpy=True),
                            len(self.baseline_texts))

    def model_only_encode_batches(self) -> None:
        """(b) The model alone on encode's batches (texts sorted by characters), tokenized and on the device."""
        texts = self.texts[: self.args.model_only_docs]
        by_length = sorted(texts, key=len, reverse=True)
        for size in self.baseline_sizes:
            if not self.deadline.allows(f"model only, encode batches {size}"):
                continue
            with parallelism_env("true"):
                batches = [{k: v.to(self.args.device) if hasattr(v, "to") else v
                            for k, v in self.preprocess(by_length[s:s + size]).items()}
                           for s in range(0, len(by_length), size)]
            self.record(self.results["model_only"]["encode_batches"], str(size),
                        f"model only, encode's batches of {size}", lambda: self.forward_all(batches), len(texts))

    def embedder(self) -> None:
        """(d) The embedder end to end per batch size; the model alone on its batches; (e) the subset's vectors."""
        for size in self.batch_sizes:
            if not self.deadline.allows(f"embedder batch {size}"):
                continue
            embedder = self.new_embedder(size)
            self.results["pipelined"] = embedder.pipelined
            self.results["tokenizer_processes"] = embedder.tokenizer_processes
            self.results["TOKENIZERS_PARALLELISM_in_embedder_runs"] = os.environ.get("TOKENIZERS_PARALLELISM")
            self.record(self.results["embedder"], str(size), f"embedder, batch {size}",
                        lambda: embedder.embed(self.texts), len(self.texts))
            if embedder.pipelined and size == self.args.threads_batch_size:
                self.record(self.results["host_only"], str(size), f"embedder's producer alone, batch {size}",
                            lambda: self.produce_all(embedder), len(self.texts), sync=False)
            wanted = embedder.pipelined and "model_only" in self.args.sections
            if wanted and self.deadline.allows(f"model only, embedder batches {size}"):
                batches = self.embedder_batches(embedder)
                self.record(self.results["model_only"]["embedder_batches"], str(size),
                            f"model only, embedder's batches of {size}", lambda: self.forward_all(batches),
                            len(self.texts))
                del batches
            if self.args.save_subset and "subset" not in self.results:
                self.save_subset(embedder)
            embedder.close()

    def produce_all(self, embedder) -> int:
        """The embedder's host side alone: tokenize, pad and pin every batch (no model, no copies)."""
        produced: queue.Queue = queue.Queue()
        embedder._produce(self.texts, produced, threading.Event(), self.cuda)
        return produced.qsize()

    def embedder_batches(self, embedder) -> list[dict]:
        """The batches the embedder's producer makes of the texts, on the device."""
        produced: queue.Queue = queue.Queue()
        embedder._produce(self.texts, produced, threading.Event(), self.cuda)
        batches = []
        while (item := produced.get()) is not None:
            inputs = item[1].to(self.args.device).long()
            batches.append({"input_ids": inputs[0], "attention_mask": inputs[1],
                            "token_type_ids": self.torch.zeros_like(inputs[0]), **embedder._pipeline["extra"]})
        return batches

    def save_subset(self, embedder) -> None:
        """(e) The embedder's and encode's vectors of the first distinct texts, for compare."""
        subset = self.distinct[: self.args.subset]
        folder = Path(self.args.save_subset)
        mine = embedder.embed(subset)
        theirs = self.model.encode(subset, batch_size=256, normalize_embeddings=True, show_progress_bar=False,
                                   convert_to_numpy=True).astype(np.float32)
        np.save(folder / SUBSET_FILES["embedder"], mine)
        np.save(folder / SUBSET_FILES["encode"], theirs)
        self.results["subset"] = {"texts": len(subset), "embedder_batch_size": embedder.batch_size,
                                  "embedder_vs_encode_same_device": vector_agreement(mine, theirs)}
        print("embedder vs encode on", self.args.device, self.results["subset"]["embedder_vs_encode_same_device"],
              flush=True)
        self.save()

    def tokenize(self) -> None:
        """(c) Tokenizing alone: encode's preprocess on whole texts, and the embedder's tokenizer on cut texts."""
        texts = self.baseline_texts
        one_thread = texts[: self.args.one_thread_docs]
        with parallelism_env("false"):
            self.record(self.results["tokenize"], "preprocess, 1 thread", "tokenize: preprocess, 1 thread",
                        lambda: [self.preprocess(one_thread[s:s + 256]) for s in range(0, len(one_thread), 256)],
                        len(one_thread), sync=False)
        window = self.transformer.WINDOW_TEXTS
        windows = [texts[s:s + window] for s in range(0, len(texts), window)]
        backend = self.model.tokenizer.backend_tokenizer
        cores = self.transformer.available_cores()
        with parallelism_env("false"):  # as the embedder runs it: its threads, not the library's pool
            for threads in self.thread_counts:
                tokenizer = self.transformer.BatchTokenizer(backend, MAX_SEQ_LENGTH, threads, self.prefix_chars)
                label = f"BatchTokenizer, {threads} threads"
                self.record(self.results["tokenize"], label, f"tokenize: {label}",
                            lambda: [tokenizer.encode(w) for w in windows], len(texts), sync=False)
                tokenizer.close()
        for processes in sorted({cores - 1, cores} - {0}):
            if not self.deadline.allows(f"ProcessTokenizer {processes}"):
                continue
            tokenizer = self.transformer.ProcessTokenizer(backend, MAX_SEQ_LENGTH, processes, self.prefix_chars)
            label = f"ProcessTokenizer, {processes} processes, all windows in flight"
            self.record(self.results["tokenize"], label, f"tokenize: {label}",
                        lambda: [result() for result in [tokenizer.submit(w) for w in windows]], len(texts),
                        sync=False)
            tokenizer.close()
        # The GIL-free part alone: the Rust encoder on cut texts with the library's pool, no ids taken out.
        cut_windows = [[self.transformer.whitespace_prefix(t, self.prefix_chars) for t in w] for w in windows]
        from corpusmill.transforms.order.text_batches import truncating_tokenizer

        rust = truncating_tokenizer(backend.to_str(), MAX_SEQ_LENGTH)
        with parallelism_env("true"):
            self.record(self.results["tokenize"], "Rust encode_batch_fast alone, cut texts, library pool",
                        "tokenize: Rust alone, cut texts", lambda: [rust.encode_batch_fast(w) for w in cut_windows],
                        len(texts), sync=False)

    def embedder_threads(self) -> None:
        """The embedder tokenizing on threads (the path before worker processes), and with fewer workers."""
        size = self.args.threads_batch_size
        cores = self.transformer.available_cores()
        if self.deadline.allows("embedder on threads"):
            with parallelism_env("false"):  # what building a threaded embedder sets where it is unset
                embedder = self.new_embedder(size, tokenizer_processes=0)
                self.record(self.results["embedder_threads"], f"{cores} threads (tokenizer_processes=0)",
                            f"embedder, batch {size}, {cores} tokenizer threads", lambda: embedder.embed(self.texts),
                            len(self.texts))
                if self.deadline.allows("producer on threads"):
                    self.record(self.results["host_only"], f"{size}, {cores} threads",
                                f"producer alone, batch {size}, {cores} threads", lambda: self.produce_all(embedder),
                                len(self.texts), sync=False)
                embedder.close()
        for processes in sorted({cores // 2, 3 * cores // 4, cores - 1} - {0, cores}):
            if self.deadline.allows(f"embedder processes {processes}"):
                embedder = self.new_embedder(size, tokenizer_processes=processes)
                self.record(self.results["embedder_threads"], f"{processes} processes",
                            f"embedder, batch {size}, {processes} tokenizer processes",
                            lambda: embedder.embed(self.texts), len(self.texts))
                embedder.close()


    def interleaved(self) -> None:
        """The ratio taken round by round: in each round the model alone and the embedder with cores - 1 and
        with cores tokenizer processes run once each, in a rotating order, so that a slow stretch of a shared
        host falls on all of them; the ratio is the median of the rounds' ratios."""
        size = self.args.threads_batch_size
        cores = self.transformer.available_cores()
        if not self.deadline.allows("interleaved rounds"):
            return
        embedders = {f"{n} processes": self.new_embedder(size, tokenizer_processes=n)
                     for n in sorted({cores - 1, cores} - {0})}
        batches = self.embedder_batches(next(iter(embedders.values())))
        runs: dict[str, Callable[[], Any]] = {"model alone": lambda: self.forward_all(batches)}
        runs.update({label: (lambda e=e: e.embed(self.texts)) for label, e in embedders.items()})
        for run in runs.values():  # warm-up
            run()
            self.sync()
        seconds: dict[str, list[float]] = {label: [] for label in runs}
        labels = list(runs)
        for round_ in range(self.args.rounds):
            if not self.deadline.allows(f"interleaved round {round_ + 1}"):
                break
            for label in labels[round_ % len(labels):] + labels[:round_ % len(labels)]:
                self.sync()
                start = time.perf_counter()
                runs[label]()
                self.sync()
                seconds[label].append(round(time.perf_counter() - start, 4))
        docs = len(self.texts)
        section = {"batch_size": size, "docs": docs, "seconds": seconds,
                   "docs_per_s": {label: round(docs / statistics.median(s), 1) for label, s in seconds.items() if s},
                   "ratio": {}}
        model = seconds["model alone"]
        for label in embedders:
            ratios = [m / e for m, e in zip(model, seconds[label])]
            if ratios:
                section["ratio"][label] = {"per_round": [round(r, 3) for r in ratios],
                                           "median": round(statistics.median(ratios), 3)}
        self.results["interleaved"] = section
        for label, rate in section["docs_per_s"].items():
            extra = f"  ratio median {section['ratio'][label]['median']}" if label in section["ratio"] else ""
            print(f"interleaved, batch {size}, {label:<24} {rate:>10,.0f} docs/s  runs {seconds[label]}{extra}",
                  flush=True)
        del batches
        for embedder in embedders.values():
            embedder.close()
        self.save()


@contextlib.contextmanager
def parallelism_env(value: str):
    """TOKENIZERS_PARALLELISM set to ``value`` inside the block (the library reads it on every call)."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def measure(args: argparse.Namespace) -> None:
    summary_table(Measurement(args).run())


def vector_agreement(got: np.ndarray, reference: np.ndarray) -> dict:
    """Max |difference|, and the min and median cosine of matching rows (rows are unit length)."""
    cosine = np.sum(got.astype(np.float64) * reference, axis=1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1), 1e-30)
    return {"rows": int(len(got)), "max_abs_diff": float(np.abs(got - reference).max()),
            "min_cosine": float(cosine.min()), "median_cosine": float(np.median(cosine))}


def summary_table(results: dict) -> None:
    print("\nsummary (docs/s, medians)")
    for section in ("encode", "embedder", "host_only", "embedder_threads", "tokenize"):
        for key, rate in results[section].items():
            print(f"  {section:<17} {key:<32} {rate['docs_per_s']:>10,.0f}")
    for kind, rates in results["model_only"].items():
        for key, rate in rates.items():
            print(f"  model_only {kind:<17} {key:<22} {rate['docs_per_s']:>10,.0f}")


# --- compare --------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    """The GPU subset's vectors against the embedder's on this machine's CPU (float32)."""
    transformer = transformer_module()
    subset = load_texts(args.texts)[: args.subset]
    embedder = transformer.SentenceTransformerEmbedder(args.model, device="cpu", max_seq_length=MAX_SEQ_LENGTH,
                                                       batch_size=64)
    start = time.perf_counter()
    reference = embedder.embed(subset)
    seconds = time.perf_counter() - start
    out = {"reference": f"SentenceTransformerEmbedder on cpu, float32 weights of {args.model}",
           "texts": len(subset), "reference_seconds": round(seconds, 1), "command": " ".join(sys.argv)}
    for name, file in SUBSET_FILES.items():
        gpu = np.load(Path(args.gpu_dir) / file)
        out[f"gpu_{name}_vs_cpu_embedder"] = vector_agreement(gpu, reference)
        print(name, out[f"gpu_{name}_vs_cpu_embedder"], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


# --- prepare ----------------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> None:
    """The float16 model folder and the texts file that travel to the device machine (64 MiB in all)."""
    import shutil

    import pyarrow.parquet as pq
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source, target = Path(args.model), Path(args.out_model)
    target.mkdir(parents=True, exist_ok=True)
    with safe_open(source / "model.safetensors", "pt") as handle:
        metadata = handle.metadata() or {"format": "pt"}
    weights = load_file(source / "model.safetensors")
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              target / "model.safetensors", metadata=metadata)
    for path in source.rglob("*"):  # configs and tokenizer files; no README, no other weights
        relative = path.relative_to(source)
        if path.is_file() and path.suffix in {".json", ".txt", ".model"} and relative.name != "data_config.json":
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / relative)
    texts = pq.read_table(args.parquet, columns=["text"]).column("text").to_pylist()
    if args.max_chars:  # what travels is limited (64 MiB with the working tree); the embedder reads ~1,300
        texts = [text[:args.max_chars] for text in texts]
    raw = json.dumps(texts).encode()
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 26}]
    Path(args.out_texts).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_texts).write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ, filters=filters))


# --- report ---------------------------------------------------------------------------------


def best(rates: dict) -> tuple[str, dict]:
    key = max(rates, key=lambda k: rates[k]["docs_per_s"])
    return key, rates[key]


def report(args: argparse.Namespace) -> None:
    gpu = json.loads(Path(args.gpu).read_text())
    cpu = json.loads(Path(args.cpu).read_text())
    accuracy = json.loads(Path(args.accuracy).read_text()) if args.accuracy else None
    embedder_key, embedder_best = best(gpu["embedder"])
    # The ratio is taken against the faster of the model-alone figures (encode's batches or the embedder's own).
    model_rates = {f"{kind} {key}": rate for kind, rates in gpu["model_only"].items() for key, rate in rates.items()}
    model_key, model_best = best(model_rates)
    encode_key, encode_best = best(gpu["encode"])
    ratio = embedder_best["docs_per_s"] / model_best["docs_per_s"]
    same_batch = gpu["model_only"]["embedder_batches"].get(embedder_key)
    verdict = {"target_docs_per_s": TARGET_DOCS_PER_S, "target_ratio_to_model_only": TARGET_RATIO,
               "best_embedder_docs_per_s": embedder_best["docs_per_s"], "best_embedder_batch_size": int(embedder_key),
               "best_model_only_docs_per_s": model_best["docs_per_s"], "best_model_only": model_key,
               "ratio_to_model_only": round(ratio, 3),
               "ratio_to_model_only_same_batches": round(embedder_best["docs_per_s"] / same_batch["docs_per_s"], 3)
               if same_batch else None,
               "ratio_to_issue_model_only": round(embedder_best["docs_per_s"] / ISSUE_MODEL_ONLY_DOCS_PER_S, 3),
               "speedup_over_encode": round(embedder_best["docs_per_s"] / encode_best["docs_per_s"], 2),
               "docs_per_s_reached": embedder_best["docs_per_s"] >= TARGET_DOCS_PER_S,
               "ratio_reached": ratio >= TARGET_RATIO}
    merged = {"gpu": gpu, "cpu": cpu, "accuracy": accuracy, "verdict": verdict, "report_command": " ".join(sys.argv)}
    out = Path(args.out)
    out.write_text(json.dumps(merged, indent=1))
    out.with_suffix(".md").write_text(markdown(gpu, cpu, accuracy, verdict, args))


def rate_rows(rates: dict, label: str) -> list[str]:
    return [f"| {label} | {key} | {r['docs']:,} | {r['docs_per_s']:,.0f} | "
            f"{', '.join(f'{s:.2f}' for s in r['seconds'])} |" for key, r in rates.items()]


def markdown(gpu: dict, cpu: dict, accuracy: dict | None, verdict: dict, args: argparse.Namespace) -> str:
    env, cpu_env = gpu["environment"], cpu["environment"]
    threads_batch = next(iter(gpu["host_only"]), "?")
    lines = [
        "# Transformer embedder benchmark (issue 11 item 9)", "",
        f"all-MiniLM-L6-v2, {gpu['max_seq_length']} tokens, texts: linux-doc 6.1 + 6.12 "
        f"({gpu['distinct_texts']:,} distinct documents, shuffled and cycled to {gpu['docs']:,}; "
        f"encode and tokenizer figures on the first {gpu['baseline_docs']:,}). docs/s are medians of "
        f"{gpu['repeats']} timed runs after a warm-up; the runs' seconds are listed.", "",
        "## Verdict", "",
        f"* Best end to end through `SentenceTransformerEmbedder` on the GPU: **{verdict['best_embedder_docs_per_s']:,.0f} "
        f"docs/s** (batch {verdict['best_embedder_batch_size']}); target {TARGET_DOCS_PER_S:,}: "
        f"{'reached' if verdict['docs_per_s_reached'] else 'NOT reached'}.",
        f"* Model alone, the faster of its figures ({verdict['best_model_only'].replace('_', ' ')}, pre-tokenized, "
        f"on the device): {verdict['best_model_only_docs_per_s']:,.0f} docs/s; "
        f"end to end / model alone = **{verdict['ratio_to_model_only']:.2f}** (target {TARGET_RATIO}: "
        f"{'reached' if verdict['ratio_reached'] else 'NOT reached'}); against the issue's model-alone figure "
        f"({ISSUE_MODEL_ONLY_DOCS_PER_S:,} docs/s) it is {verdict['ratio_to_issue_model_only']:.2f}.",
        f"* {verdict['speedup_over_encode']:.1f}x `SentenceTransformer.encode` on the same GPU "
        f"(best of its batch sizes).", "",
        f"## GPU: {env.get('gpu', '?')}, {env['cores']} cores ({env['cpu']})", "",
        f"`{env['command']}`", "",
        f"{env['date']}; Python {env['python']}, torch {env['torch']}, sentence-transformers "
        f"{env['sentence_transformers']}, transformers {env['transformers']}, tokenizers {env['tokenizers']}. "
        "The model runs in float16 (fp16 safetensors of the weights).", "",
        "| what | batch / threads | docs | docs/s | runs (s) |", "|---|---|---:|---:|---:|",
        *rate_rows(gpu["encode"], "`SentenceTransformer.encode` (baseline)"),
        *rate_rows(gpu["model_only"]["encode_batches"], "model alone, encode's batches on the device"),
        *rate_rows(gpu["model_only"]["embedder_batches"], "model alone, the embedder's batches on the device"),
        *rate_rows(gpu["tokenize"], "tokenizing alone"),
        *rate_rows(gpu.get("host_only", {}), "the embedder's producer alone (tokenize, pad, pin; no model)"),
        *rate_rows(gpu["embedder"], f"**`SentenceTransformerEmbedder.embed`**, "
                                    f"{gpu.get('tokenizer_processes', '?')} tokenizer processes (the default)"),
        *rate_rows(gpu["embedder_threads"], f"`SentenceTransformerEmbedder.embed`, batch {threads_batch}, "
                                            "tokenizing on threads (the path before) / other worker counts"), "",
        "*model alone* is the forward pass (Transformer, mean pooling, Normalize) over batches tokenized beforehand "
        "and copied to the GPU, synchronised once at the end. *encode's batches* are what encode forms (texts sorted "
        "by characters, padded to the longest); *the embedder's batches* are its own (texts cut at 5 characters "
        "per token, a cut that falls short tokenized again twice as long; sorted by tokens in windows of 4,096, "
        "padded to a multiple of 8). Tokenizing: `preprocess` is encode's tokenizer call on whole texts, one "
        "thread; `BatchTokenizer` is the embedder's threaded tokenizer, `ProcessTokenizer` its worker-process one "
        "(the cuda default), both cutting as above, in windows of 4,096, with TOKENIZERS_PARALLELISM=false; "
        "*Rust alone* is the library's `encode_batch_fast` with its own pool on texts cut beforehand, taking no "
        "ids out (no GIL work) and without the ASCII path. *The embedder's producer alone* is its host side "
        "(tokenize, pad, pin) with no model.", "",
    ]
    if gpu.get("skipped"):
        lines += [f"Skipped for the time budget: {', '.join(gpu['skipped'])}.", ""]
    lines += [f"## CPU: this 2-core machine ({cpu_env['cpu']}, {cpu_env['cores']} cores, shared with other work)", "",
              f"`{cpu_env['command']}`", "",
              f"{cpu_env['date']}; torch {cpu_env['torch']}; float32.", "",
              "| what | batch / threads | docs | docs/s | runs (s) |", "|---|---|---:|---:|---:|",
              *rate_rows(cpu["encode"], "`SentenceTransformer.encode` (baseline)"),
              *rate_rows(cpu["embedder"], "**`SentenceTransformerEmbedder.embed`**"), ""]
    if accuracy:
        lines += ["## Agreement with the CPU path", "",
                  f"The first {accuracy['texts']:,} distinct texts: GPU float16 vectors against "
                  f"{accuracy['reference']} (`compare`).", "",
                  "| GPU vectors | rows | max abs diff | min cosine | median cosine |", "|---|---:|---:|---:|---:|"]
        for name in SUBSET_FILES:
            a = accuracy[f"gpu_{name}_vs_cpu_embedder"]
            lines.append(f"| {name} | {a['rows']:,} | {a['max_abs_diff']:.2e} | {a['min_cosine']:.6f} | "
                         f"{a['median_cosine']:.6f} |")
        same = gpu.get("subset", {}).get("embedder_vs_encode_same_device")
        if same:
            lines += ["", f"Embedder against encode, both float16 on the GPU: max abs diff {same['max_abs_diff']:.2e}, "
                          f"min cosine {same['min_cosine']:.6f}."]
        lines.append("")
    lines += ["## Commands", "", "```", env["command"], cpu_env["command"]]
    if accuracy:
        lines.append(accuracy.get("command", ""))
    lines += [" ".join(sys.argv), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("measure", help="time encode, the model alone, tokenizing and the embedder")
    run.add_argument("--model", required=True, help="sentence-transformers model folder")
    run.add_argument("--texts", required=True, help="Parquet with a text column, or .json.xz list of strings")
    run.add_argument("--device", default="cuda")
    run.add_argument("--docs", type=int, default=60_000)
    run.add_argument("--baseline-docs", type=int, default=20_000, help="texts encode and the tokenizers are timed on")
    run.add_argument("--model-only-docs", type=int, default=20_000, help="texts of the model alone on encode's batches")
    run.add_argument("--one-thread-docs", type=int, default=2000, help="texts the one-thread tokenizer is timed on")
    run.add_argument("--batch-sizes", default="64,256,512,1024,2048")
    run.add_argument("--baseline-batch-sizes", default="256,1024")
    run.add_argument("--threads-batch-size", type=int, default=1024)
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--rounds", type=int, default=7, help="rounds of the interleaved section")
    run.add_argument("--subset", type=int, default=1000)
    run.add_argument("--save-subset", help="folder for the subset's vectors (for compare)")
    run.add_argument("--sections", default="encode,model_only,embedder,tokenize,threads",
                     help="what to measure, in this order")
    run.add_argument("--budget-s", type=float, default=420, help="start no measurement after this many seconds")
    run.add_argument("--out", required=True)
    check = commands.add_parser("compare", help="GPU subset vectors against the CPU embedder's")
    check.add_argument("--model", required=True, help="the float32 model folder")
    check.add_argument("--texts", required=True)
    check.add_argument("--gpu-dir", required=True)
    check.add_argument("--subset", type=int, default=1000)
    check.add_argument("--out", required=True)
    make = commands.add_parser("prepare", help="fp16 model folder and xz texts for the device machine")
    make.add_argument("--model", required=True, help="sentence-transformers folder with float32 model.safetensors")
    make.add_argument("--parquet", required=True, help="corpus Parquet with a text column")
    make.add_argument("--out-model", default=".device-model/minilm-fp16")
    make.add_argument("--out-texts", default=".device-data/linux-doc-texts.json.xz")
    make.add_argument("--max-chars", type=int, help="keep only each text's first characters (a smaller file)")
    merge = commands.add_parser("report", help="merge measurements into results/embed_bench.{json,md}")
    merge.add_argument("--gpu", required=True)
    merge.add_argument("--cpu", required=True)
    merge.add_argument("--accuracy")
    merge.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    {"prepare": prepare, "measure": measure, "compare": compare, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
