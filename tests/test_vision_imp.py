"""The published vision recipes: each config parses and runs a 2-level IMP at toy size."""
import json

import pytest

from experiments.cli import main
from experiments.data.synthetic_vision import write_cifar10, write_mnist
from lth.masks import density, load_mask

CONFIGS = {
    "mnist_lenet300_imp": ("mnist", {"width": 0.05}),
    "cifar10_conv2_imp": ("cifar", {"width": 0.125}),
    "cifar10_conv4_imp": ("cifar", {"width": 0.125}),
    "cifar10_conv6_imp": ("cifar", {"width": 0.125}),
    "cifar10_resnet20_imp": ("cifar", {"width": 0.25}),
    "cifar10_vgg16_imp": ("cifar", {"width": 0.0625}),
}
BATCHNORM = {"cifar10_resnet20_imp", "cifar10_vgg16_imp"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_recipe_runs_two_levels_at_toy_size(name, tmp_path):
    kind, net_args = CONFIGS[name]
    (write_mnist if kind == "mnist" else write_cifar10)(tmp_path / "data")
    run = tmp_path / "run"
    args = ["imp", "--config", f"configs/{name}.yaml", "--run_dir", str(run),
            "--data.init_args.root", str(tmp_path / "data"), "--data.init_args.val_size", "8",
            "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
            "--data.init_args.probe_size", "8",
            "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
            "--imp.levels", "2", "--imp.rewind_step", "1", "--imp.branches", '["random_prune", "instability"]',
            "--imp.branch_levels", "[2]", "--spectra.every_n_steps", "2", "--spectra.probe_size", "8",
            "--spectra.jacobian_probe_size", "2", "--wandb.mode", "disabled"]
    for key, value in net_args.items():
        args += [f"--model.init_args.net.init_args.{key}", str(value)]
    assert main(args) == 0
    for level in (0, 1, 2):
        metrics = json.loads((run / f"level_{level:02d}" / "metrics.json").read_text())
        assert 0.0 <= metrics["test"]["test/acc"] <= 1.0
    assert density(load_mask(run / "level_02" / "mask.safetensors")) < density(load_mask(run / "level_01" / "mask.safetensors")) < 1
    assert (run / "level_02" / "spectra.npz").is_file()
    assert (run / "branches" / "random_prune" / "level_02" / "DONE").is_file()
    for level in (0, 2):  # BatchNorm nets (ResNet-20, VGG-16) recompute statistics along the line
        line = json.loads((run / "branches" / "instability" / f"level_{level:02d}" / "metrics.json").read_text())
        errors = line["instability"]["errors"]
        assert len(errors) == 11 and all(0.0 <= e <= 1.0 for e in errors)
        test_acc = json.loads((run / f"level_{level:02d}" / "metrics.json").read_text())["test"]["test/acc"]
        if name not in BATCHNORM:  # with BatchNorm every point, ends included, gets recomputed statistics
            assert errors[0] == pytest.approx(1 - test_acc, abs=1e-6)


def test_missing_dataset_is_one_line_exit_2(tmp_path, capsys):
    code = main(["imp", "--config", "configs/cifar10_conv2_imp.yaml", "--run_dir", str(tmp_path / "run"),
                 "--data.init_args.root", str(tmp_path / "nothing"), "--wandb.mode", "disabled"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cifar-10-batches-py" in err
