"""The founding measurement on a causal language model trained here, across its training, against
randomised twins.

- `lm`: train a small GPT-2 on the embedded text corpus (`ltc lm`), saving Hugging Face
  checkpoints at log-spaced steps (0, 30, 100, 300, ..., final), resumable;
- `twins`: the same architecture with each trained weight matrix's entries permuted;
- `measure`: one model's `ltc jacobian` sweep, end to end (sweep, results, figures, W&B run);
- `training`: `ltc jacobian --checkpoints DIR`: every checkpoint and twin measured the same way,
  the series against the training step, and the answer with intervals (`answer`).
Names of the directories: `lth.layout.LMLayout`, `lth.layout.TrainingSweepLayout`.
"""
