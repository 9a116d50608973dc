"""
Each bug of the table in docs/testing.md, applied to a copy of the checkout, against the tests meant to catch it:
prints which test caught it, or SURVIVED.

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


def main(chosen: list[str]) -> int:
    survived = 0
    for number, (name, module, replacements, tests) in enumerate(MUTATIONS, 1):
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
        command += [f"tests/{part}" if part.endswith(".py") else part for part in tests.split()]
        result = subprocess.run(command, cwd=copy / "checkout", capture_output=True, text=True)
        failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED")]
        survived += result.returncode == 0
        print(f"{number}. {name}: " + (f"caught by {failed[0]}" if result.returncode and failed else "SURVIVED"), flush=True)
        shutil.rmtree(copy)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
