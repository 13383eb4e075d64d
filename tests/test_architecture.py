"""The structure's promises: one-way imports, the branch registry, the run-directory layout, and
run identities that survive the restructure (older run directories keep resuming)."""
from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

from experiments.config import experiment_id, identity, imp_parser, parse
from lth.branches import BRANCHES, CONTROLS, style
from lth.layout import RunLayout, job_name, parse_level
from lth.rundir import config_hash
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, imported top-level package) for every import in a package."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
    return found


@pytest.mark.parametrize("package, forbidden", [("lth", {"channels", "experiments"}), ("channels", {"experiments"})])
def test_imports_flow_one_way(package, forbidden):
    bad = sorted(f"{module} imports {target}" for module, target in _imports(package) if target in forbidden)
    assert not bad, bad


@pytest.mark.parametrize("recipe, expected", [
    (None, "62ce98c2"),  # tests/helpers.TINY
    ("configs/tinygpt_text_imp.yaml", "9487030b"),
    ("configs/cifar10_resnet20_imp.yaml", "bbb55f8b"),
    ("configs/modadd_imp.yaml", "2d9c0c7c"),
])
def test_run_identities_are_those_older_run_directories_were_named_by(recipe, expected):
    path = recipe and str(ROOT / recipe) or str(write_config(Path(tempfile.mkdtemp())))
    assert config_hash(identity(parse(imp_parser(), ["--config", path]))) == expected


def test_added_fields_leave_the_identity_alone_at_their_default():
    path = str(write_config(Path(tempfile.mkdtemp())))
    base = parse(imp_parser(), ["--config", path])
    same = parse(imp_parser(), ["--config", path, "--imp.basis_sgd_lr", "0.05", "--imp.levels", "9"])
    other = parse(imp_parser(), ["--config", path, "--imp.basis_sgd_lr", "0.1"])
    assert experiment_id(same) == experiment_id(base) != experiment_id(other)
    net = "--model.init_args.net.init_args.init"
    uniform, normal = (parse(imp_parser(), ["--config", path, net, init]) for init in ("uniform", "normal"))
    assert experiment_id(uniform) == experiment_id(base) != experiment_id(normal)  # the MLP's added init


def test_the_registry_finds_every_branch_file():
    files = {p.stem for p in (ROOT / "lth" / "branches").glob("*.py") if p.stem not in ("__init__", "base")
             and not p.stem.startswith("_")}
    assert set(BRANCHES) == files
    assert set(CONTROLS) == {"random_reinit", "random_prune", "random_prune_module", "shuffle"}
    assert [BRANCHES[b].is_line for b in ("rotated", "shuffle")] == [True, False]
    assert style("ticket").linestyle == "-" and style("not a branch").marker == "x"


def test_layout_names_jobs_and_parses_them_back(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.job(3).dir == tmp_path / "level_03"
    assert layout.job(3, "shuffle").mask == tmp_path / "branches" / "shuffle" / "level_03" / "mask.safetensors"
    assert layout.line("rotated").job(0).dir == tmp_path / "branches" / "rotated" / "level_00"
    assert job_name(3, "shuffle") == "shuffle/level_03" and parse_level("level_12") == 12
    assert parse_level("level_x") is None
    layout.job(1).dir.mkdir(parents=True)
    layout.job(0).dir.mkdir()
    (tmp_path / "notes").mkdir()
    assert list(layout.level_dirs()) == [0, 1]
