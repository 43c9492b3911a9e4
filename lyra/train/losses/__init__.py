"""The loss terms of training, one module each: `reconstruction` (the multi-resolution STFT
distance of `lyra.eval.stft`, an L1 waveform term and a log-mel term, by name), `kl` (the
VAE's KL term and its annealing), `adversarial` (GAN losses, feature matching, the gradient
balancer).
"""
