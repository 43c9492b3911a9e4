"""Audio without the model: reading, writing, resampling, channels, the overlap engine, the
`.lyra` latent container (float latents, or integer codes packed at their bit width), audio
folders and synthetic audio.

May import: `lyra.core`. Never the model: the resampler, the file readers and the container
work without it. See docs/architecture.md.
"""
