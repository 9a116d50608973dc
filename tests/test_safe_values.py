"""Zoo values read from their parse tree: every packaged and rl_zoo3 value the benchmark reads, and refused escapes."""

from pathlib import Path

import pytest
import yaml
from torch import nn

from sb3_trpo_ext.benchmark.settings import settings_for, zoo_config_path
from sb3_trpo_ext.zoo.values import UnsafeValueError, zoo_value

TEXT_KEYS = ("policy_kwargs", "normalize", "env_kwargs")


def test_literals_dicts_and_activations_are_read():
    text = "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[256, 256]))"
    assert zoo_value(text, "policy_kwargs") == {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": nn.ReLU,
        "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    }
    assert zoo_value("{'norm_obs': True, 'clip_obs': 10.0, 'x': (1, -0.5, None)}", "normalize") == {
        "norm_obs": True,
        "clip_obs": 10.0,
        "x": (1, -0.5, None),
    }
    assert zoo_value("dict(include_cfrc_ext_in_observation=False)", "env_kwargs") == {"include_cfrc_ext_in_observation": False}


def test_every_value_of_the_files_the_benchmark_reads_is_read():
    pytest.importorskip("rl_zoo3")  # the baselines' files ship with rl_zoo3 (the bench extra)
    texts = []
    for algo in ("trpo_ext", "npg_ext", "maskable_trpo_ext", "recurrent_trpo_ext", "trpo", "ppo", "ppo_lstm"):
        entries = yaml.safe_load(zoo_config_path(algo).read_text())
        texts += [entry[key] for entry in entries.values() for key in TEXT_KEYS if isinstance(entry.get(key), str)]
    assert len(texts) > 20
    for text in texts:
        zoo_value(text, "policy_kwargs")  # raises for anything that would have to run
    assert settings_for("ppo", "Hopper-v5").hyperparameters["policy_kwargs"]["activation_fn"] is nn.ReLU


ESCAPES = [
    "__import__('pathlib').Path('{marker}').touch()",
    "dict(a=__import__('os').system('touch {marker}'))",
    "().__class__.__mro__[1].__subclasses__()",
    "nn.ReLU.__init__.__globals__['__builtins__']['open']('{marker}', 'w')",
    "nn.Module",
    "[x for x in ().__class__.__bases__]",
    "(lambda: open('{marker}', 'w'))()",
    "dict(**{{'a': 1}})",
    "{{**{{'a': 1}}}}",
    "open('{marker}', 'w')",
    "open(file='{marker}', mode='w')",
    "Popen(args='touch {marker}', shell=True)",
    "nn.ReLU()",
    "dict(a=1",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_are_refused_by_name_and_run_nothing(tmp_path, escape):
    marker = tmp_path / "marker"
    text = escape.format(marker=marker)
    with pytest.raises(UnsafeValueError, match=r"^policy_kwargs of zoo entry 'X': "):
        zoo_value(text, "policy_kwargs of zoo entry 'X'")
    assert not marker.exists()


def test_the_benchmark_refuses_an_entry_with_an_escape(tmp_path, monkeypatch):
    import sb3_trpo_ext.benchmark.settings as settings

    marker = tmp_path / "marker"
    conf = tmp_path / "trpo_ext.yml"
    conf.write_text(f"CartPole-v1:\n  policy_kwargs: \"dict(a=open('{marker}', 'w'))\"\n")
    monkeypatch.setattr(settings, "zoo_config_path", lambda algo: Path(conf))
    with pytest.raises(UnsafeValueError, match="policy_kwargs of zoo entry 'CartPole-v1': \"open"):
        settings_for("trpo_ext", "CartPole-v1")
    assert not marker.exists()
