"""Checkpoint retention (``keep_checkpoints``) and resuming an RLlib run with a different number of env
runners: the algorithm is built from the current experiment and the checkpoint's state restored into it."""

from __future__ import annotations

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
    # a checkpoint from before restock.json: RLlib's own folders must hold this experiment's policies
    import restock.training.rllib_train as rt

    ckpt = run / "checkpoints" / f"{32:012d}"
    (ckpt / "restock.json").unlink()
    assert rt.check_resume(ckpt, {"roles": ["store"]}) == {}
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
    run = train(tiny, _exp(steps=64, checkpoint_every=32, ppo=small), "rllib", out_root=tmp_path, log=lambda m: None)
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
