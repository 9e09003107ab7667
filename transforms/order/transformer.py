"""The sentence-transformers embedder: a transformer's embedding of each document's first tokens (Beam-free).

The paper embedded each document's first 510 tokens with contriever; here any
sentence-transformers model, from a local folder or a hub name, embeds the
first ``max_seq_length`` tokens (default 256). torch and sentence-transformers
are imported only when such an embedder is built (``pip install
corpusmill[embed]``), so the rest of the package never needs them.

Two things make it cheaper than ``SentenceTransformer.encode`` with the same
vectors (within float tolerance):

* Long documents are cut, before tokenizing, at the last space or newline within
  ``prefix_chars_per_token * max_seq_length`` characters. Tokenizers that split
  words at whitespace (WordPiece, BPE and Unigram models of sentence-transformers
  alike) give the whole-word prefix a prefix of the full text's tokens; where
  the cut text does not fill ``max_seq_length`` tokens, the document is tokenized
  again whole, so truncation still happens only at the token limit.
* Each call sorts its texts by length so that a batch pads to similar lengths;
  rows come back in input order.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` where torch sees a GPU, else ``cpu``; others are checked.

    Raises:
        ValueError: For a device other than auto, cpu, cuda or cuda:N.
        RuntimeError: For cuda without a GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return device


def whitespace_prefix(text: str, max_chars: int) -> str:
    """The text up to its last space or newline within ``max_chars`` characters (whole if shorter).

    A text with neither there is returned whole: cutting inside a word could
    change that word's tokens.
    """
    if len(text) <= max_chars:
        return text
    cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
    return text[:cut] if cut > 0 else text


def weights_digest(folder: Path) -> str:
    """sha256 of a model folder's weight files (names and bytes), for the fingerprint."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.suffix in {".safetensors", ".bin", ".pt", ".onnx"} and path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """A sentence-transformers model's L2-normalised embedding of each text's first tokens.

    Implements ``corpusmill.transforms.order.embedders.Embedder``. Build one per
    worker (it loads the model); ``embed`` is not meant to be called from
    several threads at once.
    """

    name = "st"

    def __init__(self, model: str, device: str = "auto", max_seq_length: int = 256, batch_size: int = 64,
                 prefix_chars_per_token: int = 8):
        """Loads the model.

        Args:
            model: A local folder, or a hub name (downloaded once, which needs the network).
            device: ``auto`` (cuda where available), ``cpu``, ``cuda`` or ``cuda:N``.
                On cuda the model runs in float16.
            max_seq_length: Tokens embedded per text, special tokens included.
            batch_size: Texts per forward pass.
            prefix_chars_per_token: Characters kept per token before tokenizing
                (see the module docstring); 0 tokenizes whole texts.
        """
        import torch
        from sentence_transformers import SentenceTransformer

        if max_seq_length < 2 or batch_size < 1 or prefix_chars_per_token < 0:
            raise ValueError("max_seq_length >= 2, batch_size >= 1 and prefix_chars_per_token >= 0 are needed")
        self.model_name = model
        self.device = resolve_device(device)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.prefix_chars = prefix_chars_per_token * max_seq_length
        self.model = SentenceTransformer(model, device=self.device)
        self.model.max_seq_length = max_seq_length
        if self.device.startswith("cuda"):
            self.model.half()
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._torch = torch
        self._weights = weights_digest(Path(model)) if os.path.isdir(model) else "hub"

    @property
    def spec(self) -> str:
        return f"st:{self.model_name}"

    @property
    def fingerprint(self) -> str:
        dtype = "fp16" if self.device.startswith("cuda") else "fp32"
        return (f"st:v1:{self.model_name}:weights={self._weights}:dim={self.dim}"
                f":max_seq_length={self.max_seq_length}:{dtype}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: Documents (str).

        Returns:
            float32 ``(len(texts), dim)``, rows of unit L2 norm, in input order;
            a text that is empty or all whitespace gets a zero row.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        nonempty = [i for i, text in enumerate(texts) if text.strip()]
        cut = [whitespace_prefix(texts[i], self.prefix_chars) if self.prefix_chars else texts[i] for i in nonempty]
        vectors, filled = self._embed_sorted(cut)
        out[nonempty] = vectors
        # A cut that left fewer tokens than the limit may have dropped tokens the
        # whole text would have had: those texts are embedded again, whole.
        redo = [k for k in range(len(nonempty)) if not filled[k] and len(cut[k]) < len(texts[nonempty[k]])]
        if redo:
            again, _ = self._embed_sorted([texts[nonempty[k]] for k in redo])
            out[[nonempty[k] for k in redo]] = again
        return out

    def _embed_sorted(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings in input order, and whether each text filled ``max_seq_length`` tokens."""
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        filled = np.zeros(len(texts), dtype=bool)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                features = preprocess([texts[i] for i in rows])
                mask = features.get("attention_mask")
                if mask is not None:  # without one (flattened inputs) no cut text counts as filled
                    filled[rows] = (mask.sum(dim=1) >= self.max_seq_length).numpy()
                features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
                embedding = self.model(features)["sentence_embedding"].float()
                # Normalised here in float32, whether or not the model ends in a Normalize module.
                embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
                vectors[rows] = embedding.cpu().numpy()
        return vectors, filled
