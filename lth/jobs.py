"""A job of an IMP experiment: one training (a level of a line, or a branch at a level), which
jobs an experiment has, and a job's place among them (for progress)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lth.branches import BRANCHES, Branch, LineBranch
from lth.config import ImpConfig
from lth.layout import JobFiles, job_name
from lth.masks import Mask


def branches_at(cfg: ImpConfig, level: int) -> list[Branch]:
    """The branches run after `level` of a line: those of `imp.branch_levels`, and at the dense
    level those that belong there (instability)."""
    branch_levels, _ = cfg.resolved_branch_levels()
    return [BRANCHES[name] for name in cfg.branches
            if level in branch_levels or (level == 0 and BRANCHES[name].at_dense)]


def secondary_lines(cfg: ImpConfig) -> list[LineBranch]:
    """The whole IMP lines run after the ticket line (the rotated line), as the config asks."""
    return [line for line in BRANCHES.values() if line.is_line and line.enabled(cfg)]


def job_count(cfg: ImpConfig) -> int:
    """Every job of an experiment: its levels, their branches, and the secondary lines' levels
    (which run without branches)."""
    levels = cfg.levels + 1
    return levels + sum(len(branches_at(cfg, level)) for level in range(levels)) + levels * len(secondary_lines(cfg))


@dataclass(frozen=True)
class Position:
    """Where a job sits in its experiment, for progress: job `number` of `total` (ticket line,
    branches and secondary lines together) and the last level of its line."""

    number: int
    total: int
    last_level: int


@dataclass
class JobCounter:
    """Numbers the jobs of one experiment as they start (or are found finished)."""

    total: int
    started: int = 0

    def next(self, last_level: int) -> Position:
        self.started += 1
        return Position(self.started, max(self.total, self.started), last_level)


@dataclass
class Job:
    """One training run: a level of the ticket line, of a branch, or of a secondary line.

    `run_files` are the line-level files this job is the first to complete (theta_0 and theta_k
    at a line's dense level), named for loggers."""

    level: int
    branch: str | None
    files: JobFiles
    mask: Mask
    position: Position | None = None
    run_files: dict[str, Path] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.files.dir

    @property
    def name(self) -> str:
        return job_name(self.level, self.branch)
