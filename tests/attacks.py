"""
Files a stranger could send, made as an attacker would make them (docs/security.md): the techniques the loaders are
tested against, and a variant of each. ``python tests/attacks.py FOLDER`` loads the memory cases written to FOLDER by
:func:`write_memory_cases`, one after another in this process, and prints each one's refusal and the growth of the
process's peak memory, as JSON: the test runs it in a fresh process, so that nothing else grows it.
"""

import io
import json
import resource
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

PLAIN = ":plain:"


def edited(archive: bytes, edit_data=None, members: dict[str, bytes] | None = None) -> bytes:
    """The zip ``archive`` with its ``data`` passed through ``edit_data`` and ``members`` replaced or added."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    data = json.loads(source.read("data"))
    if edit_data is not None:
        edit_data(data)
    members = dict(members or {})
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = json.dumps(data).encode() if info.filename == "data" else members.pop(info.filename, source.read(info))
            target.writestr(info.filename, content)
        for name, content in members.items():
            target.writestr(name, content)
    return written.getvalue()


def declaring(archive: bytes, member: str, size: int) -> bytes:
    """The zip ``archive`` whose directory declares ``size`` bytes for ``member`` (its data unchanged): a lie."""
    raw = bytearray(archive)
    name = member.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            name_offset = 30 if signature == b"PK\x03\x04" else 46
            name_length = struct.unpack_from("<H", raw, start + (26 if signature == b"PK\x03\x04" else 28))[0]
            if raw[start + name_offset : start + name_offset + name_length] == name:
                struct.pack_into("<I", raw, start + offset, size)
            start += 4
    return bytes(raw)


def zip_with_a_bomb(archive: bytes, member: str, size: int) -> bytes:
    """The zip ``archive`` with ``member`` (added, or in place of its own) holding ``size`` zero bytes, deflated: a
    few MB for GBs."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for info in source.infolist():
            if info.filename != member:
                target.writestr(info.filename, source.read(info))
        with target.open(member, "w", force_zip64=True) as bomb:
            chunk = bytes(2**24)
            for _ in range(size // len(chunk)):
                bomb.write(chunk)
    return written.getvalue()


def data_padded_to(archive: bytes, size: int) -> bytes:
    """The zip ``archive`` whose ``data`` JSON holds a list of zeros making it ``size`` bytes long, deflated."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    text = source.read("data").rstrip()[:-1] + b', "padding": ['
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != "data":
                target.writestr(info.filename, source.read(info))
        with target.open("data", "w", force_zip64=True) as data:
            data.write(text)
            zeros = b"0," * 2**14
            count = max(0, (size - len(text)) // len(zeros))
            for _ in range(count):
                data.write(zeros)
            data.write(b"0]}")
    return written.getvalue()


def box(shape: list[int], dtype: str = "float64") -> dict[str, Any]:
    return {"space": "Box", "shape": shape, "dtype": dtype, "low": -1.0, "high": 1.0}


def with_space(key: str, space: dict[str, Any]):
    def edit(data):
        data[key][PLAIN] = {"kind": "space", **space}

    return edit


def with_values(**values):
    def edit(data):
        data.update(values)

    return edit


def billion_laughs(key: str, levels: int = 30) -> str:
    """A YAML mapping whose ``key`` holds 2**levels copies of a string through nested aliases: a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    lines.append(f"{key}: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def write_memory_cases(folder: Path, zips: dict[str, bytes]) -> list[str]:
    """Write each memory case's file(s) into ``folder``: the zips of ``zips`` (TRPO, MaskableTRPO, RecurrentTRPO,
    maskable_image: MaskableTRPO on images), crafted. Returns the cases' names."""
    trpo, maskable, recurrent = zips["trpo"], zips["maskable"], zips["recurrent"]
    cases = {
        # the techniques found
        "dict of 12 Boxes of 2^24 float64": edited(trpo, with_space("observation_space", {
            "space": "Dict", "spaces": {f"b{i}": box([2**24]) for i in range(12)}})),
        "policy.pth declaring 0xFFFFFFF0 bytes, net_arch [20000, 20000]": declaring(
            edited(trpo, with_values(policy_kwargs={"net_arch": [20000, 20000]})), "policy.pth", 0xFFFFFFF0),
        "data of 250 MB of JSON": data_padded_to(trpo, 250 * 2**20),
        "an extra member of 3 GiB": zip_with_a_bomb(trpo, "extra.pth", 3 * 2**30),
        "MaskableTRPO, n_steps 8e6 and its masks": edited(zips["maskable_image"], with_values(n_steps=8_000_000)),
        "RecurrentTRPO, n_envs 1e6 and its LSTM states": edited(recurrent, with_values(n_envs=1_000_000)),
        # variants
        "Dicts of Dicts of Boxes": edited(trpo, with_space("observation_space", {"space": "Dict", "spaces": {
            f"d{i}": {"space": "Dict", "spaces": {f"b{j}": box([2**20]) for j in range(16)}} for i in range(64)}})),
        "an action Box of 2^22 float32 (the policy's output layer)": edited(
            trpo, with_space("action_space", box([2**22], "float32"))),
        "policy.optimizer.pth of 3 GiB": zip_with_a_bomb(trpo, "policy.optimizer.pth", 3 * 2**30),
        "MaskableTRPO, MultiDiscrete masks of 2^24 per step": edited(maskable, with_space("action_space", {
            "space": "MultiDiscrete", "shape": [16], "nvec": [2**20] * 16, "start": [0] * 16, "dtype": "int64"})),
        "RecurrentTRPO, an LSTM of 2^15 units": edited(recurrent, with_values(
            policy_kwargs={"lstm_hidden_size": 2**15, "net_arch": [8]})),
    }  # fmt: skip
    for index, content in enumerate(cases.values()):
        (folder / f"{index}.zip").write_bytes(content)
    (folder / "names.json").write_text(json.dumps(list(cases)))
    configs = {
        "config.yml, frame_stack 1e8": {"frame_stack": 100_000_000},
        "config.yml, VecFrameStack n_stack 1e8": {
            "vec_env_wrapper": [{"stable_baselines3.common.vec_env.VecFrameStack": {"n_stack": 100_000_000}}]
        },
    }
    for index, config in enumerate(configs.values()):
        run = folder / f"run{index}"
        (run / "CartPole-v1").mkdir(parents=True)
        (run / "CartPole-v1" / "config.yml").write_text(yaml.safe_dump(config))
    laughs = {
        "config.yml, aliases in env_wrapper": ("config.yml", billion_laughs("env_wrapper")),
        "config.yml, aliases in normalize": ("config.yml", billion_laughs("normalize")),
        "args.yml, aliases in env_kwargs": ("args.yml", billion_laughs("env_kwargs")),
    }
    for index, (file, text) in enumerate(laughs.values()):
        (folder / f"laughs{index}").mkdir()
        (folder / f"laughs{index}" / file).write_text(text)
    (folder / "configs.json").write_text(json.dumps([list(configs), list(laughs)]))
    return list(cases) + list(configs) + list(laughs)


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_memory_cases(folder: Path) -> list[dict[str, Any]]:
    """Load each case of ``folder``; each must be refused with a ValueError. Returns each one's message and the
    growth of the peak memory over the warmed-up process."""
    import torch as th

    th.set_num_threads(1)
    from rl_zoo3.utils import create_test_env, get_saved_hyperparams

    from sb3_trpo_ext import TRPO, MaskableTRPO, RecurrentTRPO
    from sb3_trpo_ext.zoo.guard import check_saved_config, guarded

    loaders = {"MaskableTRPO": MaskableTRPO, "RecurrentTRPO": RecurrentTRPO}
    names = json.loads((folder / "names.json").read_text())
    configs, laughs = json.loads((folder / "configs.json").read_text())
    # Warmed up by honest loads of each algorithm, so that the baseline holds what any load needs.
    for name, algorithm in (("trpo", TRPO), ("maskable", MaskableTRPO), ("recurrent", RecurrentTRPO)):
        algorithm.load(folder / f"honest_{name}.zip")
    with guarded():
        yaml.load("a: 1", Loader=yaml.UnsafeLoader)
    baseline = _peak()
    results = []

    def attempt(name: str, load) -> None:
        try:
            load()
            message = None
        except ValueError as error:
            message = str(error)
        results.append({"case": name, "refused": message, "growth": _peak() - baseline})

    for index, name in enumerate(names):
        algorithm = next((value for key, value in loaders.items() if key in name), TRPO)
        attempt(name, lambda index=index, algorithm=algorithm: algorithm.load(folder / f"{index}.zip"))
    for index, name in enumerate(configs):
        stats_path = str(folder / f"run{index}" / "CartPole-v1")

        def enjoy_env(stats_path=stats_path):
            with guarded():
                hyperparams, path = get_saved_hyperparams(stats_path)
                create_test_env("CartPole-v1", n_envs=1, stats_path=path, hyperparams=hyperparams)

        attempt(name, enjoy_env)
    for index, name in enumerate(laughs):
        laughs_folder = folder / f"laughs{index}"

        def read_config(laughs_folder=laughs_folder):
            check_saved_config(laughs_folder)

        def rl_zoo3_reads(laughs_folder=laughs_folder):
            with guarded():
                for file in laughs_folder.iterdir():
                    with open(file) as stream:
                        print(yaml.load(stream, Loader=yaml.UnsafeLoader))

        attempt(name, read_config)
        attempt(name + " (rl_zoo3 reading it)", rl_zoo3_reads)
    return results


if __name__ == "__main__":
    print(json.dumps(run_memory_cases(Path(sys.argv[1]))))
