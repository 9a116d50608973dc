"""
Side-by-side benchmark of sb3-trpo-ext's TRPO, sb3-contrib's TRPO and SB3's PPO: ``python -m sb3_trpo_ext.benchmark``
(needs the ``bench`` extra). ``settings`` says what each algorithm is given, ``run`` trains and measures one run,
``report`` writes the tables and plots.
"""
