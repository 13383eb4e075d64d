"""The sweep behind `ltc jacobian`: J(t, s) = d b[t] / d a[s] for many (context, t), stored item by item.

Modules: `run` (the `Sweep`: orchestration, storage, resume, shards), `plan` (what is measured:
pairs, settings, items, sources), `items` (one item, exact or sketched), `state` (running sums and
the covariance), `results` (the merged numbers). Names of the output directory: `lth.layout.SweepLayout`.

Order of work: the covariance at every site over `covariance_contexts` contexts first (every
shard computes the same one and stores it once: the propagated covariance of each item needs
Cov(a)), then the items. Each item's file is written atomically, then the shard's state (items
finished and sums) is rewritten.

Resume: an item listed in any state file is never recomputed; an item file without a state
entry (a crash in between) is recomputed. Sharding: shard I of N computes the items with
(context + rank of t) % N == I. The assignment depends only on (context, t), so the sweep can
later be extended (more contexts or targets: both orders are prefix-stable) and resumed with
another shard count.
"""
