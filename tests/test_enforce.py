import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from experiments.models.mlp import MLP
from experiments.tasks.classification import ClassificationTask
from lth.enforce import MaskCallback, MaskEnforcer
from lth.masks import full_mask
from lth.pruning import magnitude_prune


def _pruned(model):
    names = ["0.weight", "2.weight"]
    return magnitude_prune(dict(model.named_parameters()), full_mask(model, names), 0.6)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3),
])
def test_pruned_weights_grads_and_moments_stay_zero(make_opt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    mask = _pruned(model)
    opt = make_opt(model.parameters())
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply_to_weights()
    enforcer.attach(opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(25):
        x = torch.randn(32, 6)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (32,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        params = dict(model.named_parameters())
        for name, m in mask.items():
            p = params[name]
            assert (p[~m] == 0).all()
            assert (p.grad[~m] == 0).all()
            for value in opt.state[p].values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    assert (value[~m] == 0).all()
    params = dict(model.named_parameters())
    for name, m in mask.items():  # survivors did train
        assert not torch.equal(params[name][m], before[name][m])
    assert all(type(v) is torch.Tensor for v in model.state_dict().values())
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in model.state_dict())


def test_mask_callback_in_lightning_fit():
    torch.manual_seed(0)
    task = ClassificationTask(MLP(in_features=6, hidden=[12], num_classes=3), lr=1e-2)
    names = ["hidden.0.weight", "out.weight"]
    mask = magnitude_prune(dict(task.net.named_parameters()), full_mask(task.net, names), 0.5)
    data = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    trainer = pl.Trainer(max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[MaskCallback(mask)])
    trainer.fit(task, train_dataloaders=loader)
    params = dict(task.net.named_parameters())
    for name, m in mask.items():
        assert (params[name][~m] == 0).all()
        assert (params[name][m] != 0).all()
