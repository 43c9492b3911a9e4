"""Bottlenecks: what sits between the encoder and the decoder, a registered component kind.

The encoder's head gives the bottleneck ``h [B, in_channels, F]``; the bottleneck gives the
decoder ``z [B, latent_dim, F]``. Built-ins, chosen by ``[model] bottleneck``:

- ``vae`` (`gaussian`): the default. A Gaussian posterior (mean, log-variance) over a
  continuous latent; files store the posterior mean.
- ``fsq`` (`fsq`): finite scalar quantisation; files store one integer code per group.
- ``rvq`` (`rvq`): residual vector quantisation (descript-audio-codec's factorised, l2-normalised
  codebooks); files store one integer code per quantiser, and fewer quantisers decode.

The contract every bottleneck keeps is `Bottleneck` (`bottleneck.py`); docs/bottlenecks.md
shows a plugin's.
"""
