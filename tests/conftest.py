import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# "ci": what every test run does; "soak": the long run outside CI (docs/testing.md).
settings.register_profile("ci", max_examples=300)
settings.register_profile("soak", max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
