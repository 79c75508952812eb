"""The training machinery that every method plugs into.

  trainer         `train_and_evaluate(config, workdir)`: the one loop
  methods         the `Method` protocol, its registry and combination table
  program         `build_program`: optimiser, init, train and eval steps
  steps           `TrainState`, the pure train and eval step functions
  checkpointing   orbax checkpoints of a run: the latest ones and the best
  optim           optimisers and schedules from ``config.optimizer``
  metric_writer   metrics.jsonl, TensorBoard events, progress lines
  workdir         the work directory's lock, atomic writes, recorded config
  config_checks   generic config checks before the first step
"""
