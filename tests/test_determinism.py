"""Determinism on the CPU: the same config and seed give the same run, bit for bit; the data
order and the in-step randomness are functions of (seed, step), which is what makes resumes exact."""
import torch

from experiments.cli import main
from lth.data_order import StepBatchSampler
from lth.callbacks import StepSeed
from lth.masks import load_mask
from tests.helpers import write_config
from tests.test_kill_resume import RECIPE, results


def test_same_config_and_seed_give_identical_runs(tmp_path):
    cfg = write_config(tmp_path, **{**RECIPE, "imp": {**RECIPE["imp"], "levels": 1}})
    for name in ("a", "b"):
        assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / name)]) == 0
    first, second = results(tmp_path / "a"), results(tmp_path / "b")
    assert {"level_01/mask.safetensors", "level_01/weights.safetensors", "level_01/spectra.npz",
            "branches/random_prune/level_01/weights.safetensors", "rewind.safetensors"} <= set(first)
    assert first == second
    # and the seed matters: another one gives another init and another ticket
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "c"), "--seed_everything", "1",
                 "--imp.branches", "[]"]) == 0
    assert results(tmp_path / "c")["init.safetensors"] != first["init.safetensors"]
    a, c = load_mask(tmp_path / "a/level_01/mask.safetensors"), load_mask(tmp_path / "c/level_01/mask.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_sampler_resumed_at_any_step_yields_the_remaining_batches():
    full = StepBatchSampler(size=50, batch_size=8, seed=3, total_steps=20)
    batches = list(full)
    assert len(batches) == len(full) == 20
    assert sorted(i for b in batches[:6] for i in b[:2]) != list(range(12))  # shuffled
    for start in (1, 6, 7, 19):
        resumed = StepBatchSampler(size=50, batch_size=8, seed=3, total_steps=20)
        resumed.start_step = start
        assert list(resumed) == batches[start:]
        assert len(resumed) == 20  # Lightning counts the resumed epoch from the checkpoint's batch index


def test_ranks_split_each_step_batch_without_overlap():
    ranks = [list(StepBatchSampler(50, 4, seed=3, total_steps=9, rank=r, world_size=2)) for r in (0, 1)]
    single = list(StepBatchSampler(50, 8, seed=3, total_steps=9))
    for step in range(9):
        assert ranks[0][step] + ranks[1][step] == single[step]


class _Trainer:
    def __init__(self, step: int, rank: int = 0) -> None:
        self.global_step, self.global_rank = step, rank


def test_in_step_randomness_is_a_function_of_seed_step_and_rank():
    seeder = StepSeed(seed=5)

    def draw(step: int, rank: int = 0) -> torch.Tensor:
        torch.rand(7)  # whatever was drawn before the step does not matter
        seeder.on_train_batch_start(_Trainer(step, rank), None, None, 0)
        return torch.rand(3)

    assert torch.equal(draw(4), draw(4))
    assert not torch.equal(draw(4), draw(5))
    assert not torch.equal(draw(4, rank=0), draw(4, rank=1))


def test_step_seeding_draws_what_torch_manual_seed_draws():
    from lth.callbacks import seed_torch

    seed_torch(5)
    ours = torch.rand(3), torch.randn(2)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(ours, (torch.rand(3), torch.randn(2))))
