"""Text data: corpus sources, round-tripping tokenizers, a partitioning split, unigram baseline."""

import math
from collections import Counter
from pydoc_data.topics import topics

import pytest
import torch

from experiments.data.text import TextDataModule
from lth.errors import LTCError

TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 40
    + "Pack my box with five dozen liquor jugs.\n" * 40
)


PYDOC_TEXT = "\n\n".join(topics[k] for k in sorted(topics))


@pytest.fixture(scope="module")
def default_corpus():
    return TextDataModule(context_length=64, probe_size=8)


def rows(blocks: torch.Tensor) -> Counter:
    return Counter(tuple(r) for r in blocks.tolist())


def test_default_corpus_is_pydoc_topics_split_90_5_5(default_corpus):
    data = default_corpus
    assert data.vocab_size == len(set(PYDOC_TEXT))
    n_blocks = len(PYDOC_TEXT) // 64
    assert len(data.val_blocks) == len(data.test_blocks) == math.ceil(0.05 * n_blocks)
    assert len(data.train_blocks) + 2 * len(data.val_blocks) == n_blocks
    assert data.train_blocks.shape[1] == 64


def test_blocks_partition_the_contiguous_token_stream(default_corpus):
    data = default_corpus
    ids = torch.tensor(data.tokenizer.encode(PYDOC_TEXT))
    expected = rows(ids[: len(ids) // 64 * 64].view(-1, 64))
    assert rows(data.train_blocks) + rows(data.val_blocks) + rows(data.test_blocks) == expected


def test_char_tokenizer_round_trips_and_rejects_unknown_characters(default_corpus):
    tokenizer = default_corpus.tokenizer
    sample = "def f(x):\n    return x ** 2  # squares"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    with pytest.raises(LTCError, match="not in the vocabulary"):
        tokenizer.encode("日本")


def test_probe_inputs_are_fixed_validation_blocks(default_corpus):
    data = default_corpus
    assert torch.equal(data.probe_inputs(), data.val_blocks[:8])
    assert data.probe_inputs(3).shape == (3, 64)


def test_bpe_trains_offline_and_round_trips(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    data = TextDataModule(
        path=str(tmp_path / "corpus.txt"), tokenizer="bpe", vocab_size=300, context_length=8
    )
    assert 256 < data.vocab_size <= 300
    for sample in [TEXT[:200], "naïve café — 日本語, unseen words"]:
        assert data.tokenizer.decode(data.tokenizer.encode(sample)) == sample
    assert len(data.tokenizer.encode(TEXT)) < len(TEXT.encode("utf-8")) / 2


def test_directory_reads_every_visible_file_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("b" * 100, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("c" * 100, encoding="utf-8")
    (tmp_path / "a.txt").write_text("a" * 100, encoding="utf-8")
    (tmp_path / ".hidden").write_text("z" * 100, encoding="utf-8")
    data = TextDataModule(path=str(tmp_path), context_length=10)
    assert data.tokenizer.chars == ["\n", "a", "b", "c"]


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(LTCError, match="nope.txt"):
        TextDataModule(path=str(missing))


def test_text_too_short_for_three_splits_raises(tmp_path):
    (tmp_path / "short.txt").write_text("tiny", encoding="utf-8")
    with pytest.raises(LTCError, match="too few"):
        TextDataModule(path=str(tmp_path / "short.txt"), context_length=2)


def test_split_follows_the_seed(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    first, again, other = (
        TextDataModule(path=str(tmp_path / "corpus.txt"), context_length=16, seed=s)
        for s in (0, 0, 1)
    )
    assert torch.equal(first.val_blocks, again.val_blocks)
    assert not torch.equal(first.val_blocks, other.val_blocks)


def test_unigram_loss_matches_a_counting_reference(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    data = TextDataModule(path=str(tmp_path / "corpus.txt"), context_length=16)
    counts = Counter(data.train_blocks.flatten().tolist())
    total, vocab = sum(counts.values()), data.vocab_size
    targets = data.val_blocks[:, 1:].flatten().tolist()
    expected = -sum(math.log((counts[t] + 1) / (total + vocab)) for t in targets) / len(targets)
    assert data.unigram_loss() == pytest.approx(expected, rel=1e-9)
    assert 0 < data.unigram_loss() < math.log(vocab)


def test_bad_tokenizer_arguments_raise():
    with pytest.raises(LTCError, match="tokenizer"):
        TextDataModule(tokenizer="words")
    with pytest.raises(LTCError, match="vocab_size"):
        TextDataModule(tokenizer="bpe", vocab_size=100)
