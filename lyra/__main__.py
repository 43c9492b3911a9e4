"""`python -m lyra ...` (and `torchrun -m lyra train cfg.toml`) run the CLI."""

import sys

from lyra.cli import main

sys.exit(main())
