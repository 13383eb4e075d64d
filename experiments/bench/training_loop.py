"""Benchmark case `training_loop`: what the IMP driver (Lightning and the job's callbacks) adds to
a training step, side by side in one process with a plain PyTorch loop of the same training, and
the per-step costs the driver was cut down by.

Rows (each pair timed in turn, `rounds` times, the best of each kept):
- level: level 0 of the config through the driver (`callback._train_level_zero`: spectra off,
  W&B off) against the same steps as a plain loop: the config's net and optimiser, its batches
  in its data order gathered from the training tensors, cross-entropy, backward, step;
- logging: the same level with `self.log` of the training loss at every step, against the
  driver as it is (the loss logged on the loggers' steps and the last step: `Task.log_step`);
- seeding: `torch.manual_seed` (it queues a seed for every accelerator type, recording a stack
  trace each) against seeding the CPU generator alone (`StepSeed` on the CPU), per call;
- batches: a DataLoader that fetches examples one by one and stacks them against one gather per
  tensor (`experiments.data.splits.BatchedTensors`), per batch.
A recipe of `ltc seeds` (configs/mnist1d_notebook.yaml) is read without its seed keys. The plain
loop is a classification loop: configs of other tasks are refused.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from experiments.bench.callback import _train_level_zero, level_zero_args
from experiments.bench.suite import DEFAULT_CONFIG, BenchSettings, CaseResult, PeakMemory, row
from lth.errors import LTCError

RUN_KEYS = ("experiment", "seed_everything", "data_order_seed", "model", "data", "trainer", "imp", "spectra", "wandb")


def one_run_recipe(config: str, directory: Path) -> str:
    """`config` with only the keys of one `ltc imp` run (a `ltc seeds` recipe also lists seeds, workers...)."""
    raw = yaml.safe_load(Path(config).read_text())
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k in RUN_KEYS}))
    return str(path)


def plain_loop(config: str, steps: int, device: str = "cpu") -> float:
    """Seconds of `steps` plain training steps of the config's net, optimiser, batches and data order."""
    from experiments.config import imp_parser, instantiate, parse
    from experiments.tasks.classification import ClassificationTask
    from lth.data_order import step_indexed_loader

    parser = imp_parser()
    cfg = parse(parser, ["--config", config, "--trainer.max_steps", str(steps)])
    built = instantiate(parser, cfg)
    task, dm = built.model, built.data
    if not isinstance(task, ClassificationTask):
        raise LTCError(f"the training_loop bench times classification loops; {config} trains a {type(task).__name__}")
    dm.setup("fit")
    loader, sampler = step_indexed_loader(dm.train_dataloader(), cfg.seed_everything, steps)
    inputs, labels = loader.dataset.tensors[:2] if hasattr(loader.dataset, "tensors") else (None, None)
    if inputs is None:
        raise LTCError(f"the training_loop bench needs a datamodule of in-memory tensors; {config} has none")
    order = [torch.as_tensor(batch, device=device) for batch in sampler]
    inputs, labels, net = inputs.to(device), labels.to(device), task.net.to(device)
    optimizer = task.optim.build(net.parameters(), steps)
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    start = time.perf_counter()
    for index in order:
        loss = F.cross_entropy(net(inputs[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls


def batch_costs(batches: int) -> tuple[float, float]:
    """Seconds per batch of 100 examples of 40 features: (example by example + stack, one gather)."""
    from torch.utils.data import DataLoader, TensorDataset

    from experiments.data.splits import BatchedTensors, first_item
    from lth.data_order import StepBatchSampler

    tensors = torch.randn(4000, 40), torch.randint(0, 10, (4000,))
    one_by_one = DataLoader(TensorDataset(*tensors), batch_sampler=StepBatchSampler(4000, 100, 0, batches))
    gathered = DataLoader(BatchedTensors(*tensors), batch_sampler=StepBatchSampler(4000, 100, 0, batches),
                          collate_fn=first_item)
    times = []
    for loader in (one_by_one, gathered):
        start = time.perf_counter()
        for _ in loader:
            pass
        times.append((time.perf_counter() - start) / batches)
    return times[0], times[1]


def run(config: str = DEFAULT_CONFIG, max_steps: int | None = None, rounds: int = 2, device: str = "cpu") -> dict:
    """Every pair of the module docstring, best of `rounds`; `max_steps` None = the config's length."""
    from experiments.config import imp_parser, parse
    from experiments.tasks.base import Task

    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        recipe = one_run_recipe(config, Path(tmp))
        steps = max_steps or parse(imp_parser(), ["--config", recipe]).trainer.max_steps
        # level 0 alone: no score snapshot (a one-off copy), which a shortened level could not reach anyway
        level = lambda name: _train_level_zero(
            [*level_zero_args(recipe, Path(tmp) / name, steps, device, False), "--imp.score_step", "null"])[0]
        level("warm-up")
        plain, driver, logged = [], [], []
        log_step = Task.log_step
        for r in range(rounds):
            plain.append(plain_loop(recipe, steps, device))
            driver.append(level(f"driver-{r}"))
            Task.log_step = lambda self, name, value, prog_bar=False: self.log(name, value, prog_bar=prog_bar)
            try:
                logged.append(level(f"logged-{r}"))
            finally:
                Task.log_step = log_step
    seed_all = _per_call(torch.manual_seed, 2000)
    seed_cpu = _per_call(torch.default_generator.manual_seed, 2000)
    one_by_one, gathered = batch_costs(200)
    return {"config": config, "device": device, "steps": steps, "rounds": rounds, "plain_s": min(plain), "driver_s": min(driver),
            "driver_logging_every_step_s": min(logged), "manual_seed_s": seed_all, "cpu_seed_s": seed_cpu,
            "batch_one_by_one_s": one_by_one, "batch_gathered_s": gathered,
            "all_plain_s": plain, "all_driver_s": driver, "all_logged_s": logged}


def case(s: BenchSettings) -> CaseResult:
    """The suite's `training_loop` case: the driver's step against a plain loop's, and what was cut."""
    f = run(s.config, s.sizes.train_steps, device=s.device)
    per_step = f"{f['steps']} steps, best of {f['rounds']}"

    def rows(mem: PeakMemory) -> list[dict]:
        return [
            row("training_loop", "a level's fit: driver vs plain loop", f["driver_s"], f["plain_s"],
                f["driver_s"] / f["plain_s"], "driver / plain", mem, per_step),
            row("training_loop", "the loss logged every step vs when read", f["driver_logging_every_step_s"],
                f["driver_s"], f["driver_logging_every_step_s"] / f["driver_s"], "every step / when read", mem,
                per_step),
            row("training_loop", "step seed: torch.manual_seed vs the CPU generator", f["manual_seed_s"],
                f["cpu_seed_s"], f["manual_seed_s"] / f["cpu_seed_s"], "all devices / CPU", mem, "per call"),
            row("training_loop", "a batch: example by example + stack vs one gather", f["batch_one_by_one_s"],
                f["batch_gathered_s"], f["batch_one_by_one_s"] / f["batch_gathered_s"], "one by one / gather", mem,
                "per batch of 100 x 40"),
        ]

    return f, rows
