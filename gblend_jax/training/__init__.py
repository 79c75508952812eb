"""The training machinery that every method plugs into.

  trainer         `train_and_evaluate(config, workdir)`: the one loop
  steps           the pure train and eval step functions
  checkpointing   orbax checkpoints of a run: the latest ones and the best
  optim           optimisers and schedules from ``config.optimizer``
  metric_writer   metrics.jsonl, TensorBoard events, progress lines
"""
