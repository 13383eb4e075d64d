"""`ltc jacobian` on tiny random GPT-2 and BERT models saved to disk and loaded by path (offline)."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian as autograd_jacobian
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM)

from channels.metrics import spectrum_metrics
from channels.sites import run_sites, site_function
from channels.spectra import load_npz
from experiments.cli import main as ltc
from experiments.data.corpus import token_blocks
from experiments.models.hf import load_model
from channels.metrics import METRIC_NAMES as METRICS
from channels.sweep.run import Sweep
from channels.sweep.plan import Pair, distance_bin, is_causal, source_positions, target_order
from channels.jacobian import iter_sequence_jacobian
from wandb_offline import read_runs

LENGTH = 10
PAIR = Pair("resid_pre.0", "resid_post.1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_head=2,
            n_embd=16,
            vocab_size=256,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).save_pretrained(root / "gpt2")
    BertModel(
        BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=24,
            vocab_size=256,
            max_position_embeddings=32,
        )
    ).save_pretrained(root / "bert")
    GPTNeoXForCausalLM(
        GPTNeoXConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                      vocab_size=256, max_position_embeddings=32, bos_token_id=0, eos_token_id=0)
    ).save_pretrained(root / "neox")
    LlamaForCausalLM(  # grouped-query attention: 4 query heads share 2 key/value heads
        LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=24, vocab_size=256, max_position_embeddings=32, bos_token_id=0, eos_token_id=0)
    ).save_pretrained(root / "llama")
    (root / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return {name: root / name for name in ("gpt2", "bert", "neox", "llama")} | {"text": root / "text.txt"}


def base_args(models: dict[str, Path], out: Path, model: str = "gpt2") -> list[str]:
    return [
        "jacobian",
        "--model",
        str(models[model]),
        "--text",
        str(models["text"]),
        "--context_length",
        str(LENGTH),
        "--contexts",
        "2",
        "--targets",
        "2",
        "--covariance_contexts",
        "3",
        "--pairs",
        f"[{PAIR.name}]",
        "--out",
        str(out),
        "--progress",
        "false",
        "--wandb.mode",
        "disabled",
    ]


def reference_jacobian(model, ids: torch.Tensor, t: int) -> torch.Tensor:
    """J(t, s) for every s by autograd.functional.jacobian: shape (T, d_b, d_a)."""
    with torch.no_grad():
        act_a = run_sites(model, ids[None], [PAIR.a])[PAIR.a]
    f = site_function(model, ids[None], PAIR.a, PAIR.b)
    full = autograd_jacobian(lambda a: f(a)[0, t], act_a)  # (d_b, 1, T, d_a)
    return full[:, 0].permute(1, 0, 2)


@pytest.fixture(scope="module")
def single_run(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    assert ltc(base_args(models, out)) == 0
    return out


def npz_equal(left: Path, right: Path) -> None:
    a, b = load_npz(left), load_npz(right)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind == "U":
            assert list(a[key]) == list(b[key])
        elif not key.endswith("/seconds"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("name", ["gpt2", "bert", "neox", "llama"])
def test_item_jacobian_matches_autograd_and_causality(models, name):
    loaded = load_model(str(models[name]), dtype="float64")
    ids = torch.randint(0, 256, (LENGTH,), generator=torch.Generator().manual_seed(3))
    for t in (LENGTH - 1, 4):
        reference = reference_jacobian(loaded.model, ids, t)
        ((_, ours),) = iter_sequence_jacobian(
            loaded.model, ids[None], PAIR.a, PAIR.b, targets=[t], chunk_size=5
        )
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)
        after = ours[t + 1 :].abs().sum()
        if t == LENGTH - 1:
            assert after == 0  # no source after the last position
        elif name != "bert":
            assert after == 0  # causal: J(t, s > t) is exactly zero
        else:
            assert after > 1e-6
    causal = name != "bert"
    assert is_causal(loaded.model, ids[None], PAIR) == causal
    assert source_positions(4, LENGTH, causal, None) == (list(range(5)) if causal else list(range(LENGTH)))
    if causal:  # every self block at once, and the blocks on a cached prefix, equal the per-target ones
        from channels.jacobian import block_operators, cached_prefix
        from channels.self_jacobian import self_jacobians

        reference = torch.stack([reference_jacobian(loaded.model, ids, t)[t] for t in range(LENGTH)])
        torch.testing.assert_close(self_jacobians(loaded.model, ids[None], PAIR.a, PAIR.b, chunk_size=6),
                                   reference, rtol=1e-6, atol=1e-7)
        ops = block_operators(loaded.model, cached_prefix(loaded.model, ids[None, :8], 5), PAIR.a, PAIR.b,
                              target=2, sources=[0, 2], chunk_size=7)
        eye = torch.eye(16, dtype=torch.float64)
        for block, s in zip(ops.vjp([eye, eye]), (5, 7)):
            torch.testing.assert_close(block, reference_jacobian(loaded.model, ids, 7)[s], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["neox", "llama"])
def test_other_families_resolve_their_sites_and_run(models, name, tmp_path):
    from channels.sites import available_sites, resolve_site

    loaded = load_model(str(models[name]))
    sites = available_sites(loaded.model)
    for kind in ("resid_pre", "resid_post", "mlp_hidden", "attn_out"):
        assert {f"{kind}.0", f"{kind}.1"} <= set(sites)
        site = resolve_site(loaded.model, f"{kind}.-1")
        assert site.module_path.startswith("layers.1")
    out = tmp_path / name
    assert ltc(base_args(models, out, name)) == 0
    summary = __import__("json").loads((out / "results.json").read_text())
    entry = summary["pairs"][PAIR.name]
    assert entry["causal"] and entry["founding"]["s_eq_t"]["t"] == LENGTH - 1
    assert 0 <= summary["coupling"]["mean_across_depth"] <= 1


def test_sweep_numbers_match_references(models, single_run, tmp_path):
    loaded = load_model(str(models["gpt2"]))
    blocks = token_blocks([models["text"].read_text()], loaded.encode, LENGTH)
    arrays = load_npz(single_run / "results.npz")
    slug = PAIR.slug
    targets = target_order(LENGTH, 2)
    assert targets == [LENGTH - 1, LENGTH // 2 - 1]
    grams, n_blocks = 0.0, 0
    for c in range(2):
        for t in targets:
            reference = reference_jacobian(loaded.model, blocks[c], t).double()[: t + 1]
            rows = (arrays[f"{slug}/context"] == c) & (arrays[f"{slug}/target"] == t)
            assert list(arrays[f"{slug}/source"][rows]) == list(range(t + 1))
            sigma = torch.linalg.svdvals(reference).numpy()
            np.testing.assert_allclose(
                arrays[f"{slug}/singular_values"][rows], sigma, rtol=1e-4, atol=1e-6
            )
            expected = spectrum_metrics(sigma[t] ** 2)
            got = dict(zip(METRICS, arrays[f"{slug}/metrics"][rows][t]))
            for key in ("effective_rank", "participation_ratio", "numerical_rank", "top1_share"):
                assert got[key] == pytest.approx(expected[key], rel=1e-4)
            assert got["frobenius_sq"] == pytest.approx(float((reference[t] ** 2).sum()), rel=1e-4)
            grams = grams + torch.einsum("sij,sik->jk", reference, reference)
            n_blocks += t + 1
    founding = load_npz(single_run / "items" / slug / f"c00000-t{LENGTH - 1:05d}.npz")
    last = reference_jacobian(loaded.model, blocks[0], LENGTH - 1)
    np.testing.assert_allclose(
        founding["full/s_eq_t_minus_2"],
        torch.linalg.svdvals(last[LENGTH - 3]),
        rtol=1e-4,
        atol=1e-6,
    )
    gram_values = np.linalg.eigvalsh((grams / n_blocks).numpy())[::-1]
    np.testing.assert_allclose(
        arrays[f"{slug}/gram/in/all/eigenvalues"], gram_values, rtol=1e-4, atol=1e-9
    )
    tokens = torch.cat(
        [run_sites(loaded.model, blocks[c][None], [PAIR.a])[PAIR.a][0] for c in range(3)]
    )
    cov_values = np.linalg.eigvalsh(np.cov(tokens.double().numpy(), rowvar=False))[::-1]
    np.testing.assert_allclose(
        arrays[f"cov/{PAIR.a}/eigenvalues"], cov_values, rtol=1e-6, atol=1e-10
    )


def test_founding_plots_json_and_offline_wandb(models, tmp_path, capsys):
    out = tmp_path / "run"
    args = base_args(models, out)
    args[args.index("--wandb.mode") + 1] = "offline"
    assert ltc(args) == 0
    for name in (
        "founding_s_eq_t",
        "founding_s_eq_t_minus_2",
        "metrics_vs_distance",
        "gram_vs_covariance",
    ):
        png = out / "figures" / PAIR.slug / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = __import__("json").loads((out / "results.json").read_text())
    entry = summary["pairs"][PAIR.name]
    assert entry["founding"]["s_eq_t"]["t"] == LENGTH - 1 and entry["causal"]
    assert {"in/self", "in/cross", "in/all"} <= entry["jacobian_vs_covariance"].keys()
    assert {"self", "all"} <= entry["propagation"].keys()
    (run,) = read_runs(out / "wandb")
    logged = run.history[0]
    assert logged[f"jacobian/{PAIR.name}/founding/s_eq_t/effective_rank"] == pytest.approx(
        entry["founding"]["s_eq_t"]["effective_rank"]
    )
    printed = capsys.readouterr().out
    assert "founding s_eq_t" in printed and "time per (context, t) item" in printed


def test_encoder_sweep_sees_sources_after_the_target(models, tmp_path):
    out = tmp_path / "bert"
    assert ltc(base_args(models, out, "bert")) == 0
    arrays = load_npz(out / "results.npz")
    assert (arrays[f"{PAIR.slug}/distance"] < 0).any()
    assert (out / "figures" / PAIR.slug / "founding_s_eq_t.png").is_file()


@pytest.mark.parametrize("hub", [
    pytest.param({"HF_HUB_OFFLINE": "1"}, id="offline"),
    # a hub that refuses connections (nothing leaves the machine): the hub's warnings stay quiet
    pytest.param({"HF_ENDPOINT": "http://127.0.0.1:9"}, id="unreachable", marks=pytest.mark.slow),
])
def test_missing_model_offline_is_one_line(tmp_path, hub):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), **hub}
    env.pop("HF_HUB_CACHE", None)
    if "HF_HUB_OFFLINE" not in hub:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # conftest sets both
            env.pop(var, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "jacobian",
            "--model",
            "gpt2",
            "--out",
            str(tmp_path / "out"),
            "--wandb.mode",
            "disabled",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert (
        "'gpt2'" in lines[0]
        and "huggingface-cli download gpt2" in lines[0]
        and ("HF_HUB_OFFLINE" in lines[0] if "HF_HUB_OFFLINE" in hub else "could not be reached" in lines[0])
    )


def test_resume_after_interruption_recomputes_nothing(models, single_run, tmp_path, monkeypatch):
    original = Sweep.compute_item
    calls = []

    def interrupt_after_two(self, item, covs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(item.key)
        return original(self, item, covs)

    out = tmp_path / "run"
    monkeypatch.setattr(Sweep, "compute_item", interrupt_after_two)
    assert ltc(base_args(models, out)) == 130
    assert not (out / "results.json").exists()
    first = list(calls)

    def counting(self, item, covs):
        calls.append(item.key)
        return original(self, item, covs)

    monkeypatch.setattr(Sweep, "compute_item", counting)
    assert ltc(base_args(models, out)) == 0
    resumed = calls[2:]
    assert len(resumed) == 2 and not set(resumed) & set(first)
    npz_equal(out / "results.npz", single_run / "results.npz")
    calls.clear()
    assert (
        ltc(base_args(models, out) + ["--targets", "3"]) == 0
    )  # extending: only the new target runs
    assert [key[2] for key in calls] == [target_order(LENGTH, 3)[2]] * 2


def test_two_shards_merge_to_the_single_run(models, single_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert ltc(base_args(models, out) + ["--shard", "0/2"]) == 0
    assert not (out / "results.npz").exists() and "other shards remain" in capsys.readouterr().out
    assert ltc(base_args(models, out) + ["--shard", "1/2"]) == 0
    assert sorted(p.name for p in (out / "state").iterdir()) == [
        "covariance.npz",
        "shard-0-of-2.npz",
        "shard-1-of-2.npz",
    ]
    npz_equal(out / "results.npz", single_run / "results.npz")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pairs", "[resid_pre.0]"], "not of the form 'site_a->site_b'"),
        (["--pairs", "[resid_pre.0->resid_post.7]"], "out of range"),
        (["--dataset", "wikitext"], "give --text or --dataset"),
        (["--shard", "2/2"], "0 <= I < N"),
        (["--contexts", "0"], "contexts must be >= 1"),
        (["--contexts", "many"], "bad config"),
    ],
)
def test_bad_input_is_one_line(models, tmp_path, capsys, extra, message):
    assert ltc(base_args(models, tmp_path / "run") + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_dataset_without_the_datasets_package(models, tmp_path, capsys):
    args = base_args(models, tmp_path / "run")
    args = (
        args[: args.index("--text")] + args[args.index("--text") + 2 :] + ["--dataset", "wikitext"]
    )
    assert ltc(args) == 2
    assert "pip install datasets" in capsys.readouterr().err


def test_another_setting_in_the_same_out_dir_is_refused(models, single_run, capsys):
    assert ltc(base_args(models, single_run) + ["--dtype", "float64"]) == 2
    assert "dtype" in capsys.readouterr().err


def test_targets_and_distance_bins():
    order = target_order(12, 100)
    assert order[:3] == [11, 5, 8] and sorted(order) == list(range(12))
    assert target_order(12, 4) == order[:4]
    assert list(distance_bin(np.array([0, 1, 2, 3, 4, 5, 8, 9, -3]))) == [0, 1, 2, 3, 3, 4, 4, 5, 3]


def test_tokenizer_saved_with_the_model_is_used(models, tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    words = {w: i for i, w in enumerate(["[UNK]", "the", "quick", "brown", "fox"])}
    backend = Tokenizer(tok_models.WordLevel(words, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    directory = tmp_path / "with_tokenizer"
    load_model(str(models["gpt2"])).model.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(directory)
    loaded = load_model(str(directory))
    assert loaded.tokenizer == "hf" and loaded.encode("the fox jumps") == [1, 4, 0]
    fallback = load_model(str(models["gpt2"]))
    assert fallback.tokenizer == "bytes" and fallback.encode("A é") == [65, 32, 0xC3, 0xA9]


def test_shipped_config_parses():
    from experiments.config import parse
    from experiments.commands.jacobian import build_parser

    cfg = parse(build_parser(), ["--config", str(REPO / "configs" / "gpt2_residual_jacobian.yaml")])
    assert cfg.model == "gpt2" and cfg.context_length == 1024
    assert cfg.pairs[0] == "resid_pre.0->resid_post.11" and cfg.wandb.mode == "offline"
