"""Benchmark case `jacobian_peers`: our Jacobian lens and block coupling beside the way public
reference implementations compute them, on the same model and prompts, in one process.

Model: GPT-2 shape with random weights (`experiments.bench.jacobian.gpt2_small`), 4 layers of
width 256 on a CPU (the per-token way costs width backward passes per layer and token), GPT-2
small's 12 x 768 at the CUDA sizes; prompts: random token ids.

(a) The Jacobian lens of resid_pre.0 -> resid_post.-1 (the last layer) over the valid positions V = skip..L-2 of a
    prompt (the last position has no next token; early ones are attention sinks).
    Peers (the public Jacobian-lens fitting code, re-implemented from its description, not
    copied): the prompt replicated `dim_batch` times in one forward pass; then d / dim_batch
    backward passes, each with a one-hot cotangent e_j (one j per batch element) at every valid
    position at once. The gradient at source p is then sum over valid p' >= p of J(p', p) row j,
    and the lens is its mean over valid p: E_p [sum_{p' >= p} J(p', p)], cross-position terms
    included.
    Ours (`channels.self_jacobian.self_jacobians`): one forward with self-only attention, d
    backward passes in chunks, every J(t, t) exactly; the lens E_t[J(t, t)] over the same t.
    Reported: time per prompt of each and their ratio; agreement of the two lenses (relative
    Frobenius difference, matrix cosine, overlap of the top-8 singular subspaces).
(b) Block coupling: J_l(t) = d resid_post.l[t] / d resid_pre.l[t] for `peer_tokens` tokens of a
    prompt in every layer. Peers (the coupling paper's way): the full per-token Jacobian, one
    forward and d backward passes per (layer, token). Ours: d backward passes per layer for all
    tokens (`self_jacobians`). Reported: time per prompt and the ratio; the largest difference of
    the blocks and of the coupling matrices built from them (`channels.coupling`).
"""

from __future__ import annotations

import numpy as np
import torch

from channels.compare import subspace_overlap
from channels.coupling import coupling_matrices
from channels.jacobian import forward_with_graph, iter_sequence_jacobian
from channels.self_jacobian import self_jacobians
from experiments.bench.jacobian import SITE_A, SITE_B, gpt2_small, random_ids
from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import timed

TOP = 8


def peer_lens(model, ids: torch.Tensor, site_a: str, site_b: str, skip: int, dim_batch: int) -> torch.Tensor:
    """The reference implementations' lens of one prompt (see the module docstring), (d_b, d_a)."""
    replicated = ids.expand(dim_batch, -1)
    _, _, act_a, act_b = forward_with_graph(model, replicated, site_a, site_b)
    valid = torch.arange(skip, ids.shape[1] - 1, device=ids.device)
    d_b, d_a = act_b.shape[-1], act_a.shape[-1]
    lens = act_a.new_empty(d_b, d_a)
    cotangent = torch.zeros_like(act_b)
    batch = torch.arange(dim_batch, device=ids.device)
    for first in range(0, d_b, dim_batch):
        n = min(dim_batch, d_b - first)
        cotangent.zero_()
        cotangent[batch[:n, None], valid[None, :], first + batch[:n, None]] = 1.0
        (grad,) = torch.autograd.grad(act_b, act_a, cotangent, retain_graph=first + n < d_b)
        lens[first : first + n] = grad[:n][:, valid].mean(1)
    return lens


def our_lens(model, ids: torch.Tensor, site_a: str, site_b: str, skip: int, chunk: int) -> torch.Tensor:
    """E_t[J(t, t)] over the same positions, every self block exact."""
    return self_jacobians(model, ids, site_a, site_b, range(skip, ids.shape[1] - 1), chunk).mean(0)


def lens_agreement(ours: torch.Tensor, peer: torch.Tensor) -> dict:
    a, b = ours.double(), peer.double()
    ua, _, va = torch.linalg.svd(a)
    ub, _, vb = torch.linalg.svd(b)
    overlap = 0.5 * (subspace_overlap(ua[:, :TOP].numpy(), ub[:, :TOP].numpy())
                     + subspace_overlap(va[:TOP].T.numpy(), vb[:TOP].T.numpy()))
    return {"rel_frobenius_diff": float((a - b).norm() / b.norm()),
            "matrix_cosine": float((a * b).sum() / (a.norm() * b.norm())),
            "top8_overlap": float(overlap), "top8_chance": TOP / a.shape[0]}


def peer_blocks(model, ids: torch.Tensor, layer: int, tokens: list[int], chunk: int) -> torch.Tensor:
    """The per-token way: one forward and d backward passes for each token's block J_l(t)."""
    a, b = f"resid_pre.{layer}", f"resid_post.{layer}"
    return torch.stack([
        next(iter_sequence_jacobian(model, ids, a, b, targets=[t], offsets=[0], chunk_size=chunk))[1][0]
        for t in tokens
    ])


def _singular_vectors(blocks: list[torch.Tensor]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    out = []
    for layer in blocks:
        row = []
        for block in layer:
            left, _, right = torch.linalg.svd(block.double())
            row.append((left[:, :TOP].numpy(), right[:TOP].T.numpy()))
        out.append(row)
    return out


def run(context: int, prompts: int, skip: int, dim_batch: int, tokens: int, chunk: int, device: str,
        layers: int, width: int) -> dict:
    where = torch.device(device)
    model = gpt2_small(context, where, 0, layers, width)
    figures = {"context": context, "prompts": prompts, "skip_first": skip, "dim_batch": dim_batch,
               "coupling_tokens": tokens, "layers": layers, "width": width, "lens": [], "coupling": []}
    for prompt in range(prompts):
        ids = random_ids(model, context, where, prompt)
        peer_s, peer = timed(lambda: peer_lens(model, ids, SITE_A, SITE_B, skip, dim_batch), where)
        ours_s, ours = timed(lambda: our_lens(model, ids, SITE_A, SITE_B, skip, chunk), where)
        figures["lens"].append({"peer_s": peer_s, "ours_s": ours_s, **lens_agreement(ours.cpu(), peer.cpu())})
        chosen = list(range(context - tokens, context))
        peer_c_s, peer_c = timed(lambda: [peer_blocks(model, ids, layer, chosen, chunk) for layer in range(layers)], where)
        ours_c_s, ours_c = timed(lambda: [self_jacobians(model, ids, f"resid_pre.{layer}", f"resid_post.{layer}",
                                                         chosen, chunk) for layer in range(layers)], where)
        diff = max(float((o - p).abs().max() / p.abs().max()) for o, p in zip(ours_c, peer_c))
        matrices = [coupling_matrices(_singular_vectors([[b.cpu() for b in layer] for layer in blocks]))
                    for blocks in (ours_c, peer_c)]
        coupling_diff = max(float(np.abs(matrices[0][k] - matrices[1][k]).max()) for k in ("depth", "tokens"))
        figures["coupling"].append({"peer_s": peer_c_s, "ours_s": ours_c_s, "max_rel_block_diff": diff,
                                    "max_coupling_diff": coupling_diff})
    for name in ("lens", "coupling"):
        entries = figures[name]
        figures[f"{name}_peer_s_per_prompt"] = float(np.mean([e["peer_s"] for e in entries]))
        figures[f"{name}_ours_s_per_prompt"] = float(np.mean([e["ours_s"] for e in entries]))
        figures[f"{name}_speedup"] = figures[f"{name}_peer_s_per_prompt"] / figures[f"{name}_ours_s_per_prompt"]
    return figures


def case(s: BenchSettings) -> CaseResult:
    """The suite's `jacobian_peers` case (sizes: `peer_context`, `peer_prompts`, `peer_tokens`)."""
    z = s.sizes
    skip = max(1, z.peer_context // 8)
    f = run(z.peer_context, z.peer_prompts, skip, 8, z.peer_tokens, z.jac_chunk, s.device, z.peer_layers, z.peer_width)
    lens = {k: float(np.mean([e[k] for e in f["lens"]])) for k in ("rel_frobenius_diff", "matrix_cosine", "top8_overlap")}
    block_diff = max(e["max_rel_block_diff"] for e in f["coupling"])
    coupling_diff = max(e["max_coupling_diff"] for e in f["coupling"])

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("jacobian_peers", f"Jacobian lens per prompt, GPT-2 shape {f['layers']} x {f['width']}, context {f['context']}, "
                    f"{f['prompts']} prompt(s)",
                    f["lens_ours_s_per_prompt"], f["lens_peer_s_per_prompt"], f["lens_speedup"],
                    "peers / ours (speedup)", mem,
                    f"ours E_t[J(t, t)] exact; peers' lens (sum over later targets) differs by "
                    f"{lens['rel_frobenius_diff']:.1%} (Frobenius), cosine {lens['matrix_cosine']:.3f}, top-8 "
                    f"overlap {lens['top8_overlap']:.2f} (chance {TOP / f['width']:.3f})"),
                row("jacobian_peers", f"block coupling per prompt, {f['coupling_tokens']} tokens x {f['layers']} layers",
                    f["coupling_ours_s_per_prompt"], f["coupling_peer_s_per_prompt"], f["coupling_speedup"],
                    "per-token / ours (speedup)", mem,
                    f"same blocks: max rel diff {block_diff:.0e}, coupling matrices differ by {coupling_diff:.0e}")]

    return f, rows
