"""SpectraCallback inside IMP: spectra of every level in spectra.npz, numbers match references."""
import numpy as np
import pytest
import torch

from channels.spectra import SpectraConfig, load_npz, measure
from experiments.cli import main
from experiments.models.mlp import MLP
from tests.helpers import write_config


def test_measure_matches_numpy_and_autograd():
    torch.manual_seed(0)
    net = MLP(in_features=5, hidden=[7, 6], num_classes=3).double()
    probe = torch.randn(40, 5, dtype=torch.float64)
    cfg = SpectraConfig(sites=["act.0"], jacobians=["act.0->act.1"], top_k=3)
    out = measure(net, probe, probe[:10], cfg, step=0)
    acts = torch.relu(net.hidden[0](probe)).detach().numpy()
    expected = np.sort(np.linalg.eigvalsh(np.cov(acts, rowvar=False)))[::-1]
    np.testing.assert_allclose(out["act.0/cov"]["eigenvalues"], np.clip(expected, 0, None), rtol=1e-9, atol=1e-12)
    # Gram of d act.1 / d act.0 by autograd, example by example
    gram = np.zeros((7, 7))
    for x in probe[:10]:
        a0 = torch.relu(net.hidden[0](x))
        jac = torch.autograd.functional.jacobian(lambda a: torch.relu(net.hidden[1](a)), a0.detach()).numpy()
        gram += jac.T @ jac / 10
    np.testing.assert_allclose(out["act.0->act.1/jac"]["eigenvalues"],
                               np.clip(np.sort(np.linalg.eigvalsh(gram))[::-1], 0, None), rtol=1e-8, atol=1e-12)
    assert 0.0 <= out["act.0/jac_vs_cov"]["metrics"]["sensitivity/topk_overlap"] <= 1.0
    assert out["act.0/cov"]["eigenvectors"].shape == (7, 3)


def test_imp_run_writes_spectra_for_every_level(tmp_path):
    cfg = write_config(tmp_path, spectra={"sites": ["act.0"], "jacobians": ["act.0->out"], "every_n_steps": 10,
                                          "probe_size": 64, "jacobian_probe_size": 8},
                       imp={"levels": 1, "branches": ["random_prune"]})
    run = tmp_path / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    for job in ("level_00", "level_01", "branches/random_prune/level_01"):
        data = load_npz(run / job / "spectra.npz")
        assert data["steps"].tolist() == [0, 10, 20]
        assert data["act.0/cov/eigenvalues"].shape == (3, 16)
        assert data["act.0->out/jac/eigenvalues"].shape == (3, 16)
        assert data["act.0/cov/eigenvectors"].shape[0] == 16
        assert np.isfinite(data["act.0/cov/effective_rank"]).all()
        assert "spectra.npz" in (run / job / "DONE").read_text()


def test_bad_spectra_site_is_a_clear_error(tmp_path, capsys):
    cfg = write_config(tmp_path, spectra={"sites": ["nowhere.7"]})
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.7" in err and "act.0" in err


def test_bad_jacobian_pair_syntax(tmp_path, capsys):
    cfg = write_config(tmp_path, spectra={"jacobians": ["act.0 to act.1"]})
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 2
    assert "site_a->site_b" in capsys.readouterr().err


def test_ltc_spectra_on_saved_weights(tmp_path, capsys):
    cfg = write_config(tmp_path, imp={"levels": 1})
    run = tmp_path / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    assert main(["spectra", "--run_dir", str(run), "--jacobians", '["act.0->out"]']) == 0
    out = capsys.readouterr().out
    assert "level_01" in out and "act.0/cov" in out
    saved = load_npz(run / "spectra" / "level_01.npz")
    trained = load_npz(run / "level_01" / "spectra.npz")
    # the saved weights give the same covariance spectrum as the end-of-training measurement
    np.testing.assert_allclose(saved["act.0/cov/eigenvalues"][0], trained["act.0/cov/eigenvalues"][-1], rtol=1e-6, atol=1e-9)
    assert saved["act.0->out/jac/eigenvalues"].shape == (1, 16)
    assert main(["spectra", "--run_dir", str(run), "--level", "7"]) == 2
    assert "no finished level 7" in capsys.readouterr().err
    assert main(["spectra", "--run_dir", str(tmp_path)]) == 2


def test_sequence_grams_average_every_target_with_self_and_cross_apart():
    from transformers import GPT2Config, GPT2LMHeadModel

    from channels.sites import run_sites, site_function

    torch.manual_seed(0)
    net = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16, bos_token_id=0,
                                     eos_token_id=0, attn_implementation="eager")).double().eval()
    probe = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(1))
    cfg = SpectraConfig(sites=["resid_pre.0"], jacobians=["resid_pre.0->resid_post.0"], top_k=3)
    out = measure(net, probe, probe, cfg, step=0)
    grams = {"self": np.zeros((8, 8)), "cross": np.zeros((8, 8))}
    counts = {"self": 0, "cross": 0}
    for ids in probe:
        act = run_sites(net, ids[None], ["resid_pre.0"])["resid_pre.0"].detach()
        f = site_function(net, ids[None], "resid_pre.0", "resid_post.0")
        full = torch.autograd.functional.jacobian(f, act)[0, :, :, 0].numpy()  # (T, d, T, d)
        for t in range(5):
            for s in range(5):
                part = "self" if s == t else "cross"
                grams[part] += full[t, :, s].T @ full[t, :, s]
                counts[part] += 1
    for part, key in (("self", "jac_self"), ("cross", "jac_cross")):
        want = np.clip(np.sort(np.linalg.eigvalsh(grams[part] / counts[part]))[::-1], 0, None)
        np.testing.assert_allclose(out[f"resid_pre.0->resid_post.0/{key}"]["eigenvalues"], want, rtol=1e-8, atol=1e-12)
    pooled = (grams["self"] + grams["cross"]) / (counts["self"] + counts["cross"])
    np.testing.assert_allclose(out["resid_pre.0->resid_post.0/jac"]["eigenvalues"],
                               np.clip(np.sort(np.linalg.eigvalsh(pooled))[::-1], 0, None), rtol=1e-8, atol=1e-12)
