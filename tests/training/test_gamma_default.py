"""PPO's gamma follows the scenario's discount unless the experiment sets ppo.gamma (issue 11, item 5)."""

from __future__ import annotations

import json

import pytest
import yaml
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.experiment import ExperimentConfig, load_experiment, resolve_gamma


def _tiny(discount: float):
    return compile_scenario(load_scenario("tiny", discount=discount))


def test_resolve_gamma__scenario_discount_default_and_explicit():
    assert resolve_gamma(ExperimentConfig(), _tiny(0.95)) == (0.95, "the scenario's discount (tiny)")
    g, src = resolve_gamma(ExperimentConfig(), _tiny(1.0))
    assert g == 0.99 and "undiscounted" in src
    explicit = ExperimentConfig.model_validate({"ppo": {"gamma": 0.9}})
    assert resolve_gamma(explicit, _tiny(0.95)) == (0.9, "ppo.gamma of the experiment")
    assert resolve_gamma(explicit, _tiny(1.0))[0] == 0.9
    # a shipped experiment that states gamma keeps it, whatever the scenario's discount
    assert resolve_gamma(load_experiment("default"), _tiny(0.95))[0] == 0.99
    # unset survives a dump and re-validation (what a sweep does): still resolved from the scenario
    again = ExperimentConfig.model_validate(ExperimentConfig().model_dump(mode="json"))
    assert again.ppo.gamma is None and resolve_gamma(again, _tiny(0.95))[0] == 0.95


def test_resolve_gamma__rewards_discounted_already_are_not_discounted_again():
    """With ``reward.discounted`` the reward of period t carries discount^t already (OR-Gym's profit):
    the default gamma is then 1, or period t would weigh discount^(2t)."""
    c = compile_scenario(load_scenario("tiny", discount=0.95, reward__discounted=True))
    g, src = resolve_gamma(ExperimentConfig(), c)
    assert g == 1.0 and "discounted already" in src
    explicit = ExperimentConfig.model_validate({"ppo": {"gamma": 0.9}})
    assert resolve_gamma(explicit, c)[0] == 0.9


def test_train__uses_and_records_the_scenario_gamma(tmp_path, monkeypatch):
    import restock.training.bc as bc
    import restock.training.sb3_train as sb3_train
    from restock.training.train import train

    seen = {}

    class Spy(sb3_train.MaskablePPO):
        def __init__(self, *a, **kw):
            seen["ppo"] = kw["gamma"]
            super().__init__(*a, **kw)

    real_collect = bc.collect

    def collect(*a, **kw):
        seen["bc"] = kw["gamma"]
        return real_collect(*a, **kw)

    monkeypatch.setattr(sb3_train, "MaskablePPO", Spy)
    monkeypatch.setattr(bc, "collect", collect)
    exp = load_experiment(
        None, steps=64, checkpoint_every=64, eval_every=10**9, baseline="zero", bc_episodes=2, bc_epochs=1
    )
    exp.ppo.rollout_steps = 8
    exp.ppo.minibatch_size = 32
    assert exp.ppo.gamma is None
    lines: list[str] = []
    run = train(_tiny(0.95), exp, "sb3", out_root=tmp_path, log=lines.append)
    assert seen == {"ppo": 0.95, "bc": 0.95}  # the PPO update and behaviour cloning's value targets
    assert "gamma 0.95: the scenario's discount (tiny)" in lines
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["experiment"]["ppo"]["gamma"] == 0.95
    assert cfg["gamma"] == {"value": 0.95, "source": "the scenario's discount (tiny)"}
    assert json.loads((run / "run.json").read_text())["gamma"]["value"] == 0.95


@pytest.mark.parametrize("bad", [0, 1.5])
def test_gamma__still_validated_when_given(bad):
    from restock.envs.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.gamma"):
        load_experiment(None, ppo={"gamma": bad})


def test_rllib__config_and_warm_start_use_the_scenario_gamma(monkeypatch):
    pytest.importorskip("ray")
    import restock.training.bc as bc
    import restock.training.rllib_train as rt
    from restock.training.common import Baseline, net_config, observation_stats

    c = _tiny(0.95)
    exp = load_experiment(None, num_envs=4, roles=["store"], bc_episodes=1, bc_epochs=1)
    base = Baseline("base_stock", {}, 0.0, 2.0)
    cfgs = {"store": net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))}
    config = rt.build_config(c, exp, base, cfgs, shield=False)
    assert config.gamma == 0.95
    assert config.env_config["reward_scale"] == pytest.approx(2.0 / 0.05)
    seen = {}

    def collect(*a, **kw):
        seen.update(gamma=kw["gamma"], scale=kw["reward_scale"])
        raise StopIteration  # enough: what behaviour cloning was given

    monkeypatch.setattr(bc, "collect", collect)
    monkeypatch.setattr(rt, "learner_nets", lambda algo, net_cfgs: {"store": None})
    with pytest.raises(StopIteration):
        rt._warm_start(None, c, exp, base, None, print, None, cfgs, None)
    assert seen == {"gamma": 0.95, "scale": pytest.approx(2.0 / 0.05)}


def test_rllib__bc_min_steps_floors_every_role_s_cloning_budget(monkeypatch):
    """rllib.bc_min_steps raises a role's proportional behaviour-cloning budget to the floor (a DC of
    `default` gets 267 steps otherwise); unset, the proportional budget stands."""
    pytest.importorskip("ray")
    import restock.training.bc as bc
    import restock.training.rllib_train as rt
    from restock.training.common import Baseline

    c = _tiny(0.95)
    base = Baseline("base_stock", {}, 0.0, 2.0)
    seen = []

    def pretrain(net, data, **kw):
        seen.append(kw["max_updates"])
        raise StopIteration

    monkeypatch.setattr(bc, "collect", lambda *a, **kw: None)
    monkeypatch.setattr(bc, "pretrain", pretrain)
    monkeypatch.setattr(rt, "learner_nets", lambda algo, net_cfgs: {"store": None})
    for extra in ({}, {"bc_min_steps": 1500}):
        exp = load_experiment(
            None, steps=64, num_envs=4, roles=["store"], bc_episodes=1, bc_epochs=1, rllib=extra
        )
        with pytest.raises(StopIteration):
            rt._warm_start(None, c, exp, base, None, print, None, {}, None)
    assert seen[0] == bc.bc_budget(exp, 1)["max_updates"] < 1500 and seen[1] == 1500


def test_sb3__refuses_rllib_bc_min_steps_naming_it():
    from restock.training.train import check_for_trainer

    exp = load_experiment(None, rllib={"bc_min_steps": 1500})
    for trainer in ("sb3", "pair_ppo"):
        with pytest.raises(ValueError, match=r"rllib\.bc_min_steps: an RLlib setting"):
            check_for_trainer(exp, trainer)
