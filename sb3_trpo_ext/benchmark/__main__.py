"""``python -m sb3_trpo_ext.benchmark``: see :mod:`sb3_trpo_ext.benchmark.cli`."""

import sys

from sb3_trpo_ext.extras import exits_on_missing_extra, require


@exits_on_missing_extra
def main() -> int:
    # Checked before the benchmark's own imports (pandas, rl_zoo3, sb3-contrib) can fail with a traceback.
    require("bench", "python -m sb3_trpo_ext.benchmark")
    from sb3_trpo_ext.benchmark.cli import main as benchmark

    return benchmark()


if __name__ == "__main__":
    sys.exit(main())
