"""
The critic's fit with its minibatch step in numpy (``NumpyMlpCritic``, taken on the CPU for minibatches of up to
``NUMPY_MINIBATCH`` samples; here whatever the minibatch) against the same step in torch's kernels, and ``train()``
with each: one model of this TRPO's entry, the two alternating in one process on one torch thread, each fit on the
same rollout. Prints the medians in ms and the median [min, max] of the ratio numpy / torch over the repeats.

    python scripts/critic_speed.py CartPole-v1 --repeats 10

Run it on a machine doing nothing else: it compares speeds.
"""

import argparse
import statistics
import time

import torch as th
from rollout_overhead import learned_model

import sb3_trpo_ext.critic as critic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(1)
    model = learned_model("trpo_ext", args.env)
    takes = critic.NumpyMlpCritic.takes
    steps = {"numpy": lambda network, batch_size: takes(network, 1), "torch": lambda network, batch_size: False}
    for name, call in (("critic fit", model._fit_critic), ("train()", model.train)):
        times: dict[str, list[float]] = {step: [] for step in steps}
        for _ in range(args.repeats):
            for step, rule in steps.items():
                critic.NumpyMlpCritic.takes = staticmethod(rule)  # type: ignore[method-assign]
                start = time.perf_counter()
                call()
                times[step].append(time.perf_counter() - start)
        critic.NumpyMlpCritic.takes = takes  # type: ignore[method-assign]
        ratios = [new / old for new, old in zip(times["numpy"], times["torch"], strict=True)]
        print(f"{args.env} {name}: numpy {1e3 * statistics.median(times['numpy']):.2f} ms, torch "
              f"{1e3 * statistics.median(times['torch']):.2f} ms; numpy / torch {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
