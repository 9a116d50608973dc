"""
Each bug of the table in docs/testing.md, and each weakened check of the safe loaders (docs/security.md), applied to a
copy of the checkout, against the tests meant to catch it: prints which test caught it, or SURVIVED.

    python tests/mutations.py          # every bug
    python tests/mutations.py 3 7      # bugs 3 and 7
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEQUENCE_FIT = "        for data in buffer.get(batch_size):\n            real = data.mask > 1e-8"
SEQUENCE_STEP = "            policy.optimizer.step()\n            losses.append(loss.detach())"
CELL_STATES = "actor_states=(self.actor_states[0][:, ::k], self.actor_states[1][:, ::k]),"
RESET_INFOS = "for index, reset_info in enumerate(group_reset_infos, start=first):"

#: (name, file, [(text, its replacement), ...], the tests that must catch it)
MUTATIONS = [
    ("the sequence critic's loss over padded steps too", "critic.py",
     [("F.mse_loss(data.returns[real], values[real])", "F.mse_loss(data.returns, values)")], "test_recurrent.py -k by_hand"),
    ("the sequence critic runs one epoch too few", "critic.py",
     [("    for _ in range(n_epochs):\n" + SEQUENCE_FIT, "    for _ in range(n_epochs - 1):\n" + SEQUENCE_FIT)],
     "test_recurrent.py -k by_hand"),
    ("the sequence critic's optimiser skips the last minibatch", "critic.py",
     [(SEQUENCE_FIT, SEQUENCE_FIT.replace("buffer.get(batch_size)", "(batches := list(buffer.get(batch_size)))")),
      (SEQUENCE_STEP, "            if data is not batches[-1]:\n    " + SEQUENCE_STEP)], "test_recurrent.py -k by_hand"),
    ("the sequence critic ignores episode starts", "critic.py",
     [("data.lstm_states.vf, data.episode_starts)", "data.lstm_states.vf, th.zeros_like(data.episode_starts))")],
     "test_recurrent.py -k by_hand"),
    ("sub-sampled sequences keep the hidden state but zero the cell state", "policies.py",
     [(CELL_STATES, CELL_STATES.replace("self.actor_states[1][:, ::k]", "th.zeros_like(self.actor_states[1][:, ::k])"))],
     "test_recurrent.py -k subsampling"),
    ("sub-sampled sequences take the first sequences' cell states", "policies.py",
     [(CELL_STATES, CELL_STATES.replace("self.actor_states[1][:, ::k]", "self.actor_states[1][:, : -(-n_seq // k)]"))],
     "test_recurrent.py -k subsampling"),
    ("the expected improvement's sign flipped where it is computed", "natural_gradient.py",
     [("full_step, (policy_gradient @ full_step).item(),", "full_step, -(policy_gradient @ full_step).item(),")],
     "test_statistics.py test_update.py"),
    ("train/max_kl logs the mean KL", "natural_gradient.py",
     [("max_kl=accepted.max_kl if", "max_kl=accepted.mean_kl if")], "test_statistics.py test_sb3_integration.py"),
    ("train/surrogate_improvement with its sign flipped", "natural_gradient.py",
     [("accepted.surrogate - surrogate_before.item() if", "surrogate_before.item() - accepted.surrogate if")],
     "test_statistics.py"),
    ("train/explained_variance with its arguments swapped", "natural_gradient.py",
     [("explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())",
       "explained_variance(self.rollout_buffer.returns.flatten(), self.rollout_buffer.values.flatten())")],
     "test_statistics.py"),
    ("RayVecEnv writes an auto-reset's reset_infos at the wrong environment index", "ray_vec_env.py",
     [(RESET_INFOS, RESET_INFOS.replace("start=first", "start=(first + 1) % self.num_envs"))], "test_ray.py -k reset_infos"),
]  # fmt: skip

UNTRUSTED = "test_untrusted_files.py -k"
ALLOWED = ("if not isinstance(name, str) or name not in allowed:", "arguments = allowed[name]")

#: The safe loaders' checks, each weakened as a careless change would: (name, file, replacements, tests).
LOADER_MUTATIONS = [
    ("check_tensors skips policy.optimizer.pth", "safe_loading/archive.py",
     [('if name.endswith(".pth"):', 'if name.endswith(".pth") and name != "policy.optimizer.pth":')],
     f"{UNTRUSTED} check_tensors"),
    ("check_tensors reads with weights_only=False", "safe_loading/archive.py",
     [("weights_only=True)", "weights_only=False)")], f"{UNTRUSTED} check_tensors"),
    ("the zoo's YAML loader based on FullLoader", "zoo/guard.py",
     [("class SafeZooLoader(yaml.SafeLoader):", "class SafeZooLoader(yaml.FullLoader):")], f"{UNTRUSTED} python_name"),
    ("the config allowlist matches by top-level package", "safe_loading/allowlist.py",
     [(ALLOWED[0], 'if not isinstance(name, str) or name.split(".")[0] not in {n.split(".")[0] for n in allowed}:'),
      (ALLOWED[1], "arguments = allowed.get(name, {})")], f"{UNTRUSTED} by_prefix"),
    ("the config allowlist matches by prefix", "safe_loading/allowlist.py",
     [(ALLOWED[0], 'if not isinstance(name, str) or not any(name.startswith(n.split(".")[0]) for n in allowed):'),
      (ALLOWED[1], "arguments = allowed.get(name, {})")], f"{UNTRUSTED} by_prefix"),
    ("zoo_value takes any name(k=v) as dict(k=v)", "zoo/values.py",
     [('        and node.func.id == "dict"\n', "")], "test_safe_values.py -k escapes"),
    ("env_kwargs goes unchecked in a saved config", "zoo/guard.py",
     [('"normalize", "env_kwargs", "monitor_kwargs"', '"normalize", "monitor_kwargs"'),
      ('    check_env_kwargs(entry.get("env_kwargs"), f"{where}: env_kwargs")\n', "")], f"{UNTRUSTED} text_key"),
    ("a printed schedule of a foreign zip rebuilt with its first number in every field", "safe_loading/foreign.py",
     [('"value": k.value.value} for k in', '"value": call.keywords[0].value.value} for k in')],
     f"{UNTRUSTED} printed_schedule"),
    ("a zip's environment entry passed on", "safe_loading/allowlist.py",
     [("    if value is not None:\n        raise UnsafeFileError(", "    if False:\n        raise UnsafeFileError(")],
     f"{UNTRUSTED} env_id_from_a_zip"),
    ("Monitor takes a filename from a file", "safe_loading/allowlist.py",
     [('Monitor": {"allow_early_resets": None,', 'Monitor": {"filename": None, "allow_early_resets": None,')],
     f"{UNTRUSTED} place_to_write"),
    ("a negative VecNormalize variance is accepted", "safe_loading/vec_normalize.py",
     [("if np.any(var < 0):", "if False:")], f"{UNTRUSTED} silently_wrong"),
    ("a file's tensorboard_log is kept", "safe_loading/models.py",
     [('objects["tensorboard_log"] = None', 'objects["tensorboard_log"] = data["tensorboard_log"]')],
     f"{UNTRUSTED} where_logs"),
    ("the load limit 1024x looser", "safe_loading/limits.py",
     [("DEFAULT_MAX_LOAD_BYTES = 2**30", "DEFAULT_MAX_LOAD_BYTES = 2**40")], f"{UNTRUSTED} one_gib"),
    ("decompressed bytes counted 1024x too few", "safe_loading/archive.py",
     [("budget.take(copies * len(chunk),", "budget.take(copies * len(chunk) / 1024,")], f"{UNTRUSTED} decompresses"),
    ("the data JSON counted 1024x too few", "safe_loading/limits.py",
     [("JSON_OBJECT_BYTES = 64", "JSON_OBJECT_BYTES = 64 / 1024")], f"{UNTRUSTED} data_json"),
    ("a Box counted 1024x too few", "safe_loading/plain.py",
     [(".itemsize + 2)", ".itemsize + 2) // 1024")], f"{UNTRUSTED} box_is_counted"),
    ("the rollout buffer counted 1024x too few", "safe_loading/models.py",
     [("_BUFFER_BYTES = 2 * 4", "_BUFFER_BYTES = 2 * 4 / 1024")], f"{UNTRUSTED} rollout_buffer_is_counted"),
    ("action masks not counted", "safe_loading/models.py",
     [("per_step += _mask_size(action_space) if masks else 0", "per_step += 0")], f"{UNTRUSTED} masks_and_lstm"),
    ("LSTM states not counted", "safe_loading/models.py",
     [("lstm_numbers = 4 * lstm[0] * lstm[2] if lstm else 0", "lstm_numbers = 0")], f"{UNTRUSTED} masks_and_lstm"),
    ("the policy may exceed its file by 1024x the overhead", "safe_loading/limits.py",
     [("PTH_OVERHEAD_BYTES = 2**16", "PTH_OVERHEAD_BYTES = 2**26")], f"{UNTRUSTED} policy_must_fit"),
    ("a frame stack counted 1024x too few", "zoo/guard.py",
     [("take(2 * n_stack * venv.num_envs * frame,", "take(2 * n_stack * venv.num_envs * frame / 1024,")],
     f"{UNTRUSTED} frame_stack_is_counted"),
    ("1024x the environments from a file", "safe_loading/limits.py",
     [("MAX_ENVS = 1024", "MAX_ENVS = 2**20")], f"{UNTRUSTED} many_environments"),
    ("YAML aliases expanding 1024x further", "zoo/guard.py",
     [("MAX_YAML_NODES = 2**16", "MAX_YAML_NODES = 2**26")], f"{UNTRUSTED} aliases_at_the_limit"),
]  # fmt: skip


def main(chosen: list[str]) -> int:
    survived = 0
    for number, (name, module, replacements, tests) in enumerate(MUTATIONS + LOADER_MUTATIONS, 1):
        if chosen and str(number) not in chosen:
            continue
        copy = Path(tempfile.mkdtemp(prefix=f"mutation{number}-"))
        ignored = shutil.ignore_patterns(".git", "benchmarks", "__pycache__", "*_cache", "build", "*.egg-info", ".ci-*")
        shutil.copytree(ROOT, copy / "checkout", ignore=ignored)
        path = copy / "checkout" / "sb3_trpo_ext" / module
        text = path.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, (name, old)
            text = text.replace(old, new)
        path.write_text(text)
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        files, _, selection = tests.partition(" -k ")
        command += [f"tests/{part}" for part in files.split()] + (["-k", selection] if selection else [])
        result = subprocess.run(command, cwd=copy / "checkout", capture_output=True, text=True)
        failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED")]
        survived += result.returncode == 0
        print(f"{number}. {name}: " + (f"caught by {failed[0]}" if result.returncode and failed else "SURVIVED"), flush=True)
        shutil.rmtree(copy)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
