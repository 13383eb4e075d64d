"""The offline W&B reader against a run that wandb itself writes, offline, in a tmp dir."""
import pytest

from wandb_offline import (
    BLOCK,
    read_history,
    read_records,
    read_run,
    read_runs,
    run_files,
)
from lth.errors import LTCError


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    import wandb

    root = tmp_path_factory.mktemp("wb")
    run = wandb.init(mode="offline", dir=str(root), project="proj", group="exp-1234", job_type="summary",
                     name="exp-1234/summary", config={"seed": 3, "imp": {"levels": 2}})
    for step in range(40):
        run.log({"val/acc": 0.5 + step / 100, "note": "x" * 2000}, step=step)  # ~80 KiB: several blocks
    run.log({"long": "y" * (BLOCK + 500)}, step=40)  # one record spanning blocks (FIRST/MIDDLE/LAST)
    run.log({"verdict": wandb.Table(columns=["test", "reading"], data=[["T1", "channels"]])}, step=41)
    run.summary["overall"] = "channels"
    run.finish()
    return root


def test_history_names_values_and_steps(offline_run):
    rows = read_history(offline_run / "wandb")
    scalars = [r for r in rows if "val/acc" in r]
    assert [r["_step"] for r in scalars] == list(range(40))
    assert [r["val/acc"] for r in scalars] == pytest.approx([0.5 + s / 100 for s in range(40)])
    assert all(r["note"] == "x" * 2000 for r in scalars)
    (long_row,) = [r for r in rows if "long" in r]
    assert long_row["long"] == "y" * (BLOCK + 500)
    (table_row,) = [r for r in rows if "verdict" in r]
    assert table_row["verdict"]["_type"] == "table-file" and table_row["_step"] == 41


def test_run_identity_config_and_summary(offline_run):
    (file,) = run_files(offline_run)
    assert file.stat().st_size > 2 * BLOCK
    run = read_run(file)
    assert (run.project, run.group, run.job_type, run.name) == ("proj", "exp-1234", "summary", "exp-1234/summary")
    assert run.config["seed"] == 3 and run.config["imp"] == {"levels": 2}
    assert run.summary["overall"] == "channels" and run.summary["val/acc"] == pytest.approx(0.89)
    assert [r.run_id for r in read_runs(offline_run)] == [run.run_id]
    kinds = {record.WhichOneof("record_type") for record in read_records(file)}
    assert {"header", "run", "history", "summary", "exit"} <= kinds


def test_bad_files(offline_run, tmp_path):
    (file,) = run_files(offline_run)
    data = bytearray(file.read_bytes())
    data[100] ^= 0xFF
    broken = tmp_path / "broken.wandb"
    broken.write_bytes(bytes(data))
    with pytest.raises(LTCError, match="corrupt"):
        read_history(broken)
    other = tmp_path / "other.wandb"
    other.write_bytes(b"not a run")
    with pytest.raises(LTCError, match="not a W&B run"):
        read_history(other)
    with pytest.raises(LTCError, match="does not exist"):
        read_history(tmp_path / "nothing")
    with pytest.raises(LTCError, match="holds 2 W&B runs"):
        read_run(tmp_path)


def test_a_run_still_being_written_is_read_as_it_stands_once_settle_time_is_up(offline_run, tmp_path):
    (file,) = run_files(offline_run)
    assert read_run(file).finished
    data = file.read_bytes()
    cut = tmp_path / "running.wandb"
    cut.write_bytes(data[: 2 * BLOCK + 100])  # the tail, exit record included, not written yet
    run = read_run(cut, settle_s=0.4)
    assert not run.finished and 0 < len(run.history) < len(read_run(file).history)
