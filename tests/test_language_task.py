"""LanguageModelTask: loss and accuracy against references, epoch pooling, tiny end-to-end fits."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from experiments.data.modadd import ModularAdditionDataModule
from experiments.data.text import TextDataModule
from experiments.models.gpt import gpt2
from experiments.tasks.language import LanguageModelTask, TokenStats, inputs_and_labels


@pytest.fixture
def task():
    torch.manual_seed(0)
    return LanguageModelTask(gpt2(vocab_size=20, n_layer=1, n_head=2, n_embd=16, n_positions=10))


def test_loss_matches_the_hugging_face_shifted_loss(task):
    ids = torch.randint(0, 20, (3, 10))
    labels = ids.clone()
    labels[:, :4] = -100
    loss_sum, _, count = task.token_sums({"input_ids": ids, "labels": labels})
    reference = task.net(ids, labels=labels).loss
    assert count == 3 * 6
    torch.testing.assert_close(loss_sum / count, reference, atol=1e-6, rtol=1e-6)


def test_accuracy_counts_argmax_hits_on_scored_tokens_only(task):
    ids = torch.randint(0, 20, (4, 6))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    _, correct, count = task.token_sums((ids, labels))
    with torch.no_grad():
        predicted = task.net(ids).logits[:, 2].argmax(-1)
    assert count == 4
    assert correct == int((predicted == ids[:, 3]).sum())


def test_loss_mask_is_the_same_as_ignored_labels(task):
    ids = torch.randint(0, 20, (2, 8))
    mask = torch.zeros_like(ids)
    mask[:, 5:] = 1
    labels = ids.masked_fill(mask == 0, -100)
    by_mask = task.token_sums({"input_ids": ids, "loss_mask": mask})
    by_labels = task.token_sums({"input_ids": ids, "labels": labels})
    assert all(torch.equal(a, b) for a, b in zip(by_mask, by_labels))


def test_plain_tensor_batches_score_every_next_token(task):
    ids = torch.randint(0, 20, (2, 7))
    input_ids, labels = inputs_and_labels(ids)
    assert input_ids is ids and labels is ids
    loss_sum, _, count = task.token_sums(ids)
    logits = task(ids)[:, :-1]
    reference = F.cross_entropy(logits.reshape(-1, 20), ids[:, 1:].reshape(-1), reduction="sum")
    assert count == 12
    torch.testing.assert_close(loss_sum, reference)


def test_token_stats_pool_batches_by_token_count():
    stats = TokenStats()
    stats.update(torch.tensor(6.0), torch.tensor(1), torch.tensor(3))
    stats.update(torch.tensor(2.0), torch.tensor(1), torch.tensor(1))
    values = stats.compute()
    assert values["loss"].item() == pytest.approx(2.0)
    assert values["acc"].item() == pytest.approx(0.5)
    assert values["ppl"].item() == pytest.approx(math.exp(2.0), rel=1e-6)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and 2 OpenMP threads crawl on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_trainer(steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_char_text_end_to_end_beats_its_start(one_thread):
    pl.seed_everything(0, verbose=False)
    data = TextDataModule(context_length=32, batch_size=16)
    net = gpt2(vocab_size=data.vocab_size, n_layer=1, n_head=2, n_embd=32, n_positions=32)
    task = LanguageModelTask(net, optimizer="adamw", lr=3e-3)
    trainer = tiny_trainer(30, limit_val_batches=4, limit_test_batches=4, val_check_interval=15)
    before = trainer.test(task, data, verbose=False)[0]
    trainer.fit(task, data)
    for key in ("train/loss", "val/loss", "val/acc", "val/ppl"):
        assert key in trainer.callback_metrics
    after = trainer.test(task, data, verbose=False)[0]
    assert set(after) >= {"test/loss", "test/acc", "test/ppl"}
    assert after["test/loss"] < before["test/loss"] - 0.5
    assert after["test/ppl"] == pytest.approx(math.exp(after["test/loss"]), rel=1e-4)


def test_modular_addition_end_to_end_learns_the_training_set(one_thread):
    pl.seed_everything(0, verbose=False)
    data = ModularAdditionDataModule(p=11, train_fraction=0.5)
    net = gpt2(vocab_size=data.vocab_size, n_layer=1, n_head=2, n_embd=32, n_positions=4)
    task = LanguageModelTask(net, optimizer="adamw", lr=1e-2)
    trainer = tiny_trainer(40, check_val_every_n_epoch=20)
    start = trainer.validate(task, data, verbose=False)[0]
    trainer.fit(task, data)
    assert trainer.callback_metrics["train/loss"] < 0.5 * start["val/loss"]
    result = trainer.test(task, data, verbose=False)[0]
    ids = data.test_set.tensors[0]
    with torch.no_grad():
        predicted = task(ids[:, :3])[:, 2].argmax(-1)
    assert result["test/acc"] == pytest.approx(
        float((predicted == ids[:, 3]).float().mean()), abs=1e-6
    )


def test_error_rate_is_one_minus_the_test_accuracy_lightning_reports(task):
    """The instability branch's evaluation (Task.error_rate) against Lightning's own test loop."""
    ids = torch.randint(0, 20, (12, 10))
    labels = ids.clone()
    labels[:5, :3] = -100  # unequal scored tokens per batch: the rate must weight by tokens
    loader = torch.utils.data.DataLoader(list(zip(ids, labels)), batch_size=5)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    acc = trainer.test(task, dataloaders=loader, verbose=False)[0]["test/acc"]
    assert task.error_rate(loader, torch.device("cpu")) == pytest.approx(1 - acc, abs=1e-6)


def test_chance_is_the_most_frequent_label_among_the_scored_ones():
    from experiments.tasks.base import MajorityChance

    chance = MajorityChance(5)
    chance.update(torch.tensor([[-100, 1, 1], [-100, 2, 1]]))
    chance.update(torch.tensor([3, -100]))
    assert float(chance.compute()) == pytest.approx(3 / 5)
