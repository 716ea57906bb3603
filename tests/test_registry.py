"""Named datasets: resolution against a fake mirror, the real mirror (if present), storyworld splits."""
from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from lmlab.data import registry
from lmlab.data.formats import ChatRecord, FeedbackRecord, LabelledRecord, Message, PreferenceRecord
from lmlab.data.loaders import load_records, load_rows, load_texts
from lmlab.errors import DataError

REAL_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A mirror with the real layout but a few tiny files."""
    root = tmp_path / "mirror"
    (root / "tinystories").mkdir(parents=True)
    (root / "tinystories" / "TinyStories-train.head.txt").write_text("Tom ran.\nHe fell.\n\nMia sang.\n")
    (root / "imdb").mkdir()
    (root / "imdb" / "imdb_reviews.csv").write_text('review,sentiment\n"Great, fun film",positive\nDull,negative\n')
    (root / "chinese-poetry").mkdir()
    with gzip.open(root / "chinese-poetry" / "quan_tang_shi.poet.tang.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"author": "李白", "title": "靜夜思", "paragraphs": ["床前明月光，", "疑是地上霜。"]}, ensure_ascii=False) + "\n")
    (root / "preference").mkdir()
    pair = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"}}
    (root / "preference" / "dpo_en_demo.json").write_text(json.dumps([pair]))
    monkeypatch.setenv(registry.ENV, str(root))
    return root


def test_fake_mirror_resolution(fake_mirror):
    src = registry.resolve("tinystories", "train")
    assert src.kind == "mirror" and src.path == fake_mirror / "tinystories/TinyStories-train.head.txt"
    assert load_texts("tinystories") == ["Tom ran.\nHe fell.", "Mia sang."]
    assert load_records("imdb", "labelled") == [LabelledRecord("Great, fun film", "positive"), LabelledRecord("Dull", "negative")]
    assert load_texts("chinese-poetry") == ["靜夜思\n床前明月光，\n疑是地上霜。"]
    assert load_records("dpo-en", "preference")[0].chosen == "good"
    assert registry.where_now("tinystories") == ("mirror: train=tinystories/TinyStories-train.head.txt; "
                                                 "not on the mirror: validation")


def test_mirror_missing_file_says_which_and_how(fake_mirror):
    with pytest.raises(DataError) as err:
        load_texts("tinystories", split="validation")
    msg = str(err.value)
    assert "tinystories/TinyStoriesV2-GPT4-valid.part1.txt" in msg and "LMLAB_DATA_DIR=<path to a mirror>" in msg


def test_unknown_split_lists_splits(fake_mirror):
    with pytest.raises(DataError, match=r"dataset 'dpo-en' has no split 'test' .*splits: train\)"):
        registry.resolve_path("dpo-en", "test")
    with pytest.raises(DataError, match=r"no split 'valid'; did you mean 'validation'"):
        registry.resolve_path("ptb", "valid")


def test_no_mirror_falls_back_to_hub_or_explains(monkeypatch):
    monkeypatch.delenv(registry.ENV, raising=False)
    assert registry.resolve("hh-rlhf").hub == "Anthropic/hh-rlhf"
    assert registry.resolve("imdb").kind == "hub"
    with pytest.raises(DataError, match=r"set LMLAB_DATA_DIR=<path to a mirror> holding chinese-poetry/"):
        registry.resolve("chinese-poetry")
    with pytest.raises(DataError, match=r"needs a local mirror: set LMLAB_DATA_DIR"):
        registry.resolve_path("mmlu", "test")


def test_unknown_name_closest():
    with pytest.raises(DataError, match="unknown dataset 'alpaka'; did you mean 'alpaca'"):
        registry.get("alpaka")


def test_eval_sets_resolve_to_paths(fake_mirror):
    (fake_mirror / "eval" / "gsm8k").mkdir(parents=True)
    (fake_mirror / "eval" / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    assert registry.resolve_path("gsm8k", "test") == fake_mirror / "eval/gsm8k/test.jsonl"
    assert load_rows("gsm8k", split="test")[0][1]["answer"] == "#### 2"


# -- every hub split has a documented mirror path; a missing one says where; no substitutes -------------
HUB_SPLITS = {  # the splits each hub dataset has, and the mirror path the registry documents for each
    "ptb": {"train": "ptb/ptb.train.txt", "validation": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"},
    "wikitext2": {"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt", "test": "wikitext-2/test.txt"},
    "openbookqa": {"train": "eval/openbookqa/train.tsv", "validation": "eval/openbookqa/dev.tsv",
                   "test": "eval/openbookqa/test.tsv"},
    "hh-rlhf": {"train": "preference/hh-rlhf/train.jsonl.gz", "test": "preference/hh-rlhf/test.jsonl.gz"},
    "hh-rlhf/helpful-base": {"train": "preference/hh-rlhf/helpful-base/train.jsonl.gz",
                             "test": "preference/hh-rlhf/helpful-base/test.jsonl.gz"},
    "gsm8k": {"train": "eval/gsm8k/train.jsonl", "test": "eval/gsm8k/test.jsonl"},
}


@pytest.mark.parametrize("name", sorted(HUB_SPLITS))
def test_every_hub_split_has_a_documented_mirror_path(name, fake_mirror):
    assert registry.splits(name) == list(HUB_SPLITS[name])
    for split, rel in HUB_SPLITS[name].items():
        assert registry.expected_files(name, split)[0] == rel
        assert registry.mirror_file(name, split) is None
        with pytest.raises(DataError) as err:  # missing: names the full path to put the file at
            registry.resolve_path(name, split)
        assert f"put the file at {fake_mirror / rel}" in str(err.value)
        (fake_mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake_mirror / rel).write_text("x\n")
        assert registry.resolve_path(name, split) == fake_mirror / rel  # present: found


def test_ptb_and_wikitext_train_files_are_read_when_present(fake_mirror):
    (fake_mirror / "ptb").mkdir()
    (fake_mirror / "ptb" / "ptb.valid.txt").write_text(" a b \n c d \n")
    with pytest.raises(DataError) as err:
        load_texts("ptb")
    msg = str(err.value)
    assert f"put the file at {fake_mirror / 'ptb/ptb.train.txt'}" in msg and "use ptb@validation" in msg
    (fake_mirror / "ptb" / "ptb.train.txt").write_text(" the cat \n sat down \n")
    assert load_texts("ptb") == ["the cat", "sat down"]  # one sentence a line
    (fake_mirror / "wikitext-2").mkdir()
    (fake_mirror / "wikitext-2" / "train.txt").write_text(" = Title = \n one para \n")
    assert load_texts("wikitext2") == ["= Title =", "one para"]


def test_the_full_file_wins_over_its_documented_slice(fake_mirror):
    full = fake_mirror / "tinystories" / "TinyStories-train.txt"
    full.write_text("Tom ran.\n\nMia sang.\n\nBo hid.\n")
    assert registry.resolve("tinystories").path == full
    assert load_texts("tinystories") == ["Tom ran.", "Mia sang.", "Bo hid."]


def hh_rows():
    """Two Anthropic-format rows (whole transcripts; only the last assistant turn differs)."""
    return [
        {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5."},
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name a fruit\n\nAssistant: An apple.",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name a fruit\n\nAssistant: A rock."},
    ]


def test_hh_rlhf_never_resolves_to_another_dataset(fake_mirror):
    """The mirror holds dpo_en_demo.json (once hh-rlhf's substitute) but no hh-rlhf file: an error, not dpo-en."""
    with pytest.raises(DataError) as err:
        load_records("hh-rlhf", "preference")
    assert f"put the file at {fake_mirror / 'preference/hh-rlhf/train.jsonl.gz'}" in str(err.value)
    for name, ds in registry.DATASETS.items():  # no two names share a mirror file
        others = {p for n, d in registry.DATASETS.items() if n != name for ps in d.files.values() for p in ps}
        assert not {p for ps in ds.files.values() for p in ps} & others, name


def test_hh_rlhf_mirror_files_gz_and_plain(fake_mirror):
    folder = fake_mirror / "preference" / "hh-rlhf"
    folder.mkdir(parents=True)
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in hh_rows())
    (folder / "test.jsonl").write_text(json.dumps(hh_rows()[0]) + "\n")
    recs = load_records("hh-rlhf", "preference")
    assert recs == [
        PreferenceRecord([Message("user", "What is 2+2?")], "4.", "5."),
        PreferenceRecord([Message("user", "hi"), Message("assistant", "hello"), Message("user", "name a fruit")],
                         "An apple.", "A rock."),
    ]
    assert load_records("hh-rlhf@test", "preference") == recs[:1]
    with pytest.raises(DataError, match=r"put the file at .*helpful-base/train\.jsonl\.gz"):  # a subset is its own name
        load_records("hh-rlhf/helpful-base", "preference")


def test_hh_rlhf_subset_from_the_hub_loads_its_folder(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kw):
        calls.append((name, config, split, kw))
        return hh_rows()[:1]

    monkeypatch.delenv(registry.ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_records("hh-rlhf/harmless-base@test", "preference")[0].chosen == "4."
    assert calls == [("Anthropic/hh-rlhf", None, "test", {"data_dir": "harmless-base"})]


# -- storyworld, with a fake generator so the split logic is tested on its own ----------------------------
def fake_make_dataset(task, n, seed):
    if task == "pretrain":
        return [{"text": f"story {seed + i}"} for i in range(n)]
    if task == "prefs":
        return [{"prompt": f"p{seed + i}", "chosen": "c", "rejected": "r"} for i in range(n)]
    if task == "kto":
        return [{"prompt": f"p{seed + i}", "completion": "c", "label": i % 2 == 0} for i in range(n)]
    if task == "instruct":
        return [{"messages": [{"role": "user", "content": f"u{seed + i}"}, {"role": "assistant", "content": "a"}]}
                for i in range(n)]
    return [{"prompt": f"p{seed + i}", "completion": "c"} for i in range(n)]


@pytest.fixture
def fake_storyworld(monkeypatch):
    from lmlab.data import storyworld

    calls = []

    def make(task, n, seed):
        calls.append((task, n, seed))
        return fake_make_dataset(task, n, seed)

    monkeypatch.setattr(storyworld, "make_dataset", make, raising=False)
    return calls


def test_storyworld_sizes_seeds_and_kinds(fake_storyworld):
    train = load_texts("storyworld/pretrain", limit=5)
    assert fake_storyworld[-1] == ("pretrain", 5, 0)  # limit bounds generation
    val = load_texts("storyworld/pretrain", split="validation", limit=5)
    assert fake_storyworld[-1] == ("pretrain", 5, registry.SPLIT_SEED_OFFSET["validation"])
    assert not set(train) & set(val)
    load_records("storyworld/instruct", "chat", split="test")
    assert fake_storyworld[-1] == ("instruct", 400, registry.SPLIT_SEED_OFFSET["test"])  # a tenth of 4000
    load_records("storyworld/prefs", "preference", n=7, seed=3)
    assert fake_storyworld[-1] == ("prefs", 7, 3)
    assert isinstance(load_records("storyworld/kto", "feedback", limit=2)[0], FeedbackRecord)
    assert isinstance(load_records("storyworld/qa", "chat", limit=2)[0], ChatRecord)
    assert isinstance(load_records("storyworld/prefs", "preference", limit=2)[0], PreferenceRecord)
    assert {registry.get(f"storyworld/{t}").kind for t in registry.STORYWORLD_SIZES} <= {"text", "chat", "preference", "feedback"}


def test_storyworld_offsets_are_far_apart():
    offsets = sorted(registry.SPLIT_SEED_OFFSET.values())
    assert all(b - a > 1_000_000 for a, b in itertools.pairwise(offsets))


def test_real_storyworld_splits_are_disjoint():
    train = load_texts("storyworld/pretrain", limit=300)
    val = load_texts("storyworld/pretrain", split="validation", limit=300)
    assert len(set(train)) > 250 and not set(train) & set(val)


# -- the real mirror -----------------------------------------------------------------------------------------
real = pytest.mark.skipif(not (REAL_MIRROR / "MANIFEST.md").exists(), reason="shared/data mirror not present")


@real
def test_real_mirror_holds_the_splits_its_manifest_lists(monkeypatch):
    """Every registered split has a documented path; the development mirror holds exactly these."""
    monkeypatch.setenv(registry.ENV, str(REAL_MIRROR))
    held = {name: registry.present_splits(name) for name in registry.DATASETS if not name.startswith("storyworld/")}
    assert held["ptb"] == held["wikitext2"] == ["validation", "test"]  # no train file (too large to mirror)
    assert held["openbookqa"] == ["train", "validation"]  # test.tsv is held out
    assert held["tinystories"] == ["train", "validation"] and held["gsm8k"] == ["train", "test"]
    assert held["hh-rlhf"] == [] and held["dpo-en"] == ["train"]
    for name, splits in held.items():
        for split in splits:
            assert registry.resolve_path(name, split).exists(), (name, split)


@real
def test_real_mirror_loads_with_expected_counts(monkeypatch):
    monkeypatch.setenv(registry.ENV, str(REAL_MIRROR))
    assert len(load_records("alpaca", "chat")) == 999  # MANIFEST: 999 rows
    assert len(load_records("dpo-en", "preference")) == 300
    kto = load_records("kto-en", "feedback")
    assert len(kto) == 300 and {r.label for r in kto} == {True, False}
    imdb = load_records("imdb", "labelled")
    assert len(imdb) == 2500 and sum(r.label == "positive" for r in imdb) == 1250
    assert len(load_texts("ptb", split="validation")) == 3370  # one sentence a line
    assert len(load_rows("mmlu", split="test")) == 14042
    poems = load_texts("chinese-poetry", limit=3)
    assert poems[0].startswith("帝京篇十首 一\n秦川雄帝宅")


def test_hub_rows_go_through_the_same_normalisers(monkeypatch):
    """No mirror: hh-rlhf comes from the hub; its whole-dialogue rows become preference records."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away",
                 "text": "hi"}]

    monkeypatch.delenv(registry.ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs = load_records("hh-rlhf", "preference")
    assert calls == [("Anthropic/hh-rlhf", None, "train")]
    assert recs == [PreferenceRecord([Message("user", "hi")], "hello!", "go away")]
    # an unregistered 'owner/name:config' goes to the hub with its config and split
    assert load_texts("someone/set:cfg", split="validation") == ["hi"]
    assert calls[-1] == ("someone/set", "cfg", "validation")
