"""`test/chance` beside `test/acc`: the accuracy of always predicting the test split's most frequent label."""
import pytorch_lightning as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiments.models.mlp import MLP
from experiments.tasks.classification import ClassificationTask


def test_a_classification_task_logs_the_majority_share_of_its_test_labels():
    y = torch.tensor([0, 2, 2, 1, 2, 0, 2, 2, 1, 0])  # label 2 is 5 of 10
    data = DataLoader(TensorDataset(torch.randn(10, 4), y), batch_size=3)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(ClassificationTask(MLP(4, [5], 3), num_classes=3), dataloaders=data, verbose=False)[0]
    assert tested["test/chance"] == pytest.approx(0.5)
    assert 0 <= tested["test/acc"] <= 1
