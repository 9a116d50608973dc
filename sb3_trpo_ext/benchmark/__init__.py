"""
Everything that measures this TRPO, in one place (results are written under ``benchmarks/results/`` of a checkout).

- ``python -m sb3_trpo_ext.benchmark``: side by side with sb3-contrib's TRPO and SB3's PPO (``cli``; ``settings``
  says what each algorithm is given, ``run`` trains and measures one run, ``report`` writes tables and plots,
  ``provenance`` records what produced a run).
- ``python -m sb3_trpo_ext.benchmark.zoo_validate``: a packaged zoo entry through the zoo command, several seeds.
- ``python -m sb3_trpo_ext.benchmark.entry_variants``: variants of an entry on seeds kept apart from the reporting ones.
- ``python -m sb3_trpo_ext.benchmark.profile_update``: the two TRPOs' update and rollout interleaved, with cProfile.
- ``python -m sb3_trpo_ext.benchmark.speed_options``: speed options measured and not taken.

All need the ``bench`` extra.
"""
