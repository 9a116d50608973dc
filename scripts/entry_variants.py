"""
Train variants of a packaged zoo entry on several seeds and record each run's final deterministic return: the
tool for trying a few settings by hand, on seeds kept apart from the reporting seeds 0-4.

    python scripts/entry_variants.py --env CartPole-v1 --seeds 100 101 102 \\
        --variant "" --variant "target_kl=0.02" --variant "target_kl=0.02,n_steps=1024" \\
        --output benchmarks/results/development/variants/CartPole-v1.jsonl

A variant is a comma-separated list of KEY=VALUE over the entry (values read as Python literals; the empty variant
is the entry itself; ``n_envs``, ``n_timesteps`` and ``env_kwargs`` are accepted too). ``trial=N`` takes the
hyperparameters trial N of the task's study (``scripts/tune.py``'s journal; ``study="NAME"`` names another) tried, as
rl_zoo3 did: over the entry. That is how a study's best trials are compared on more seeds than the one each trial
had. Each run is one JSON line: the env, variant, seed, steps, the hyperparameters, the final mean return over 10
deterministic episodes on a separate environment, the evaluations along the way, and the provenance (commit,
versions, code). A line already in the output is not run again, so the command resumes, unless what its variant
stands for has changed since (the packaged entry, the algorithm's code, a package version): that run is made again
and appended.
"""

import argparse
import ast
import dataclasses
import json
import multiprocessing
from pathlib import Path
from typing import Any

import torch as th

from sb3_trpo_ext.benchmark.provenance import provenance, reproduces
from sb3_trpo_ext.benchmark.run import LearningCurve, make_env
from sb3_trpo_ext.benchmark.settings import RunSettings, run_settings, settings_record, zoo_entry
from sb3_trpo_ext.zoo import ALGO


def parse_variant(text: str) -> dict[str, Any]:
    """``"a=1, b={'c': 2}"`` -> {"a": 1, "b": {"c": 2}}: keyword arguments whose values are Python literals."""
    call = ast.parse(f"variant({text})", mode="eval").body
    assert isinstance(call, ast.Call) and not call.args, f"not KEY=VALUE,...: {text!r}"
    return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords if keyword.arg is not None}


def study_trial_hyperparameters(
    env_id: str, number: int, journal: Path | None = None, study: str | None = None
) -> dict[str, Any]:
    """The hyperparameters trial ``number`` of the study ``study`` (default: ``env_id``'s) sampled, from its journal
    (default: ``scripts/tune.py``'s, STUDY.log)."""
    import optuna
    from tune import DEFAULT_OUTPUT, _storage

    from sb3_trpo_ext.zoo import convert_trpo_ext_params

    study = study or env_id
    journal = journal or DEFAULT_OUTPUT / f"{study}.log"
    if not journal.exists():
        raise FileNotFoundError(f"trial={number}: no study journal {journal}")
    trials = optuna.load_study(study_name=study, storage=_storage(journal)).get_trials(deepcopy=False)
    if not 0 <= number < len(trials) or not trials[number].params:
        raise ValueError(f"trial={number}: {journal} has trials 0-{len(trials) - 1}, and trial {number} sampled nothing")
    return convert_trpo_ext_params(trials[number].params)


def variant_settings(env_id: str, variant: str, n_timesteps: int | None = None, algo: str = ALGO) -> RunSettings:
    """
    The run settings of the packaged entry with ``variant`` written over it, resolved as the benchmark resolves an
    entry (``n_timesteps``, if given, over both).
    """
    changes = parse_variant(variant)
    study = changes.pop("study", None)
    if "trial" in changes:
        changes = study_trial_hyperparameters(env_id, changes.pop("trial"), study=study) | changes
    where = f"variant {variant!r} of {env_id}"
    name, entry = zoo_entry(algo, env_id)
    if "env_kwargs" in changes:
        # The variant's keyword arguments go over the entry's rather than replacing them.
        entry_env_kwargs = run_settings(name, entry, algo).env_kwargs or {}
        changes["env_kwargs"] = {**entry_env_kwargs, **changes["env_kwargs"]}
    settings = run_settings(name, entry | changes, algo, where)
    return dataclasses.replace(settings, n_timesteps=n_timesteps or settings.n_timesteps)


def why_rerun(record: dict[str, Any], settings: RunSettings, current: dict[str, Any]) -> str | None:
    """
    Why a recorded run of a variant is not the run its (variant, seed) would make now, or None if it is: the entry
    behind a variant changes when the packaged file does, and the code and versions with the checkout.

    :param record: one line of an output file
    :param settings: what the variant resolves to now (:func:`variant_settings`)
    :param current: the provenance a run would record now
    """
    # Through JSON, as the record went: a tuple in env_kwargs reads back as a list.
    wanted = json.loads(json.dumps(_recorded_settings(settings)))
    # Lines written before all of these were recorded are judged by the ones they have.
    differing = [key for key, value in wanted.items() if key in record and record[key] != value]
    if differing:
        return f"its {', '.join(differing)} differ from this command's"
    return reproduces(record.get("provenance", {}), current, record.get("algo", ALGO))


def _recorded_settings(settings: RunSettings) -> dict[str, Any]:
    # The benchmark's run-file settings, plus the budget, which a variant may change.
    return {**settings_record(settings), "n_timesteps": settings.n_timesteps}


def runs_to_make(
    records: list[dict[str, Any]],
    env_id: str,
    algo: str,
    variants: dict[str, RunSettings],
    seeds: list[int],
    current: dict[str, Any],
) -> list[tuple[str, int]]:
    """
    The (variant, seed) pairs, variant by variant, that no record in an output file already made as they would be
    made now; each stale record met on the way is named with :func:`why_rerun`'s reason.

    :param records: the output file's lines
    :param variants: each variant asked for, resolved (:func:`variant_settings`)
    :param current: the provenance a run would record now
    """
    done = set()
    for record in records:
        if record["env"] != env_id or record.get("algo", ALGO) != algo or record["variant"] not in variants:
            continue
        reason = why_rerun(record, variants[record["variant"]], current)
        if reason is None:
            done.add((record["variant"], record["seed"]))
        elif record["seed"] in seeds:
            print(f"running {record['variant'] or '(entry)'} seed {record['seed']} again: {reason}", flush=True)
    return [(variant, seed) for variant in variants for seed in seeds if (variant, seed) not in done]


def run(env_id: str, variant: str, seed: int, n_timesteps: int | None, eval_freq: int, algo: str = ALGO) -> dict[str, Any]:
    th.set_num_threads(1)
    settings = variant_settings(env_id, variant, n_timesteps, algo)
    env = make_env(settings, env_id, seed)
    eval_env = make_env(settings, env_id, seed + 10_000, for_evaluation=True)
    model = settings.model(env, seed)
    curve = LearningCurve(eval_env, eval_freq, n_eval_episodes=10)
    model.learn(settings.n_timesteps, callback=curve)
    if curve.points[-1][0] != model.num_timesteps:
        curve.evaluate()
    return dict(
        env=env_id,
        variant=variant,
        seed=seed,
        steps=int(model.num_timesteps),
        final_return=curve.points[-1][1],
        curve_steps=[step for step, _ in curve.points],
        curve_returns=[value for _, value in curve.points],
        **_recorded_settings(settings),
        provenance=provenance(algo),
        **({} if algo == ALGO else {"algo": algo}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", default=ALGO, help="the zoo algorithm whose entry is varied (this package's)")
    parser.add_argument("--variant", action="append", default=None, help='KEY=VALUE,... over the entry ("" = as is)')
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("-n", "--n-timesteps", type=int, default=None, help="instead of the entry's n_timesteps")
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", required=True, help="JSON-lines file, appended to")
    args = parser.parse_args()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    variants = {variant: variant_settings(args.env, variant, args.n_timesteps, args.algo) for variant in args.variant or [""]}
    records = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    current = provenance(args.algo, threads=1)  # what a run records: its process runs on one thread
    todo = [
        (args.env, variant, seed, args.n_timesteps, args.eval_freq, args.algo)
        for variant, seed in runs_to_make(records, args.env, args.algo, variants, args.seeds, current)
    ]
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        for record in pool.imap(_run, todo):
            with output.open("a") as file:
                file.write(json.dumps(record) + "\n")
            print(f"{record['variant'] or '(entry)'} seed {record['seed']}: {record['final_return']:.1f}", flush=True)


def _run(arguments: tuple) -> dict[str, Any]:
    return run(*arguments)


if __name__ == "__main__":
    main()
