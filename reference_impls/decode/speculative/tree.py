"""Tree speculative decoding (SpecInfer / EAGLE arXiv 2401.15077, 2406.16858 style static tree).

Tree buffers from ``parents [N]`` (node 0 = root = the last emitted token, ``parents[0] = -1``, parents
before children): ``depth``, the ancestor mask ``[N, N]`` (node i sees j iff j is i or an ancestor of i),
position ids ``= base + depth`` and ``retrieve_indices [paths, max_depth + 1]`` (root-to-leaf node ids,
-1 padded). The target scores all N nodes in **one** forward with the tree mask.

* Greedy: each root-to-leaf path is checked with ``ops.spec_verify.verify_paths`` (longest prefix with
  ``token == argmax`` of the parent's target logits; EAGLE ``evaluate_posterior``); the longest path wins
  (first on ties) and the target's argmax after it is emitted. Equals greedy AR.
* Sampling: per-depth sibling rejection sampling (recursive rejection sampling; SpecInfer / EAGLE): the
  draft proposes a node's children **without replacement** (Gumbel-top-k); they are tried in order, child
  x accepted with ``min(1, q(x)/p(x))``; on rejection ``q <- norm(relu(q - p))`` and x is removed from p
  (``p[x] = 0``, renormalised). Accepted child -> descend with the target's distribution at that child;
  all rejected -> sample the residual; leaf reached -> bonus sample. Preserves the target distribution.
* KV: the target's cache keeps only prefix + root + accepted nodes -- ``keep_slots`` (``ops.kv_compact``).
  The draft's tree entries are rolled back and the accepted tokens re-fed at the next step; the draft
  re-feeds the partial tree at each depth (chunk-masked), O(depth * N) draft tokens per step.

Tree shape: ``choices`` in EAGLE's notation (each a tuple of child ranks from the root, e.g.
``[(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)]``). Deviations: static tree (no EAGLE-2 dynamic
expansion); the draft is a separate small LM, not EAGLE's feature-level head; batch size 1; the draft's
accepted-path entries are recomputed rather than compacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from reference_impls.decode.speculative.base import SpecLM, check_prompt, logits_to_probs, sample, start_pair, uniform
from reference_impls.decode.speculative.lvlm_adapter import SpeculativeTechnique
from reference_impls.ops.spec_verify import verify_paths

DEFAULT_CHOICES = ((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0, 0))


@dataclass
class TreeBuffers:
    parents: torch.Tensor  # [N] int64, -1 for the root
    rank: torch.Tensor  # [N] int64 child rank among siblings (root: 0)
    depth: torch.Tensor  # [N] int64
    ancestor_mask: torch.Tensor  # [N, N] bool
    retrieve_indices: torch.Tensor  # [paths, max_depth + 1] int64, -1 padded

    @property
    def n_nodes(self) -> int:
        return self.parents.numel()

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def children(self, node: int) -> list:
        idx = (self.parents == node).nonzero().flatten()
        return idx[self.rank[idx].argsort()].tolist()


def tree_from_choices(choices: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """EAGLE-style choice paths -> ``(parents [N], rank [N])`` with the root as node 0, breadth-first order."""
    paths = sorted({tuple(c) for c in choices}, key=lambda c: (len(c), c))
    if any(len(c) == 0 or min(c) < 0 for c in paths):
        raise ValueError("every choice must be a non-empty tuple of non-negative child ranks")
    index = {(): 0}
    parents, rank = [-1], [0]
    for c in paths:
        if c[:-1] not in index:
            raise ValueError(f"choice {c} has no parent {c[:-1]} in the tree")
        index[c] = len(parents)
        parents.append(index[c[:-1]])
        rank.append(c[-1])
    for c in paths:  # sibling ranks must be 0..n-1 so they map onto top-n draft proposals
        sib = sorted(r for p in paths if p[:-1] == c[:-1] for r in [p[-1]])
        if sib != list(range(len(sib))):
            raise ValueError(f"child ranks under {c[:-1]} must be 0..n-1, got {sib}")
    return torch.tensor(parents), torch.tensor(rank)


def naive_ancestor_mask(parents: torch.Tensor) -> torch.Tensor:
    """Loop reference: walk each node's parent chain."""
    n = parents.numel()
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = int(parents[j])
    return mask


def build_tree(parents: torch.Tensor, rank: Optional[torch.Tensor] = None) -> TreeBuffers:
    """Vectorised buffers (the mask by pointer doubling, log2(depth) boolean matmuls)."""
    parents = torch.as_tensor(parents, dtype=torch.long)
    n = parents.numel()
    if n < 1 or int(parents[0]) != -1 or bool((parents[1:] < 0).any()):
        raise ValueError("parents[0] must be -1 (root) and every other node needs a parent")
    if bool((parents[1:] >= torch.arange(1, n)).any()):
        raise ValueError("parents must precede their children (parents[i] < i)")
    rank = torch.zeros(n, dtype=torch.long) if rank is None else torch.as_tensor(rank, dtype=torch.long)
    depth = torch.zeros(n, dtype=torch.long)
    for i in range(1, n):
        depth[i] = depth[parents[i]] + 1
    # reach[i, j]: j is reachable from i by following <= 2^s parent links
    reach = torch.eye(n, dtype=torch.bool)
    reach[torch.arange(1, n), parents[1:]] = True
    hops = 1
    while hops < int(depth.max()):
        reach = reach | ((reach.float() @ reach.float()) > 0)
        hops *= 2
    is_leaf = torch.ones(n, dtype=torch.bool)
    is_leaf[parents[1:]] = False
    leaves = is_leaf.nonzero().flatten().tolist()
    retrieve = torch.full((len(leaves), int(depth.max()) + 1), -1, dtype=torch.long)
    for r, leaf in enumerate(leaves):
        chain = reach[leaf].nonzero().flatten()  # ancestors incl. self, sorted = by depth
        retrieve[r, : chain.numel()] = chain
    return TreeBuffers(parents, rank, depth, reach, retrieve)


def gumbel_topk(probs: torch.Tensor, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """k draws without replacement from ``probs [V]``, in draw order (Gumbel-top-k)."""
    g = -torch.log(-torch.log(torch.rand(probs.shape, generator=generator, device=probs.device).clamp_min(1e-20)))
    return (probs.clamp_min(1e-30).log() + g).topk(k).indices


def draft_tree(
    draft: SpecLM,
    pending: torch.Tensor,
    tree: TreeBuffers,
    *,
    greedy: bool,
    temperature: float,
    generator: Optional[torch.Generator],
):
    """Fill the tree's tokens with the draft, depth by depth. At depth d the draft's tree entries of the previous
    depth are rolled back and all non-root nodes of depth < d are re-fed as one chunk with the ancestor mask
    (the model's chunk mask covers only the chunk, so cached siblings must not stay in the cache).
    Returns ``(tokens [N] (root = pending[-1]), draft probs {node: p [V]} of expanded nodes (sampling),
    n_forward_calls)``; on return the draft cache holds exactly the prefix + ``pending``."""
    device = pending.device
    tokens = torch.full((tree.n_nodes,), -1, dtype=torch.long, device=device)
    tokens[0] = pending[-1]
    node_logits = {0: draft.forward(pending.view(1, -1))[0, -1]}
    root_pos = draft.next_position - 1
    n_calls, n_fed = 1, 0
    probs = {}
    for d in range(1, tree.max_depth + 1):
        for parent in (tree.depth == d - 1).nonzero().flatten().tolist():
            kids = tree.children(parent)
            if not kids:
                continue
            lg = node_logits[parent]
            if greedy:
                choice = lg.topk(len(kids)).indices
            else:
                p = logits_to_probs(lg, temperature)
                probs[parent] = p
                choice = gumbel_topk(p, len(kids), generator)
            tokens[torch.tensor(kids, device=device)] = choice
        if d == tree.max_depth or not any(tree.children(n) for n in (tree.depth == d).nonzero().flatten().tolist()):
            break
        draft.rollback(n_fed)
        nodes = ((tree.depth >= 1) & (tree.depth <= d)).nonzero().flatten()
        mask = tree.ancestor_mask[nodes][:, nodes].to(device)
        pos = (root_pos + tree.depth[nodes]).to(device).view(1, -1)
        out = draft.forward(tokens[nodes.to(device)].view(1, -1), positions=pos, chunk_mask=mask)[0]
        n_calls += 1
        n_fed = nodes.numel()
        for j, n in enumerate(nodes.tolist()):
            node_logits[n] = out[j]
    draft.rollback(n_fed)
    draft.set_next_position(root_pos + 1)
    return tokens, probs, n_calls


def sibling_rejection(q: torch.Tensor, p: torch.Tensor, child_tokens: Sequence[int], u: torch.Tensor):
    """Recursive rejection over siblings proposed without replacement from ``p``.
    Returns ``(index of the accepted child or -1, residual q when none accepted)``."""
    q = q.clone().float()
    p = p.clone().float()
    for i, x in enumerate(child_tokens):
        if float(u[i]) * float(p[x]) < float(q[x]):
            return i, None
        q = (q - p).clamp_min(0)
        q = q / q.sum() if float(q.sum()) > 0 else q
        p[x] = 0
        p = p / p.sum() if float(p.sum()) > 0 else p
    return -1, q


def speculative_generate_tree(
    target: SpecLM,
    draft: SpecLM,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    choices: Sequence[Sequence[int]] = DEFAULT_CHOICES,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    eos_token_id: Optional[int] = None,
    impl: str = "auto",
    target_prefill_kwargs: Optional[dict] = None,
    draft_prefill_kwargs: Optional[dict] = None,
    target_prefill_logits: Optional[torch.Tensor] = None,
):
    """Tree speculative decoding. Returns ``(tokens [n] int64, SpecStats)``."""
    check_prompt(prompt_ids, max_new_tokens)
    tree = build_tree(*tree_from_choices(choices))
    first, stats = start_pair(
        target,
        draft,
        prompt_ids,
        greedy=greedy,
        temperature=temperature,
        generator=generator,
        target_kwargs=target_prefill_kwargs,
        draft_kwargs=draft_prefill_kwargs,
        target_logits=target_prefill_logits,
    )
    out = [int(first)]
    device = prompt_ids.device
    pending = first.view(1)
    while len(out) < max_new_tokens and not (eos_token_id is not None and out[-1] == eos_token_id):
        # ---- draft: propose the tree, then forget its tree entries
        tokens, dprobs, n_calls = draft_tree(
            draft, pending, tree, greedy=greedy, temperature=temperature, generator=generator
        )
        stats.draft_calls += n_calls
        # ---- target: one forward over root + all nodes with the tree mask
        base_len = target.cache_len
        root_pos = target.next_position
        pos = (root_pos + tree.depth).to(device).view(1, -1)
        t_logits = target.forward(tokens.view(1, -1), positions=pos, chunk_mask=tree.ancestor_mask.to(device))[0]
        stats.target_calls += 1
        if greedy:
            path_nodes, nxt = _greedy_tree_accept(tree, tokens, t_logits, impl)
        else:
            path_nodes, nxt = _sampling_tree_accept(tree, tokens, t_logits, dprobs, temperature, generator)
        n_acc = len(path_nodes) - 1
        # ---- KV: keep prefix + accepted path (root included)
        keep = torch.cat([torch.arange(base_len), base_len + torch.tensor(path_nodes)]).to(device)
        target.keep_slots(keep)
        target.set_next_position(root_pos + n_acc + 1)
        stats.accepted.append(n_acc)
        stats.drafted.append(tree.max_depth)
        emitted = tokens[torch.tensor(path_nodes[1:], dtype=torch.long, device=device)].tolist() + [nxt]
        if eos_token_id is not None and eos_token_id in emitted:
            emitted = emitted[: emitted.index(eos_token_id) + 1]
        out.extend(emitted)
        pending = torch.tensor(emitted[:-1] + [nxt], device=device) if n_acc else torch.tensor([nxt], device=device)
    return torch.tensor(out[:max_new_tokens], dtype=torch.long), stats


def _greedy_tree_accept(tree: TreeBuffers, tokens, t_logits, impl):
    ri = tree.retrieve_indices.to(tokens.device)  # [P, D+1]
    P, D1 = ri.shape
    valid = ri >= 0
    lengths = valid.sum(-1) - 1  # path length in nodes below root
    last = ri.gather(1, lengths[:, None])
    rows = torch.where(valid, ri, last)  # pad with the path's last node
    draft_tokens = torch.where(valid[:, 1:], tokens[rows[:, 1:]], torch.full_like(rows[:, 1:], -1))
    acc, nxt = verify_paths(draft_tokens, t_logits[rows], greedy=True, impl=impl)
    best = int(acc.argmax())
    n = int(acc[best])
    return ri[best, : n + 1].tolist(), int(nxt[best])


def _sampling_tree_accept(tree: TreeBuffers, tokens, t_logits, dprobs, temperature, generator):
    node = 0
    path = [0]
    while True:
        q = logits_to_probs(t_logits[node], temperature)
        kids = tree.children(node)
        if not kids:
            return path, int(sample(q, generator))
        u = uniform((len(kids),), generator, q.device)
        idx, residual = sibling_rejection(q, dprobs[node], [int(tokens[c]) for c in kids], u)
        if idx < 0:
            return path, int(sample(residual, generator))
        node = kids[idx]
        path.append(node)


@dataclass
class TreeSpeculativeDecoding(SpeculativeTechnique):
    """Static-tree speculative decoding (greedy) on the minimal LVLM; ``choices`` in EAGLE's notation."""

    name: ClassVar[str] = "eagle_tree"
    draft: object = None
    draft_layers: int = 1
    choices: Sequence[Sequence[int]] = DEFAULT_CHOICES
    impl: str = "auto"

    def run(self, target, draft, prompt_ids, max_new_tokens, prefill_kwargs):
        return speculative_generate_tree(
            target,
            draft,
            prompt_ids,
            max_new_tokens,
            choices=self.choices,
            impl=self.impl,
            target_prefill_kwargs=prefill_kwargs,
            draft_prefill_kwargs=prefill_kwargs,
        )
