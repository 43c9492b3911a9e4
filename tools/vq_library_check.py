"""Why Lyra's `rvq` is its own code and not vector-quantize-pytorch's ResidualVQ: does the
library's training pass compile as one graph (`torch.compile(fullgraph=True)`, what Lyra's
compiled stages require), and how many graph breaks does dynamo find in it?

The library is not a Lyra dependency; install it beside, into a folder of its own:

    pip install --target /tmp/vqp --no-deps vector-quantize-pytorch==1.32.0 einx loguru torch_einops_utils
    pip install --target /tmp/vqp einx frozendict
    python tools/vq_library_check.py /tmp/vqp

It prints, per configuration, dynamo's graph and graph-break counts and whether fullgraph
compilation succeeds (BENCHMARKS.md, "Bottlenecks").
"""

from __future__ import annotations

import sys

import torch
import torch._dynamo as dynamo


def main(where: str) -> None:
    sys.path.append(where)
    from vector_quantize_pytorch import ResidualVQ

    torch.manual_seed(0)
    configs = {
        "EMA codebooks, k-means init, dead-code replacement": dict(kmeans_init=True, decay=0.99,
                                                                    threshold_ema_dead_code=2),
        "EMA codebooks, random init": dict(decay=0.99),
    }
    x = torch.randn(8, 200, 64)                     # [B, F, D]: 8 clips of ~9 s at 21.5 Hz, D = 64
    for label, kwargs in configs.items():
        rvq = ResidualVQ(dim=64, num_quantizers=8, codebook_size=1024, codebook_dim=8, **kwargs).train()
        explained = dynamo.explain(rvq)(x)
        reasons = sorted({str(b.reason).splitlines()[0][:60] for b in explained.break_reasons})
        try:
            torch.compile(rvq, fullgraph=True)(x)
            fullgraph = "compiles"
        except Exception as exc:   # what dynamo raises on the first break
            fullgraph = f"fails ({type(exc).__name__})"
        print(f"{label}: {explained.graph_count} graphs, {explained.graph_break_count} graph breaks "
              f"({'; '.join(reasons)}); fullgraph=True {fullgraph}")
        dynamo.reset()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vqp")
