import os
import sys
from pathlib import Path

import torch
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# Small networks run fastest on one thread, and several threads on a busy machine many times slower (docs/performance.md).
torch.set_num_threads(1)

# "ci": what every test run does; "soak": the long run outside CI (docs/testing.md).
settings.register_profile("ci", max_examples=300)
settings.register_profile("soak", max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
