import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian as autograd_jacobian
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from channels.jacobian import (
    GramAccumulator,
    expected_gram,
    iter_sequence_jacobian,
    jacobian_operator,
    sequence_jacobian,
    site_jacobian,
    topk_singular,
)
from channels.sites import run_sites, site_function
from lth.errors import LTCError


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 5))
        .double()
        .eval()
    )


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(3, 2, 3),
            nn.Softplus(),
            nn.Flatten(),
        )
        .double()
        .eval()
    )


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=100,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config).double().eval()


@pytest.fixture(scope="module")
def bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        vocab_size=100,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    return BertModel(config).double().eval()


IDS = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(3))


def per_example_reference(tail: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Stacked autograd.functional.jacobian of ``tail`` on each example, flattened."""
    blocks = [autograd_jacobian(tail, h) for h in hidden.unsqueeze(1)]
    return torch.stack(
        [b.reshape(tail(h).numel(), h.numel()) for b, h in zip(blocks, hidden.unsqueeze(1))]
    )


def finite_difference(tail: nn.Module, hidden: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of ``tail`` at one example, (d_out, d_in)."""
    flat = hidden.reshape(-1)
    columns = []
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        plus, minus = tail((flat + step).view_as(hidden)), tail((flat - step).view_as(hidden))
        columns.append(((plus - minus) / (2 * eps)).reshape(-1))
    return torch.stack(columns, dim=1)


def test_site_jacobian_matches_autograd_and_finite_differences_on_an_mlp():
    net, x = mlp(), torch.randn(4, 6, dtype=torch.float64)
    jac = site_jacobian(net, x, "0", "3", chunk_size=3)
    hidden, tail = net[0](x), net[1:4]
    assert jac.shape == (4, 7, 9)
    torch.testing.assert_close(jac, per_example_reference(tail, hidden), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jac[2], finite_difference(tail, hidden[2:3]), rtol=1e-6, atol=1e-8)


def test_site_jacobian_of_a_conv_net_flattens_feature_maps():
    net, x = conv_net(), torch.randn(3, 2, 5, 5, dtype=torch.float64)
    jac = site_jacobian(net, x, "0", "3", chunk_size=7)
    hidden, tail = net[0](x), net[1:4]
    assert jac.shape == (3, 2 * 3 * 3, 3 * 5 * 5)
    torch.testing.assert_close(jac, per_example_reference(tail, hidden), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jac[1], finite_difference(tail, hidden[1:2]), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(
        site_jacobian(net, x, "0", "3", chunk_size=1), jac, rtol=0, atol=1e-14
    )


def test_site_jacobian_guards():
    net, x = mlp(), torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(LTCError, match="matrix-free"):
        site_jacobian(net, x, "0", "3", max_bytes=1000)
    with pytest.raises(LTCError, match="does not depend"):
        site_jacobian(net, x, "3", "0")
    with pytest.raises(LTCError, match="eval mode"):
        site_jacobian(
            nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2)), x.float(), "0", "2"
        )


class Sqrt(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs().sqrt()


def test_non_finite_jacobian_names_the_sites():
    net = nn.Sequential(nn.Identity(), Sqrt(), nn.Linear(3, 2)).eval()
    with pytest.raises(LTCError, match=r"d 2 / d 0 has non-finite"):
        site_jacobian(net, torch.zeros(2, 3), "0", "2")


def embeddings_reference(model: GPT2LMHeadModel | BertModel, layer: int) -> torch.Tensor:
    """d hidden_states[layer] / d inputs_embeds by autograd.functional.jacobian, (T, T, d, d).

    For GPT-2, resid_pre.0 = inputs_embeds + position embeddings, so this is also
    d resid_post.{layer-1} / d resid_pre.0; it does not use the site hooks.
    """
    base = model.transformer if isinstance(model, GPT2LMHeadModel) else model
    embeds = base.get_input_embeddings()(IDS)

    def hidden(e: torch.Tensor) -> torch.Tensor:
        return base(inputs_embeds=e, output_hidden_states=True).hidden_states[layer]

    return autograd_jacobian(hidden, embeds)[0, :, :, 0].permute(0, 2, 1, 3)


def test_sequence_jacobian_of_gpt2_matches_autograd_and_is_causal(gpt2):
    jac = sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.0", chunk_size=20)
    reference = embeddings_reference(gpt2, 1)
    assert jac.shape == (6, 6, 32, 32)
    for t, s in [(0, 0), (3, 1), (5, 5), (5, 0), (2, 4)]:
        torch.testing.assert_close(jac[t, s], reference[t, s], rtol=1e-9, atol=1e-11)
    later = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert (jac[later] == 0).all()
    assert (jac[~later].abs().amax(dim=(-1, -2)) > 1e-3).all()


def test_last_residual_jacobian_matches_replacement_reference(gpt2):
    a0 = run_sites(gpt2, IDS, ["resid_pre.0"])["resid_pre.0"]
    f = site_function(gpt2, IDS, "resid_pre.0", "resid_post.-1")
    reference = autograd_jacobian(f, a0)[0, :, :, 0].permute(0, 2, 1, 3)
    jac = sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1", targets=[5, 3], chunk_size=1)
    torch.testing.assert_close(jac, reference[[5, 3]], rtol=1e-9, atol=1e-11)


def test_sequence_jacobian_source_selection_and_rows(gpt2):
    full = sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1")
    by_offset = sequence_jacobian(
        gpt2, IDS, "resid_pre.0", "resid_post.-1", targets=[4, 5], offsets=[0, 2]
    )
    torch.testing.assert_close(by_offset[0, 1], full[4, 2], rtol=0, atol=0)
    torch.testing.assert_close(by_offset[1, 0], full[5, 5], rtol=0, atol=0)
    picked = sequence_jacobian(
        gpt2,
        IDS,
        "resid_pre.0",
        "resid_post.-1",
        targets=[5],
        sources=[1, 3],
        rows=[7, 0],
        chunk_size=3,
    )
    torch.testing.assert_close(picked[0], full[5][[1, 3]][:, [7, 0]], rtol=0, atol=0)
    streamed = dict(
        iter_sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1", targets=[2, 4])
    )
    torch.testing.assert_close(streamed[4], full[4], rtol=0, atol=0)
    with pytest.raises(LTCError, match="outside the sequence"):
        sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1", targets=[1], offsets=[2])
    with pytest.raises(LTCError, match="matrix-free"):
        sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1", max_bytes=10_000)


def test_bert_sequence_jacobian_matches_autograd_and_is_not_causal(bert):
    jac = sequence_jacobian(bert, IDS, "resid_post.0", "resid_post.1")
    reference_full = autograd_jacobian(
        site_function(bert, IDS, "resid_post.0", "resid_post.1"),
        run_sites(bert, IDS, ["resid_post.0"])["resid_post.0"],
    )[0, :, :, 0].permute(0, 2, 1, 3)
    torch.testing.assert_close(jac, reference_full, rtol=1e-9, atol=1e-11)
    independent = embeddings_reference(bert, 1)  # d resid_post.0 / d inputs_embeds, by HF alone
    through_sites = sequence_jacobian(bert, IDS, "embeddings.word_embeddings", "resid_post.0")
    torch.testing.assert_close(through_sites, independent, rtol=1e-9, atol=1e-11)
    later = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert (jac[later].abs().amax(dim=(-1, -2)) > 1e-4).all()


def test_expected_gram_streams_and_merges():
    blocks = torch.randn(10, 4, 3, 5)
    exact = (
        torch.einsum(
            "nij,nik->jk", blocks.reshape(-1, 3, 5).double(), blocks.reshape(-1, 3, 5).double()
        )
        / 40
    )
    first, second = GramAccumulator(5), GramAccumulator(5)
    first.update(blocks[:3])
    second.update(blocks[3:7])
    second.update(blocks[7:])
    first.merge(second)
    assert first.count == 40 and first.mean().dtype == torch.float64
    torch.testing.assert_close(first.mean(), exact)
    torch.testing.assert_close(expected_gram(blocks), exact)
    with pytest.raises(LTCError):
        GramAccumulator(5).mean()


def decaying_matrix(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64)).Q
    values = 0.95 ** torch.arange(cols, dtype=torch.float64)
    return (u * values) @ v.T, values


def test_topk_singular_matches_svd_on_a_decaying_spectrum():
    matrix, _ = decaying_matrix(120, 90)
    result = topk_singular(
        lambda x: x @ matrix.T, lambda y: y @ matrix, 90, 120, k=10, dtype=torch.float64
    )
    exact = torch.linalg.svdvals(matrix)[:10]
    assert ((result.values - exact).abs() / exact).max() < 0.01
    torch.testing.assert_close(
        matrix @ result.right, result.left * result.values, rtol=0, atol=0.02
    )
    slow = topk_singular(
        lambda x: x @ matrix.T, lambda y: y @ matrix, 90, 120, k=10, n_iter=0, dtype=torch.float64
    )
    assert ((slow.values - exact).abs() / exact).max() > 0.01  # no Krylov steps: visibly worse


def test_jacobian_operator_products_match_the_exact_jacobian(gpt2):
    net, x = mlp(), torch.randn(1, 6, dtype=torch.float64)
    exact = site_jacobian(net, x, "0", "3")[0]
    op = jacobian_operator(net, x, "0", "3", chunk_size=2)
    probes = torch.randn(3, 9, dtype=torch.float64)
    torch.testing.assert_close(op.jvp(probes), probes @ exact.T)
    torch.testing.assert_close(op.vjp(probes[:, :7]), probes[:, :7] @ exact)
    top = topk_singular(op.jvp, op.vjp, op.dim_in, op.dim_out, k=3, dtype=torch.float64)
    torch.testing.assert_close(top.values, torch.linalg.svdvals(exact)[:3])

    pair = jacobian_operator(gpt2, IDS, "resid_pre.0", "resid_post.-1", target=4, source=2)
    block = sequence_jacobian(gpt2, IDS, "resid_pre.0", "resid_post.-1", targets=[4], sources=[2])[
        0, 0
    ]
    torch.testing.assert_close(
        pair.jvp(probes[:, :1].expand(3, 32)), probes[:, :1].expand(3, 32) @ block.T
    )
    torch.testing.assert_close(pair.vjp(torch.eye(32, dtype=torch.float64)), block)
