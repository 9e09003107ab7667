"""The corpora of ``order_bench.py``: linux-doc after dedup, and HTML documentation after dedup.

* ``linux-doc``: ``/work/corpora/linux-doc-x1.parquet`` (or any linux-doc 6.1 +
  6.12 Parquet, ``corpusmill.jobs.linux_doc``) through ``corpusmill run`` with
  decompose off, so only the kept documents remain.
* ``html-docs``: a corpus of another kind, so that nothing is tuned to
  linux-doc: the Debian packages ``python3.11-doc`` (Sphinx HTML) and
  ``postgresql-doc-15`` (DocBook HTML), one document per page, tags stripped to
  text (the Sphinx body, the DocBook page without its navigation header and
  footer), then the same ``corpusmill run``. About 1,700 pages.

    apt-get install -y python3.11-doc postgresql-doc-15

Both snapshots are built once into a folder outside the repository
(``--data``) and reused; ``read_kept`` reads a snapshot's ``docs/``.
``scaled_corpus`` makes the 2x and 4x corpora: every extra copy of a document
gets a few word-level edits (deleted, doubled, swapped or replaced words, about
2% of its words), so the copies are near duplicates, never exact ones.
"""

from __future__ import annotations

import html.parser
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

HTML_TREES = {
    "python-3.11": Path("/usr/share/doc/python3.11/html"),
    "postgresql-15": Path("/usr/share/doc/postgresql-doc-15/html"),
}
LINUX_DOC_INPUT = Path("/work/corpora/linux-doc-x1.parquet")
INSTALL_HINT = "apt-get install -y python3.11-doc postgresql-doc-15"

_SPHINX_BODY = re.compile(r'<div class="body" role="main">(.*?)<div class="sphinxsidebar"', re.S)
_DOCBOOK_NAVIGATION = re.compile(r'<div class="nav(?:header|footer)">.*?</div>', re.S)
_BLANK_RUNS = re.compile(r"\n\s*\n\s*")
_SPACES = re.compile(r"[ \t\r\f\v]+")


class _TextOf(html.parser.HTMLParser):
    """Collects the text of an HTML fragment: no script or style, block elements on their own lines."""

    BLOCKS = {"p", "div", "section", "li", "dt", "dd", "pre", "tr", "br", "h1", "h2", "h3", "h4", "h5",
              "h6", "table", "ul", "ol", "dl", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def html_page_text(page: str) -> str:
    """The readable text of one documentation page (Sphinx body, or DocBook without navigation)."""
    body = _SPHINX_BODY.search(page)
    fragment = body.group(1) if body else _DOCBOOK_NAVIGATION.sub("", page)
    parser = _TextOf()
    parser.feed(fragment)
    parser.close()
    text = _SPACES.sub(" ", "".join(parser.parts).replace("\u00b6", ""))
    return _BLANK_RUNS.sub("\n\n", "\n".join(line.strip() for line in text.split("\n"))).strip()


def html_docs_records(trees: dict[str, Path] = HTML_TREES) -> list[dict]:
    """One record per HTML page of the trees, in sorted path order; pages without text are skipped."""
    records = []
    for source, root in trees.items():
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is missing: {INSTALL_HINT}")
        for path in sorted(root.rglob("*.html")):
            relative = path.relative_to(root)
            if relative.parts[0].startswith("_"):  # Sphinx's _static, _sources, _downloads
                continue
            text = html_page_text(path.read_text(encoding="utf-8", errors="replace"))
            if text:
                records.append({"id": f"{source}/{relative}", "text": text, "source": source})
    return records


def _corpusmill_run(input_path: Path, output: Path) -> None:
    executable = Path(sys.executable).with_name("corpusmill")
    subprocess.run([str(executable), "run", "--input", str(input_path), "--output", str(output),
                    "--set", "decompose.enabled=false", "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)


def ensure_snapshots(data: Path, linux_doc_input: Path = LINUX_DOC_INPUT) -> dict[str, Path]:
    """Builds (once) the deduplicated snapshots of both corpora under ``data``; returns name -> folder."""
    data.mkdir(parents=True, exist_ok=True)
    snapshots = {"linux-doc": data / "linux-doc-dedup", "html-docs": data / "html-docs-dedup"}
    if not (snapshots["linux-doc"] / "_SUCCESS").exists():
        _corpusmill_run(linux_doc_input, snapshots["linux-doc"])
    if not (snapshots["html-docs"] / "_SUCCESS").exists():
        raw = data / "html-docs.jsonl"
        raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in html_docs_records()))
        _corpusmill_run(raw, snapshots["html-docs"])
    return snapshots


def read_kept(snapshot: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a snapshot's kept documents, sorted by id (the natural order)."""
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((Path(snapshot) / "docs").glob("*.parquet")), columns=["id", "text"])
    table = table.sort_by("id")
    return table.column("id").to_pylist(), table.column("text").to_pylist()


def perturbed_copy(text: str, rng: np.random.Generator, rate: float = 0.02) -> str:
    """``text`` with about ``rate`` of its space-separated words deleted, doubled, swapped or replaced."""
    words = text.split(" ")
    for _ in range(max(1, round(rate * len(words)))):
        if len(words) < 2:
            words.append(words[0])
            continue
        i = int(rng.integers(len(words) - 1))
        edit = int(rng.integers(4))
        if edit == 0:
            del words[i]
        elif edit == 1:
            words.insert(i, words[i])
        elif edit == 2:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[i] = words[int(rng.integers(len(words)))]
    return " ".join(words)


def scaled_corpus(ids: list[str], texts: list[str], copies: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """The corpus and ``copies - 1`` perturbed copies under ids ``copy<c>/<id>``, sorted by id."""
    out_ids, out_texts = list(ids), list(texts)
    for copy in range(1, copies):
        for index, (doc_id, text) in enumerate(zip(ids, texts)):
            out_ids.append(f"copy{copy}/{doc_id}")
            out_texts.append(perturbed_copy(text, np.random.default_rng([seed, copy, index])))
    by_id = sorted(range(len(out_ids)), key=out_ids.__getitem__)
    return [out_ids[i] for i in by_id], [out_texts[i] for i in by_id]


if __name__ == "__main__":
    for name, folder in ensure_snapshots(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/bench-data")).items():
        ids, texts = read_kept(folder)
        print(f"{name}: {folder}: {len(ids):,} documents, {sum(map(len, texts)) / 1e6:.1f} M characters")
