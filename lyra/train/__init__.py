"""The training engine behind `lyra train cfg.toml` (imported only when training).

    config                  the run config: TOML -> typed dataclasses, `lyra config init` text
    data                    audio folder -> random crops, the data order, the validation crops
    reconstruction          the training forward pass with per-example posterior noise
    engine                  the loop: AMP, accumulation, clipping, KL annealing, validation
    schedule                the learning rate as a function of the step
    state                   resume state as plain data (RNG states included)
    checkpointing           numbered snapshots, keep-last-K, latest.pt and best.pt
    distributed             torchrun detection, process group, device per process
    interrupt               SIGINT/SIGTERM -> finish the step, save, stop
    activation_checkpointing  recompute residual units in the backward pass
    metrics_log             metrics.jsonl (+ optional W&B / TensorBoard)
    toml_writer             TOML output for `lyra config show/init`

The losses live in `lyra.loss`, the evaluation metrics in `lyra.metrics`, the progress display
in `lyra.progress` and the validation pictures in `lyra.spectrogram` and `lyra.plots`. What runs the engine
lives outside it: `lyra.demo` (the `lyra demo` run), `lyra.synth` (its synthetic data)
and `lyra.benchmark` (training throughput and memory, eager vs compiled).
"""
