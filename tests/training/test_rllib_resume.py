"""Checkpoint retention (``keep_checkpoints``) and resuming an RLlib run with a different number of env
runners: the algorithm is built from the current experiment and the checkpoint's state restored into it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from restock.training.checkpoints import prune_checkpoints


def _ckpt_dir(root: Path, names: list[str], latest: str) -> None:
    for n in names:
        (root / n).mkdir(parents=True)
        (root / n / "x").write_text(n)
    (root / "latest.json").write_text(json.dumps({"path": latest}))


def test_prune__keeps_the_newest_n_and_never_the_latest_pointer(tmp_path):
    root = tmp_path / "checkpoints"
    names = [f"{s:012d}" for s in (64, 128, 192, 256, 320)]
    _ckpt_dir(root, [*names, ".tmp-000000000384"], latest=names[-1])
    gone = prune_checkpoints(root, 2)
    assert sorted(p.name for p in gone) == names[:3]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [".tmp-000000000384", *names[3:]]
    # latest.json names an older folder (e.g. a later role restarting at 0 steps): that one stays too
    prune_checkpoints(root, 1)
    assert [p.name for p in root.iterdir() if p.name.isdigit()] == [names[-1]]
    (root / "latest.json").write_text(json.dumps({"path": names[-1]}))
    _ckpt_dir(tmp_path / "b", names, latest=names[0])
    prune_checkpoints(tmp_path / "b", 2)
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == [names[0], names[-1]]
    # None or 0: keep all; no valid latest.json: delete nothing
    _ckpt_dir(tmp_path / "c", names, latest=names[-1])
    assert prune_checkpoints(tmp_path / "c", None) == [] and prune_checkpoints(tmp_path / "c", 0) == []
    (tmp_path / "c" / "latest.json").write_text("{")
    assert prune_checkpoints(tmp_path / "c", 1) == []


def test_prune__sb3_order_is_role_then_steps(tmp_path):
    """SB3 trains roles in turn, each from 0 env steps: the DC's 64-step checkpoint is newer than the
    store's 192-step one."""
    from restock.training.sb3_train import _ckpt_order

    root = tmp_path / "checkpoints"
    for role, steps in (("store", 128), ("store", 192), ("dc", 64)):
        d = root / f"{steps:012d}"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"role": role, "env_steps": steps}))
    (root / "latest.json").write_text(json.dumps({"path": f"{64:012d}"}))
    prune_checkpoints(root, 2, order=lambda p: _ckpt_order(p, ["store", "dc"]))
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"{64:012d}", f"{192:012d}"]


def test_keep_checkpoints__schema_and_dcl_refusal():
    from restock.training.experiment import ExperimentConfig
    from restock.training.train import check_for_trainer

    assert ExperimentConfig().keep_checkpoints == 3
    assert ExperimentConfig(keep_checkpoints=None).keep_checkpoints is None
    with pytest.raises(ValueError, match="keep_checkpoints"):
        ExperimentConfig(keep_checkpoints=-1)
    with pytest.raises(ValueError, match="keep_checkpoints: not used by the dcl trainer"):
        check_for_trainer(ExperimentConfig(keep_checkpoints=5), "dcl")


def _exp(**kw):
    from restock.training.experiment import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "name": "resume",
            "num_envs": 2,
            "seed": 3,
            "keep_best": False,
            "bc_episodes": 0,
            "eval_every": 10**6,
            "eval_episodes": 1,
            "ppo": {"minibatch_size": 64, "n_epochs": 1, "rollout_steps": 16, "target_kl": None},
            **kw,
        }
    )


def _optimizer(algo) -> dict:
    """Every optimiser's per-parameter buffers (Adam: step, exp_avg, exp_avg_sq) from the learner."""
    st = algo.learner_group.get_state(components="learner/optimizer")["learner"]["optimizer"]
    return {name: {i: dict(b) for i, b in v["state"]["state"].items()} for name, v in st.items()}


@pytest.mark.heavy
def test_rllib__keeps_n_checkpoints_then_resumes_with_two_remote_env_runners(tmp_path, monkeypatch):
    """A run in the driver (0 env runners) checkpoints every iteration and keeps the newest 2; resumed
    with 2 remote env runners, the learner and both runners start from the checkpointed weights, the
    env-step counter continues from the checkpoint, and the run trains on."""
    pytest.importorskip("ray")
    torch = pytest.importorskip("torch")
    import restock.training.rllib_train as rt
    from restock.agents.learned import load_role
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.train import train

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    tiny = compile_scenario(load_scenario("tiny"))
    # 32 env steps per iteration (16 periods x 2 environments): checkpoints at 32, 64, 96, 128
    first = _exp(steps=128, checkpoint_every=32, keep_checkpoints=2)
    saved_opt: dict = {}
    real_save = rt.save_checkpoint

    def save_spy(algo, run_dir, net_cfgs, env_steps, *a):
        saved_opt[env_steps] = _optimizer(algo)
        return real_save(algo, run_dir, net_cfgs, env_steps, *a)

    monkeypatch.setattr(rt, "save_checkpoint", save_spy)
    run = train(tiny, first, "rllib", out_root=tmp_path, log=lambda m: None)
    monkeypatch.setattr(rt, "save_checkpoint", real_save)
    ckpts = run / "checkpoints"
    latest = json.loads((ckpts / "latest.json").read_text())
    assert latest["env_steps"] == 128 and latest["path"] == f"{128:012d}"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == [f"{96:012d}", f"{128:012d}"]
    meta = json.loads((ckpts / latest["path"] / "restock.json").read_text())
    assert meta["num_env_runners"] == 0 and meta["env_steps"] == 128
    saved = {k: v.clone() for k, v in load_role(run, "store").state_dict().items()}
    shutil.copytree(ckpts / latest["path"], tmp_path / "kept")  # pruned later by the resumed run

    seen: dict = {}
    real_restore = rt.restore

    def spy(config, ckpt, meta, log):
        algo = real_restore(config, ckpt, meta, log)
        seen["learner"] = algo.learner_group.get_weights(module_ids=["store_policy"])["store_policy"]
        seen["runners"] = algo.env_runner_group.foreach_env_runner(
            lambda er: {k: v.copy() for k, v in er.module["store_policy"].get_state().items()},
            local_env_runner=False,
        )
        seen["optimizer"] = _optimizer(algo)
        seen["n_remote"] = algo.env_runner_group.num_remote_env_runners()
        return algo

    monkeypatch.setattr(rt, "restore", spy)
    logs: list[str] = []
    second = _exp(steps=192, checkpoint_every=32, keep_checkpoints=2, rllib={"num_env_runners": 2})
    train(tiny, second, "rllib", out_root=tmp_path, resume=run, log=logs.append)

    assert any("(128 env steps) with num_env_runners 2 (was 0), num_learners 0" in m for m in logs), logs
    assert seen["n_remote"] == 2 and len(seen["runners"]) == 2
    for k, v in saved.items():
        assert torch.equal(torch.as_tensor(seen["learner"][f"net.{k}"]), v), k
        for st in seen["runners"]:
            assert torch.equal(torch.as_tensor(np.array(st[f"net.{k}"])), v), k
    # Adam's moments and step counts as they were when the checkpoint was written
    opt, ref = seen["optimizer"], saved_opt[128]
    assert opt.keys() == ref.keys() and opt
    for name in ref:
        assert ref[name].keys() == opt[name].keys() and ref[name], name
        for i, buf in ref[name].items():
            assert float(np.asarray(buf["step"])) > 0
            for k in buf:
                assert np.array_equal(np.asarray(opt[name][i][k]), np.asarray(buf[k])), (name, i, k)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumed"] == 1
    latest = json.loads((ckpts / "latest.json").read_text())
    # 2 runners x 16 periods x 2 environments = 64 env steps per iteration, counted on from 128
    assert latest["env_steps"] == 192
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == [f"{128:012d}", f"{192:012d}"]
    assert json.loads((ckpts / latest["path"] / "restock.json").read_text())["num_env_runners"] == 2
    end = load_role(run, "store").state_dict()
    assert any(not torch.equal(end[k], saved[k]) for k in saved)  # it trained on


@pytest.mark.slow
def test_rllib__resume_refuses_another_network_naming_it(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.train import train

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    tiny = compile_scenario(load_scenario("tiny"))
    run = train(tiny, _exp(steps=32, checkpoint_every=32), "rllib", out_root=tmp_path, log=lambda m: None)
    other = _exp(steps=64, network={"hidden": [16]})
    before = {p.name: p.read_bytes() for p in (run / "run.json", run / "config.yaml", run / "scenario.yaml")}
    with pytest.raises(ValueError, match="--resume: the checkpoint 000000000032 was trained with network"):
        train(tiny, other, "rllib", out_root=tmp_path, resume=run, log=lambda m: None)
    # refused before anything in the run directory was rewritten
    assert {
        p.name: p.read_bytes() for p in (run / "run.json", run / "config.yaml", run / "scenario.yaml")
    } == before
    # a checkpoint from before restock.json: RLlib's own folders must hold this experiment's policies,
    # and even then it is refused, having no file hashes to verify it against
    import restock.training.rllib_train as rt

    ckpt = run / "checkpoints" / f"{32:012d}"
    (ckpt / "restock.json").unlink()
    with pytest.raises(ValueError, match=r"restock.json is missing .* cannot be verified\. Start a new run"):
        rt.check_resume(ckpt, {"roles": ["store"]})
    with pytest.raises(ValueError, match=r"holds the policies \['store_policy'\], this experiment trains"):
        rt.check_resume(ckpt, {"roles": ["store", "dc"]})


@pytest.mark.heavy
def test_rllib__resumes_a_one_learner_run_with_two_remote_learners(tmp_path, monkeypatch):
    """A run with the learner in the driver (num_learners 0), resumed with ``num_learners: 2``: both
    remote learners start from the checkpoint's weights and Adam state, the env-step counter continues,
    and the run trains on (heavy: two learner actors; `pytest -m heavy tests/training/test_rllib_resume.py`)."""
    pytest.importorskip("ray")
    torch = pytest.importorskip("torch")
    import restock.training.rllib_train as rt
    from restock.agents.learned import load_role
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.train import train

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    tiny = compile_scenario(load_scenario("tiny"))
    ref_opt: dict = {}
    real_save = rt.save_checkpoint

    def save_spy(algo, run_dir, net_cfgs, env_steps, *a):
        ref_opt[env_steps] = _optimizer(algo)
        return real_save(algo, run_dir, net_cfgs, env_steps, *a)

    monkeypatch.setattr(rt, "save_checkpoint", save_spy)
    small = {"minibatch_size": 16, "n_epochs": 1, "rollout_steps": 16, "target_kl": None}  # 2 learners x 16
    run = train(
        tiny, _exp(steps=64, checkpoint_every=32, ppo=small), "rllib", out_root=tmp_path, log=lambda m: None
    )
    monkeypatch.setattr(rt, "save_checkpoint", real_save)
    saved = {k: v.clone() for k, v in load_role(run, "store").state_dict().items()}

    seen: dict = {}
    real_restore = rt.restore

    def spy(config, ckpt, meta, log):
        algo = real_restore(config, ckpt, meta, log)
        seen["remote"] = not algo.learner_group.is_local
        seen["learners"] = algo.learner_group.foreach_learner(
            lambda ln: {k: np.array(v) for k, v in ln.module["store_policy"].get_state().items()}
        )
        seen["optimizer"] = _optimizer(algo)
        return algo

    monkeypatch.setattr(rt, "restore", spy)
    logs: list[str] = []
    second = _exp(steps=128, checkpoint_every=32, ppo=small, rllib={"num_learners": 2})
    train(tiny, second, "rllib", out_root=tmp_path, resume=run, log=logs.append)
    assert any("(64 env steps) with num_env_runners 0, num_learners 2 (was 0)" in m for m in logs), logs
    assert seen["remote"] and len(seen["learners"]) == 2
    for res in seen["learners"]:
        st = res.get() if hasattr(res, "get") else res
        for k, v in saved.items():
            assert torch.equal(torch.as_tensor(st[f"net.{k}"]), v), k
    opt, ref = seen["optimizer"], ref_opt[64]  # Adam's moments and steps as checkpointed
    assert opt.keys() == ref.keys() and opt
    for name in ref:
        assert ref[name].keys() == opt[name].keys() and ref[name], name
        for i, buf in ref[name].items():
            for k in buf:
                assert np.array_equal(np.asarray(opt[name][i][k]), np.asarray(buf[k])), (name, i, k)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumed"] == 1
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["env_steps"] == 128
    end = load_role(run, "store").state_dict()
    assert any(not torch.equal(end[k], saved[k]) for k in saved)  # it trained on


# --- pickle-free, hashed checkpoints: a resume refuses pickles, changed files and msgpack_numpy object arrays


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One tiny RLlib run with a checkpoint at 32 env steps (each test tampers with its own copy)."""
    pytest.importorskip("ray")
    pytest.importorskip("msgpack_numpy")
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.train import train

    tiny = compile_scenario(load_scenario("tiny"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONHASHSEED", "0")
        run = train(
            tiny,
            _exp(steps=32, checkpoint_every=32),
            "rllib",
            out_root=tmp_path_factory.mktemp("saved"),
            log=lambda m: None,
        )
    return tiny, run


def _copy_run(saved_run, tmp_path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(saved_run[1], run)
    return run, run / "checkpoints" / f"{32:012d}"


def _rehash(ckpt: Path, rel: str) -> None:
    """Record the file's new SHA-256 in restock.json, so only the other checks can catch it."""
    meta = json.loads((ckpt / "restock.json").read_text())
    meta["files"][rel] = hashlib.sha256((ckpt / rel).read_bytes()).hexdigest()
    (ckpt / "restock.json").write_text(json.dumps(meta))


_UNPICKLED: list[str] = []


def _unpickled() -> str:
    _UNPICKLED.append("unpickled")
    return "unpickled"


class _Marker:
    """Unpickling it calls _unpickled, so a test can tell whether anything unpickled it."""

    def __reduce__(self):
        return (_unpickled, ())


@pytest.mark.slow
def test_rllib_checkpoint__msgpack_state_hashed_and_resumable(saved_run, tmp_path, monkeypatch):
    """Every component's state file is msgpack (the only pickles are RLlib's class_and_ctor_args.pkl,
    which restore_from_path never reads), restock.json lists the SHA-256 of every other file, and the run
    resumes from it (RLlib loading the msgpack state) to a checkpoint of the same kind."""
    tiny, _ = saved_run
    run, ckpt = _copy_run(saved_run, tmp_path)
    files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    pickles = [f for f in files if f.endswith(".pkl")]
    assert {Path(f).name for f in pickles} == {"class_and_ctor_args.pkl"}, pickles  # RLlib writes it, always
    components = sorted({str(Path(f).parent) for f in files if f.endswith("class_and_ctor_args.pkl")})
    assert "learner_group/learner/rl_module/store_policy" in components and "env_runner" in components
    for c in components:  # one state file per component, msgpack
        d = ckpt / c
        assert sorted(p.name for p in d.iterdir() if "state." in p.name) in (
            ["state.msgpack"],
            ["module_state.msgpack"],
            ["algorithm_state.msgpack"],
        ), c
    meta = json.loads((ckpt / "restock.json").read_text())
    assert meta["format"] == "restock.rllib_checkpoint/2"
    assert sorted(meta["files"]) == [f for f in files if f != "restock.json"]
    for rel, digest in meta["files"].items():
        assert hashlib.sha256((ckpt / rel).read_bytes()).hexdigest() == digest, rel

    from restock.training.train import train

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    logs: list[str] = []
    train(tiny, _exp(steps=64, checkpoint_every=32), "rllib", out_root=tmp_path, resume=run, log=logs.append)
    assert any("resumed from 000000000032 (32 env steps)" in m for m in logs), logs
    new = run / "checkpoints" / f"{64:012d}"
    assert not list(new.rglob("state.pkl")) and (new / "learner_group" / "learner" / "state.msgpack").exists()


@pytest.mark.slow
def test_rllib_checkpoint__pickle_state_is_refused_naming_it(saved_run, tmp_path):
    """A checkpoint holding a state.pkl (RLlib's pickle format, as before msgpack checkpoints) is refused
    by `train --resume` before the run directory is touched, naming the file and what to do."""
    from restock.training.train import train

    tiny, _ = saved_run
    run, ckpt = _copy_run(saved_run, tmp_path)
    planted = ckpt / "learner_group" / "learner" / "state.pkl"
    planted.write_bytes(b"\x80\x04N.")  # pickle.dumps(None): never loaded
    _rehash(ckpt, "learner_group/learner/state.pkl")
    before = {p.name: p.read_bytes() for p in (run / "run.json", run / "config.yaml")}
    with pytest.raises(ValueError, match=r"learner_group/learner/state\.pkl is a pickle: .* Start a new run"):
        train(tiny, _exp(steps=64), "rllib", out_root=tmp_path, resume=run, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in (run / "run.json", run / "config.yaml")} == before
    # restock.json predating the hashes: refused as unverifiable
    planted.unlink()
    meta = json.loads((ckpt / "restock.json").read_text())
    del meta["files"]
    (ckpt / "restock.json").write_text(json.dumps(meta))
    import restock.training.rllib_train as rt

    with pytest.raises(ValueError, match=r"restock\.json lists no file hashes .* Start a new run"):
        rt.check_resume(ckpt, rt.checkpoint_meta(tiny, _exp()))


@pytest.mark.slow
def test_rllib_checkpoint__changed_added_or_missing_file_is_refused(saved_run, tmp_path):
    import restock.training.rllib_train as rt

    tiny, _ = saved_run
    meta = rt.checkpoint_meta(tiny, _exp())
    _, ckpt = _copy_run(saved_run, tmp_path)
    rel = "learner_group/learner/rl_module/store_policy/module_state.msgpack"
    data = bytearray((ckpt / rel).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    (ckpt / rel).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{rel} does not match its SHA-256 in restock\.json"):
        rt.check_resume(ckpt, meta)
    _, ckpt = _copy_run(saved_run, tmp_path / "b")
    (ckpt / "env_runner" / "extra.msgpack").write_bytes(b"\x80")
    with pytest.raises(ValueError, match=r"env_runner/extra\.msgpack is not among the files restock\.json"):
        rt.check_resume(ckpt, meta)
    _, ckpt = _copy_run(saved_run, tmp_path / "c")
    (ckpt / "env_runner" / "state.msgpack").unlink()
    with pytest.raises(ValueError, match=r"env_runner/state\.msgpack, listed in restock\.json, is missing"):
        rt.check_resume(ckpt, meta)


@pytest.mark.slow
def test_rllib_checkpoint__object_array_in_msgpack_is_refused_unpickled(saved_run, tmp_path):
    """A state.msgpack holding msgpack_numpy's encoding of an object-dtype array (which its decoder
    unpickles) is refused, with its hash in restock.json correct, without anything being unpickled, even
    with msgpack patched by msgpack_numpy (as RLlib does in-process)."""
    import msgpack_numpy
    import restock.training.rllib_train as rt

    msgpack_numpy.patch()
    tiny, _ = saved_run
    _, ckpt = _copy_run(saved_run, tmp_path)
    rel = "learner_group/learner/state.msgpack"
    state = msgpack_numpy.unpackb((ckpt / rel).read_bytes(), raw=False, strict_map_key=False)
    state["planted"] = np.array([_Marker()], dtype=object)
    bad = msgpack_numpy.packb(state)
    msgpack_numpy.unpackb(bad, raw=False, strict_map_key=False)
    assert _UNPICKLED == ["unpickled"]  # the decoder RLlib uses would have run the pickle
    _UNPICKLED.clear()
    (ckpt / rel).write_bytes(bad)
    _rehash(ckpt, rel)
    with pytest.raises(ValueError, match=rf"{rel} holds a numpy array of object dtype \(msgpack_numpy would"):
        rt.check_resume(ckpt, rt.checkpoint_meta(tiny, _exp()))
    assert _UNPICKLED == []


def test_msgpack_numpy_hazards__what_the_scan_refuses(tmp_path):
    """The maps msgpack_numpy's decode would unpickle (kind b'O') or build object arrays from raw bytes
    with (type '|O', structured types with object fields), a nested map where a plain value belongs
    (decoded first, it could equal b'O'), and what passes: plain numbers, arrays and scalars."""
    msgpack = pytest.importorskip("msgpack")
    msgpack_numpy = pytest.importorskip("msgpack_numpy")
    import restock.training.rllib_train as rt

    def scan(obj):
        p = tmp_path / "state.msgpack"
        p.write_bytes(msgpack.Packer(use_bin_type=True).pack(obj) if not isinstance(obj, bytes) else obj)
        rt._refuse_msgpack_pickles(p, "x/state.msgpack")

    ok = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(3), 4: [1.5, "a", b"b", None]}
    scan(msgpack_numpy.packb(ok))
    scan(msgpack_numpy.packb({"rec": np.zeros(2, dtype=[("a", "<f4"), ("b", "<i2")])}))
    arr = {b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [1], b"data": b"\0" * 4}
    for bad, why in (
        (msgpack_numpy.packb({"x": np.array([None], dtype=object)}), "object dtype"),
        ({**arr, b"type": [["", "|O"]], b"kind": b"O", b"data": b"junk"}, "object dtype"),
        ({**arr, b"type": "|O", b"data": b"\0" * 8}, "object dtype"),
        ({**arr, b"type": [["a", "|O"]], b"kind": b"V", b"data": b"\0" * 8}, "object dtype"),
        ({b"nd": False, b"type": "object", b"data": b"\0" * 8}, "object dtype"),
        ({**arr, b"kind": {b"nd": False, b"type": "|S1", b"data": b"O"}}, "nested map"),
        ({**arr, b"kind": b"X"}, "unknown kind"),
        ({**arr, b"type": "not-a-dtype"}, "unreadable type"),
        (b"\xc1", "not readable msgpack"),
    ):
        with pytest.raises(ValueError, match=rf"x/state\.msgpack .*{why}"):
            scan([{"deep": [bad]}] if isinstance(bad, dict) else bad)


def _fake_checkpoint(root: Path) -> tuple[Path, dict]:
    """A checkpoint folder laid out as RLlib writes one (plain msgpack state, RLlib's ctor pickle never
    read) with restock.json as save_checkpoint writes it, without building an algorithm."""
    msgpack = pytest.importorskip("msgpack")
    import restock.training.rllib_train as rt

    ckpt = root / "checkpoints" / f"{32:012d}"
    (ckpt / "env_runner").mkdir(parents=True)
    (ckpt / "env_runner" / "state.msgpack").write_bytes(msgpack.packb({"w": [1.5, 2.5]}))
    (ckpt / "env_runner" / rt.RLLIB_CTOR_PICKLE).write_bytes(b"\x80\x04N.")
    (ckpt / "metadata.json").write_text("{}")
    meta = {"scenario_hash": "h", "roles": ["store"], "network": {"hidden": [4]}, "num_envs": 2}
    files = {rel: rt._sha256(p) for rel, p in rt._checkpoint_files(ckpt).items()}
    (ckpt / "restock.json").write_text(json.dumps({**meta, "env_steps": 32, "files": files}))
    return ckpt, meta


def test_rllib_checkpoint__malformed_restock_json_or_folder_is_a_clear_refusal(tmp_path):
    """Whatever is wrong with a checkpoint's restock.json or folder, --resume refuses it with a ValueError
    naming the file (never another exception, never a hang on a FIFO, never a read outside the folder)."""
    import os

    import restock.training.rllib_train as rt

    def edit(ckpt: Path, **kw) -> None:
        d = json.loads((ckpt / "restock.json").read_text())
        d.update(kw)
        (ckpt / "restock.json").write_text(json.dumps(d))

    def with_files(ckpt: Path, change) -> None:
        d = json.loads((ckpt / "restock.json").read_text())
        change(d["files"])
        edit(ckpt, files=d["files"])

    def replace(ckpt: Path, make) -> None:
        (ckpt / "restock.json").unlink()
        make(ckpt / "restock.json")

    cases = [
        (
            lambda c: (c / "restock.json").write_text(""),
            r"restock\.json is not readable JSON \(JSONDecodeError",
        ),
        (lambda c: (c / "restock.json").write_text("{x"), r"restock\.json is not readable JSON"),
        (
            lambda c: (c / "restock.json").write_bytes(b"\xff{"),
            r"restock\.json is not readable JSON \(Unicode",
        ),
        (lambda c: (c / "restock.json").write_text("[" * 100_000), r"restock\.json is not readable JSON"),
        (lambda c: (c / "restock.json").write_text("[1]"), r"restock\.json holds list, not restock's JSON"),
        (lambda c: (c / "restock.json").write_text("null"), r"restock\.json holds NoneType"),
        (lambda c: replace(c, Path.mkdir), r"restock\.json is a link or not a plain file"),
        (lambda c: replace(c, os.mkfifo), r"restock\.json is a link or not a plain file"),
        (lambda c: replace(c, lambda p: p.symlink_to(c / "metadata.json")), r"restock\.json is a link"),
        (lambda c: edit(c, files=["env_runner/state.msgpack"]), r"restock\.json lists no file hashes"),
        (
            lambda c: with_files(c, lambda f: f.update({"../x": "0" * 64})),
            r"lists '\.\./x', which is not a file",
        ),
        (
            lambda c: with_files(c, lambda f: f.update({"/etc/hosts": "0"})),
            r"lists '/etc/hosts', which is not",
        ),
        (lambda c: with_files(c, lambda f: f.update({"a//b": "0"})), r"lists 'a//b', which is not a file"),
        (lambda c: with_files(c, lambda f: f.update({"restock.json": "0"})), r"lists 'restock\.json', which"),
        (
            lambda c: with_files(c, lambda f: f.update({"metadata.json": None})),
            r"the SHA-256 None, which is not",
        ),
        (lambda c: edit(c, env_steps="32"), r"restock\.json gives env_steps '32', not a count"),
        (lambda c: shutil.rmtree(c), r"000000000032 \(the checkpoint latest\.json names\) is not a folder"),
    ]
    for i, (tamper, why) in enumerate(cases):
        ckpt, meta = _fake_checkpoint(tmp_path / str(i))
        assert rt.check_resume(ckpt, meta)["env_steps"] == 32  # untampered, it passes
        tamper(ckpt)
        with pytest.raises(ValueError, match=why):
            rt.check_resume(ckpt, meta)


def test_msgpack_numpy_hazards__deeply_nested_fields_are_refused_not_a_recursion_error(tmp_path):
    """A numpy encoding whose type or kind nests lists just under msgpack's own depth limit is refused
    with a ValueError (a short description of it), as one past that limit is unreadable msgpack."""
    msgpack = pytest.importorskip("msgpack")
    import restock.training.rllib_train as rt

    p = tmp_path / "state.msgpack"
    packer = msgpack.Packer(use_bin_type=True)
    arr = {b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [1], b"data": b"\0" * 4}
    for depth in (500, 1010, 5000):
        for field in (b"type", b"kind"):
            # msgpack packs nothing this deep itself: one-element arrays (0x91) around a string
            body = b"".join(
                packer.pack(k) + (b"\x91" * depth + packer.pack("<f4") if k == field else packer.pack(v))
                for k, v in arr.items()
            )
            p.write_bytes(b"\x81" + packer.pack("x") + b"\x85" + body)
            with pytest.raises(ValueError, match=r"state\.msgpack (holds a numpy|is not readable msgpack)"):
                rt._refuse_msgpack_pickles(p, str(p))
