"""The training engine behind `lyra train cfg.toml` (imported only when training).

    engine                  `train(cfg)`, `TrainResult`, the `Trainer` that ties the parts: the loop, saving
    run_setup               set-up and resume: the previous run, --init-from weights, the model,
                            optimizer and data files, restoring a checkpoint's training state
    steps                   one optimizer step: micro-batches, AMP, accumulation, backward,
                            clipping, skipped steps, EMA; the loss terms a step logs (`TERMS`)
    validation              validation (rank 0), its audio and spectrogram pictures, metrics.png, best value
    forward                 the training forward pass with per-example posterior noise
    losses/                 the loss terms: `reconstruction` (STFT, waveform, mel), `kl` (and
                            its annealing), `adversarial` (GAN losses, feature matching, balancer)
    discriminator_training  the discriminators of [adversarial]: building, optimizer, scaler, state
    config                  the run config: TOML -> typed dataclasses, `lyra config init` text
    data                    audio folder -> random crops, the data order, the validation crops
    schedule                the learning rate as a function of the step
    optim                   AdamW parameter groups (which weights decay)
    ema                     the exponential moving average of the weights
    state                   the training state as plain data (RNG states, `RunStart`, `Position`)
                            and the checks of what a resumed run reads
    resume_check            which settings a resumed run may change (warned) or not (refused)
    checkpointing           numbered snapshots, keep-last-K, latest.pt and best.pt
    interrupt               SIGINT/SIGTERM -> finish the step, save, stop
    activation_checkpointing  recompute residual units in the backward pass
    metrics_log             metrics.jsonl (+ optional W&B / TensorBoard)

May import: everything below it (`lyra.core`, `lyra.audio`, `lyra.pictures`, `lyra.registry`,
`lyra.model`, `lyra.eval`, `lyra.codec`); never `lyra.apps` or the command line. The metrics
live in `lyra.eval`, the progress display in `lyra.core.progress`, torchrun's process groups
in `lyra.core.distributed` and the validation pictures in `lyra.pictures`. What runs the
engine lives above it: `lyra.apps.demo` (the `lyra demo` run, on `lyra.audio.synth`'s
synthetic data) and `lyra.apps.benchmark` (training throughput and memory, eager vs
compiled). See docs/training.md and docs/architecture.md.
"""
