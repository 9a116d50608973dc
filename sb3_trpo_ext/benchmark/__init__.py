"""
The benchmark: this TRPO side by side with sb3-contrib's TRPO and SB3's PPO, ``python -m sb3_trpo_ext.benchmark``
(``cli``). ``settings`` says what each algorithm is given, ``run`` trains and measures one run, ``report`` writes
tables and plots, and ``provenance`` records what produced a run and decides whether a finished run is still current.
Results are written under ``benchmarks/results/`` by default. It needs the ``bench`` extra.

The tools that chose and checked this repository's entries and code (studies, variants, digests, profiles) are not
part of the package: they are in the checkout's ``scripts/`` (its README.md lists them).
"""
