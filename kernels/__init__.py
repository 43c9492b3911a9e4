"""Lyra's Triton kernels (import package `lyra_kernels`).

Only the CUDA path and the Triton-interpreter path of `lyra.snake` import these modules,
lazily: importing `lyra` never imports Triton.
"""
