"""The ``corpusmill`` command line.

    corpusmill run [JOB.yaml] [--input GLOB ...] [--output DIR] [--set key=value ...]
                   [--overwrite] [--quiet] [--log-format text|json] [-- BEAM_ARGS]
    corpusmill dedup | decompose   (one stage; same flags as run)
    corpusmill refresh --previous SNAPSHOT [JOB.yaml] --input GLOB ... --output DIR  (same flags as run)
    corpusmill inspect DIR [--rows N]
    corpusmill report DIR

Everything after ``--`` goes to Beam's PipelineOptions. Exit status: 0 on
success, 2 for a bad configuration, input or output (nothing ran; this includes
an output another run holds), 1 when the run failed, 3 when the run completed
and published its snapshot but kept no document at all (every record rejected
or a duplicate): a scheduled job should not pass that as a success.

A run logs its progress on stderr (each stage's start, a line every 10 s with
the documents read and the stage reached) and ends with a summary table on
stdout. ``--quiet`` keeps only warnings and errors; ``--log-format json``
writes every line, the summary included, as one JSON object per line on
stderr and nothing on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.resources
import json
import logging
import os
import sys
import textwrap
import time
import traceback
from typing import Any

import yaml

from corpusmill.schemas.config import ConfigError, load_job

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING_KEPT = 3

# One-stage commands are `run` with the other optional stages switched off.
STAGE_ONLY = {
    "dedup": ["decompose.enabled=false", "order.enabled=false"],
    "order": ["dedup.enabled=false", "decompose.enabled=false", "order.enabled=true"],
    "decompose": ["dedup.enabled=false", "order.enabled=false", "decompose.over=documents"],
}


log = logging.getLogger("corpusmill")


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that the optional GCP client libraries are missing; a local
    run does not need them, and the line reads like an error to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


class _DropBeamWorkerNoise(logging.Filter):
    """Local worker processes (``--direct_running_mode=multi_processing``) each warn that
    they have no semi-persistent directory, which a local run never has; the line is
    forwarded to the terminal once per worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.ERROR and "No semi_persistent_directory found" in record.getMessage())


class _TextFormatter(logging.Formatter):
    """``HH:MM:SS message`` for corpusmill's own lines; anything else also names its level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if not (record.name.startswith("corpusmill") and record.levelno == logging.INFO):
            text = f"{record.levelname} {record.name}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return time.strftime("%H:%M:%S ", time.localtime(record.created)) + text


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "corpusmill", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture replaces it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(quiet: bool = False, log_format: str = "text") -> None:
    """Sends log lines to stderr: corpusmill's progress at INFO, other libraries' at WARNING.

    Beam logs every fused stage it runs at INFO; a person at a terminal wants
    corpusmill's own lines. Calling this again replaces the handler it set.

    Args:
        quiet: Warnings and errors only.
        log_format: ``text`` (``HH:MM:SS message``) or ``json`` (one object per line).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    handler.addFilter(_DropBeamImportNoise())
    handler.addFilter(_DropBeamWorkerNoise())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def default_job_spec() -> dict[str, Any]:
    """The embedded default job (jobs/default.yaml)."""
    text = (importlib.resources.files("corpusmill.jobs") / "default.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _load_spec(path: str | None) -> dict[str, Any]:
    if path is None:
        return default_job_spec()
    try:
        with open(path, encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError("<job file>", f"cannot read {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError("<job file>", f"{path} is not valid YAML: {error}") from error
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError("<job file>", f"{path} must hold a mapping of sections (input, output, ...)")
    return spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corpusmill",
        description="Turn raw text corpora into deterministic pretraining shards (Apache Beam).",
        epilog="Arguments after `--` are Beam pipeline options, e.g. -- --runner DataflowRunner.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    stage_help = {
        "run": "run a job: every enabled stage (the embedded default on the bundled sample if no JOB.yaml)",
        "dedup": "run only read, validate and dedup (the other stages off)",
        "order": "run only read, validate and the in-context order (the other stages off)",
        "decompose": "run only read, validate and decompose (the other stages off)",
        "refresh": "a new snapshot of only the new documents that duplicate nothing already published",
    }
    for command, text in stage_help.items():
        run = commands.add_parser(command, help=text)
        run.add_argument("job", nargs="?", help="job spec (YAML); default: the embedded default job")
        run.add_argument("--input", nargs="+", action="extend", metavar="GLOB",
                         help="input files, folders or globs (sets input.paths)")
        run.add_argument("--output", metavar="DIR", help="snapshot directory (sets output.path)")
        run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config key, e.g. --set input.text_field=content")
        run.add_argument("--overwrite", action="store_true", help="replace an existing snapshot")
        run.add_argument("--quiet", action="store_true",
                         help="no progress and no summary: only warnings and errors (for cron)")
        run.add_argument("--log-format", choices=("text", "json"), default="text",
                         help="json: every log line and the final summary as one JSON object per line on "
                              "stderr, nothing on stdout (for schedulers); default: text")
        if command == "refresh":
            run.add_argument("--previous", required=True, metavar="SNAPSHOT",
                             help="the published snapshot to extend; its index/ is joined against, not copied")
    inspect = commands.add_parser("inspect", help="summarise a snapshot and show a few rows")
    inspect.add_argument("snapshot", metavar="DIR")
    inspect.add_argument("--rows", type=int, default=3, help="rows to show per output (default 3)")
    report = commands.add_parser("report", help="(re)write a snapshot's report.html from its manifest")
    report.add_argument("snapshot", metavar="DIR")
    return parser


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from corpusmill.transforms.io.beam.lock import OutputLockedError
    from corpusmill.transforms.io.beam.snapshot import OutputExistsError
    from corpusmill.transforms.io.inputs import InputError
    from corpusmill.transforms.io.output_paths import OutputPathError
    from corpusmill.pipelines.refresh_job import PreviousSnapshotError

    overrides = list(args.overrides)
    overrides += STAGE_ONLY.get(args.command, [])
    if args.input:
        overrides.append("input.paths=" + json.dumps(args.input))
    if args.output is not None:
        # An empty --output is passed on, to be refused, not replaced by the default.
        overrides.append("output.path=" + json.dumps(args.output))
    if args.overwrite:
        overrides.append("output.overwrite=true")
    try:
        config = load_job(_load_spec(args.job), overrides)
        from corpusmill.jobs.report import render_report
        from corpusmill.pipelines.corpus_job import run_job

        if args.command == "refresh":
            from corpusmill.pipelines.refresh_job import run_refresh

            manifest = run_refresh(config, args.previous, beam_args, render_report)
        else:
            manifest = run_job(config, beam_args, render_report)
    except (ConfigError, InputError, OutputExistsError, OutputPathError, OutputLockedError,
            PreviousSnapshotError) as error:
        _error(args, f"error: {error}")
        return EXIT_USAGE
    json_log = args.log_format == "json"
    if manifest is None:
        if json_log:
            log.info("dry run: nothing written", extra={"corpusmill": {"event": "dry_run"}})
        elif not args.quiet:
            print("dry run: the pipeline was built and translated; nothing was written.")
        return 0
    if json_log:
        log.info("run complete: %s", config.output.path,
                 extra={"corpusmill": summary_record(manifest, config.output.path)})
    elif not args.quiet:
        print(summary(manifest, config.output.path))
    if manifest["counts"]["kept"] == 0 and manifest.get("previous"):
        _error(args, f"WARNING: nothing new: all {manifest['counts']['input_records']:,} input records duplicate "
                     f"documents published in {manifest['previous']['path']} or each other, or were rejected "
                     f"(duplicates/, rejected/); a complete snapshot was published (exit status {EXIT_NOTHING_KEPT})",
               logging.WARNING)
        return EXIT_NOTHING_KEPT
    if manifest["counts"]["kept"] == 0:
        _error(args, f"WARNING: no document was kept: all {manifest['counts']['input_records']:,} input "
                     f"records were rejected or duplicates; the rejected rows and their reasons are in "
                     f"{config.output.path.rstrip('/')}/rejected/ (exit status {EXIT_NOTHING_KEPT})",
               logging.WARNING)
        return EXIT_NOTHING_KEPT
    return 0


def _error(args: argparse.Namespace, message: str, level: int = logging.ERROR) -> None:
    """A line for stderr: ``corpusmill: MESSAGE``, or a JSON log line with ``--log-format json``."""
    if getattr(args, "log_format", "text") == "json":
        log.log(level, message)
    else:
        print(f"corpusmill: {message}", file=sys.stderr)


def summary_record(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """The end of a run as one structured record (``--log-format json``)."""
    from corpusmill.jobs.report import stage_rows

    return {
        "event": "summary",
        "snapshot": where,
        "status": manifest["status"],
        "counts": manifest["counts"],
        "stages": stage_rows(manifest),
        "outputs": {name: {"shards": len(out["shards"]), "rows": out["rows"], "bytes": out["bytes"]}
                    for name, out in manifest["outputs"].items()},
        "wall_seconds": manifest.get("timings", {}).get("wall_seconds"),
        "report": f"{where.rstrip('/')}/report.html",
    }


def summary(manifest: dict[str, Any], where: str, status: str | None = None) -> str:
    """A few lines a person reads after a run (``status`` replaces the manifest's own)."""
    counts = manifest["counts"]
    lines = [
        f"snapshot: {where}  ({status or manifest['status']})",
        f"input:    {manifest['input']['files']} files, {manifest['input']['bytes']:,} bytes, "
        f"{counts['input_records']:,} records",
        f"kept:     {counts['kept']:,}   duplicates: {counts['duplicates']:,}   rejected: {counts['rejected']:,}"
        f"   (balanced: {counts['balanced']})",
    ]
    if counts["rejected_by_reason"]:
        lines.append("rejected: " + ", ".join(f"{k}={v}" for k, v in counts["rejected_by_reason"].items()))
    from corpusmill.jobs.report import stage_rows

    stages = stage_rows(manifest)
    if stages:
        from corpusmill.pipelines.progress import format_table

        lines += ["", format_table(stages[:-1], stages[-1]), ""]
    for name, out in manifest["outputs"].items():
        lines.append(f"{name + '/':<20}{len(out['shards'])} shards, {out['rows']:,} rows, {out['bytes']:,} bytes")
    order = manifest.get("order") or {}
    cosine = (order.get("quality") or {}).get("adjacent_cosine") or {}
    if cosine.get("order") is not None:
        knn = order.get("knn") or {}
        recall = (knn.get("recall") or {}).get("recall_at_k")
        ratio = lambda key: f"{cosine[key]:.2f}" if cosine.get(key) is not None else "n/a"  # noqa: E731
        lines.append(f"order:    adjacent cosine {cosine['order']:.3f} = {ratio('of_top1')} of the top-1 bound, "
                     f"{ratio('over_natural')}x natural; kNN {knn.get('mode')} "
                     f"({knn.get('partitions')} partition(s), recall@{knn.get('k')} "
                     f"{'n/a' if recall is None else f'{recall:.3f}'})")
    refresh = (manifest.get("dedup") or {}).get("refresh")
    if refresh and manifest.get("previous"):
        previous = manifest["previous"]
        lines.append(f"refresh:  against {previous['path']} ({previous['documents']:,} documents, chain of "
                     f"{len(manifest.get('lineage', []))}): duplicates of published "
                     f"{sum(refresh['against_previous'].values()):,}, of each other "
                     f"{sum(refresh['against_each_other'].values()):,}; index now {manifest['outputs']['index']['rows']:,}")
    partitioning = manifest["execution"]["partitioning"]
    lines.append(f"partitioning: {partitioning['mode']} ({partitioning['reason']})")
    skipped = manifest["input"].get("skipped_files", 0)
    if skipped:
        first = manifest["input"]["skipped"][0]
        lines.append(f"skipped:  {skipped:,} matched file(s) not read, e.g. {first['path']}: {first['reason']} "
                     f"(all in manifest.json input.skipped)")
    if "wall_seconds" in manifest.get("timings", {}):
        lines.append(f"wall time: {manifest['timings']['wall_seconds']:.1f} s")
    lines.append(f"report:   {where.rstrip('/')}/report.html")
    return "\n".join(lines)


def _load_manifest(root: str, quiet: bool = False) -> dict[str, Any] | None:
    from apache_beam.io.filesystems import FileSystems

    from corpusmill.schemas.manifest import MANIFEST_NAME

    try:
        with FileSystems.open(f"{root}/{MANIFEST_NAME}") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except Exception as error:  # any filesystem's not-found error
        if not quiet:
            print(f"corpusmill: error: {root} has no readable {MANIFEST_NAME}: {error}", file=sys.stderr)
        return None


def _report(args: argparse.Namespace) -> int:
    from corpusmill.jobs.report import REPORT_NAME, render_report
    from corpusmill.transforms.io.beam.files import write_bytes
    from corpusmill.transforms.io.beam.lock import OutputLock, OutputLockedError

    root = args.snapshot.rstrip("/")
    manifest = _load_manifest(root)
    if manifest is None:
        return EXIT_USAGE
    try:
        with OutputLock(root):
            write_bytes(f"{root}/{REPORT_NAME}", render_report(manifest).encode("utf-8"))
    except OutputLockedError as error:
        print(f"corpusmill: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {root}/{REPORT_NAME}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from corpusmill.transforms.io.beam.snapshot import snapshot_problems

    root = args.snapshot.rstrip("/")
    problems = snapshot_problems(root)
    manifest = _load_manifest(root, quiet=any("interrupted" in p for p in problems))
    if manifest is None:
        for problem in problems:
            print(f"PROBLEM: {problem}")
        return EXIT_FAILED if any("interrupted" in p for p in problems) else EXIT_USAGE
    try:
        print(summary(manifest, root, None if not problems else "NOT COMPLETE"))
    except (KeyError, TypeError) as error:
        problems.append(f"the manifest lacks {error}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if args.rows > 0:
        for name, out in manifest.get("outputs", {}).items():
            shard = next((s for s in out.get("shards", []) if s.get("rows")), None)
            if shard is not None:
                _show_rows(root, name, shard["path"], args.rows, _token_decoder(manifest, name))
    return 0 if not problems else EXIT_FAILED


# How much of one value ``inspect`` prints.
_TEXT_CHARS = 100
_HEAD_IDS = 8
_HEAD_ITEMS = 3
_DECODED_TOKENS = 48


def _token_decoder(manifest: dict[str, Any], output: str):
    """Decodes one output's token ids with the tokenizer that wrote them, or None where none loads."""
    config = manifest.get("config") or {}
    if output == "contexts":
        spec = ((config.get("order") or {}).get("contexts") or {}).get("tokenizer")
    elif output.startswith("buckets/"):
        spec = (config.get("decompose") or {}).get("tokenizer")
    else:
        spec = None
    return _load_decoder(spec) if spec else None


_DECODERS: dict[str, Any] = {}


def _load_decoder(spec: str):
    if spec not in _DECODERS:
        from corpusmill.transforms.decompose.tokenizer import load_tokenizer

        try:
            # tiktoken alone: decoding needs none of bpe-openai's worker processes.
            tokenizer = load_tokenizer(spec, encoder="tiktoken") if spec.startswith("tiktoken:") else load_tokenizer(spec)
            _DECODERS[spec] = tokenizer.decode
        except Exception:  # noqa: BLE001 - a tokenizer that does not load here only costs the excerpt
            _DECODERS[spec] = None
    return _DECODERS[spec]


def _shown(name: str, value: Any, decode=None) -> str:
    """One value cut to a line (two for token ids, the second decoded): a long text to its start
    and length, a long list to its first items and length."""
    if isinstance(value, str):
        if len(value) <= _TEXT_CHARS and "\n" not in value:
            return value
        return f"{json.dumps(textwrap.shorten(value, _TEXT_CHARS, placeholder=' …'), ensure_ascii=False)}" \
               f"  ({len(value):,} characters)"
    if isinstance(value, list):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if ints and "token" in name and value:
            head = " ".join(str(v) for v in value[:_HEAD_IDS]) + (" …" if len(value) > _HEAD_IDS else "")
            line = f"{len(value):,} token ids: {head}"
            if decode is not None:
                try:
                    text = decode(value[:_DECODED_TOKENS])
                    line += "\ndecoded: " + json.dumps(
                        textwrap.shorten(text, _TEXT_CHARS, placeholder=" …") or text[:_TEXT_CHARS],
                        ensure_ascii=False)
                except Exception:  # noqa: BLE001 - ids the tokenizer does not know: no excerpt
                    pass
            return line
        if len(value) <= _HEAD_IDS and ints:
            return json.dumps(value)
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            head = " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:_HEAD_IDS // 2])
            return f"{len(value):,} numbers: {head}{' …' if len(value) > _HEAD_IDS // 2 else ''}"
        if len(value) > _HEAD_ITEMS or any(isinstance(v, str) and len(v) > _TEXT_CHARS for v in value):
            head = ", ".join(textwrap.shorten(str(v), 60, placeholder=" …") for v in value[:_HEAD_ITEMS])
            return f"{len(value):,} items: {head}{', …' if len(value) > _HEAD_ITEMS else ''}"
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        return f"{len(value):,} bytes: {value[:_HEAD_IDS].hex()}{'…' if len(value) > _HEAD_IDS else ''}"
    if value is None:
        return "null"
    return str(value)


def _show_rows(root: str, name: str, path: str, rows: int, decode=None) -> None:
    """Prints the first rows of one shard, one field a line, or why they cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(f"{root}/{path}") as handle:
            # An Arrow buffer, not a Python file: pyarrow's reader threads on a
            # Python file object can abort the process at exit.
            table = pq.read_table(pa.BufferReader(handle.read())).slice(0, rows)
        shown_rows = table.to_pylist()
    except Exception as error:  # noqa: BLE001 - a damaged shard is reported, not a crash
        print(f"\n{name}/ — {path} cannot be read: {type(error).__name__}: {error}")
        return
    print(f"\n{name}/ — first {table.num_rows} rows of {path}:")
    width = max((len(k) for k in table.schema.names), default=0)
    for number, row in enumerate(shown_rows, 1):
        print(f"  row {number}")
        for key, value in row.items():
            first, *more = _shown(key, value, decode).split("\n")
            print(f"    {key:<{width}}  {first}")
            for line in more:
                print(f"    {'':<{width}}  {line}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corpusmill`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger().addFilter(_DropBeamImportNoise())
    beam_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, beam_args = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    configure_logging(getattr(args, "quiet", False), getattr(args, "log_format", "text"))
    try:
        if args.command in ("run", "refresh", *STAGE_ONLY):
            return _run(args, beam_args)
        if args.command == "report":
            return _report(args)
        return _inspect(args)
    except BrokenPipeError:
        # The reader of our output went away (`corpusmill inspect DIR | head`): nothing
        # failed, there is only nobody left to print to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # noqa: BLE001 - report every failure with a non-zero status
        if getattr(args, "log_format", "text") == "json":
            log.error("run failed: %s: %s", type(error).__name__, error, exc_info=True,
                      extra={"corpusmill": {"event": "failed"}})
        else:
            traceback.print_exc()
            print(f"corpusmill: run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


# Commands that only read a snapshot (and write at most a report) and then leave
# without tearing the interpreter down: with pyarrow 25 and Beam loaded, a few
# per cent of exits aborted ("terminate called without an active exception",
# status 134) after all output was written, when native thread pools met
# interpreter shutdown.
_EXIT_WITHOUT_TEARDOWN = ("inspect", "report")


def console_main() -> None:
    """The ``corpusmill`` console script: ``main`` and its exit status."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] and argv[0] in _EXIT_WITHOUT_TEARDOWN:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # e.g. a closed pipe (`| head`): nothing left to tell it
                pass
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
