"""Experiment files (``configs/experiments/*.yaml``): strict schema, loading, defaults per trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from restock.envs.config import ConfigError, Float, Int, PositiveFloat, PositiveInt, format_validation_error
from restock.envs.safeyaml import YamlInputError, load_yaml_file

MAX_NUM_ENVS = 4_096
MAX_LAYER = 4_096  # units in one hidden layer
MAX_LAYERS = 16


class Strict(BaseModel):
    # NaN and infinities refused; integers strictly whole numbers and numbers bounded (envs.config's Int
    # and Float); booleans only true/false
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Layers = list[Annotated[PositiveInt, Field(le=MAX_LAYER)]]


class NetworkSpec(Strict):
    hidden: Layers = Field(default_factory=lambda: [64, 64], max_length=MAX_LAYERS)
    value_hidden: Layers = Field(default_factory=lambda: [64], max_length=MAX_LAYERS)
    # RLlib path: MAPPO-style value function over a pooled global state (training.rllib_module.CentralCritic)
    centralised_critic: StrictBool = False


class PPOSpec(Strict):
    learning_rate: PositiveFloat = 3e-4
    # None (not given): the scenario's ``discount`` when it is below 1, else 0.99 (`resolve_gamma`)
    gamma: Float | None = Field(default=None, gt=0, le=1)
    gae_lambda: Float = Field(default=0.95, ge=0, le=1)
    clip_range: PositiveFloat = 0.2
    ent_coef: Float = Field(default=0.003, ge=0)
    vf_coef: PositiveFloat = 0.5
    max_grad_norm: PositiveFloat = 0.5
    n_epochs: PositiveInt = 4
    rollout_steps: PositiveInt = 32  # periods per env per update (SB3 n_steps)
    minibatch_size: PositiveInt = 512  # agent-steps per minibatch
    target_kl: Float | None = 0.03


class ShieldSpec(Strict):
    enabled: StrictBool = True
    penalty: Float = Field(default=0.0, ge=0)  # subtracted from the reward per changed SKU decision


class DCLSpec(Strict):
    """``--trainer dcl`` (training/dcl_train.py): approximate policy iteration with rollout labels."""

    iterations: PositiveInt = 8  # policy-iteration steps after the behaviour-cloned start
    states: PositiveInt = 4000  # sampled states labelled per iteration
    rollouts: PositiveInt = 32  # common-random-number paths per (sampled state, candidate order)
    # x per iteration: labels sharpen as the policy settles
    rollouts_growth: Float = Field(default=1.5, ge=1.0)
    max_rollouts: PositiveInt = 256
    horizon: PositiveInt = 60  # periods simulated after each candidate order
    window: Int = Field(default=4, ge=0)  # candidates: the policy's order +- window units (0 = all allowed)
    # a label replaces the current order only when it is better by this many standard errors
    confidence: Float = Field(default=2.0, ge=0)
    sample_envs: PositiveInt = 64  # environments simulated to sample visited states
    sample_periods: PositiveInt = 200  # periods per environment after the burn-in
    burn_in: Int = Field(default=100, ge=0)
    epochs: PositiveInt = 300  # full-batch Adam steps per fit
    bc_epochs: PositiveInt = 600  # for the behaviour-cloned start
    learning_rate: PositiveFloat = 3e-3
    chunk: PositiveInt = 400_000  # rollouts simulated together (memory: ~200 bytes each)
    eval_every_iterations: PositiveInt = 1


class RLlibSpec(Strict):
    num_env_runners: Int = Field(default=0, ge=0, le=1_024)
    # env steps (periods x environments) per training iteration; default ppo.rollout_steps x num_envs x
    # max(1, num_env_runners), as many as one SB3 update; never more than `steps`
    train_batch_size: PositiveInt | None = None
    ray_address: str | None = None
    num_learners: Int = Field(default=0, ge=0, le=256)  # 0: one learner in the driver process
    num_gpus_per_learner: Float = Field(default=0.0, ge=0, le=8)
    # a trained DC's reward: "region" = mean net cost of the DC and its stores (MAPPO-style shared
    # credit; a DC's own cost has no term for its stores' lost sales), "own" = the DC's own cost. With
    # pair_credit, per DC pair: "region" = its SKU's cost over the DC and its stores, "own" = the DC's
    # own cost of that SKU (its stockout penalty on what it owes or cancels to its stores included)
    dc_reward: Literal["region", "own"] = "region"
    # start the trained roles from these weights (a run directory or any folder with policies/<role>.pt,
    # e.g. one behaviour-cloned start shared by several seeds) instead of behaviour cloning
    init_from: str | None = None
    # Ray runtime_env for the driver's job (merged with restock's env_vars), e.g. {"working_dir": "."}
    runtime_env: dict[str, Any] | None = None
    # per-(node, SKU) credit as in `--trainer pair_ppo` (training/rllib_pairs.py): each SKU's action gets
    # its pair's own reward (a DC pair: its SKU's cost over its subtree), a per-SKU critic, per-SKU GAE
    # and PPO's clipped loss per pair. False: one reward and one value per agent (node)
    pair_credit: bool = False
    # behaviour cloning's floor in gradient steps for every role (pair_ppo's is 1,500): the proportional
    # budget gives a DC role of `default` 267 steps (level accuracy 0.74). None: the proportional budget
    bc_min_steps: PositiveInt | None = None


class ExperimentConfig(Strict):
    """One training experiment; every field has a default so a file only states what it changes."""

    name: str = "default"
    trainer: Literal["sb3", "rllib", "dcl", "pair_ppo"] | None = None  # the CLI flag wins when given
    roles: list[Literal["store", "dc"]] = Field(default_factory=lambda: ["store"], min_length=1)  # trained
    steps: PositiveInt | None = None  # env steps (periods x environments) per trained role
    minutes: PositiveFloat | None = None  # wall-clock budget (whole run)
    seed: Int = 0
    num_envs: PositiveInt = Field(default=8, le=MAX_NUM_ENVS)
    baseline: Literal[
        "base_stock", "capped_base_stock", "echelon_base_stock", "s_S", "r_Q", "base_stock_cutoff", "zero"
    ] = "base_stock"
    baseline_params: str | None = None  # parameter file; tuned quickly at start when missing
    # the entry of baseline_params to read, when not the baseline's name: a tuned variant of the baseline,
    # e.g. s_S_per_sku from `restock tune --per-sku` (its "policy" must be the baseline)
    baseline_entry: str | None = None
    checkpoint_every: PositiveInt = 20_000  # env steps
    # checkpoint folders kept (checkpoints/<env steps>/, sb3 and rllib), oldest deleted first after
    # latest.json moves on; the one it names is always kept. null or 0: keep all
    keep_checkpoints: Int | None = Field(default=3, ge=0)
    eval_every: PositiveInt = 50_000  # env steps between greedy evaluations on held-out paths
    eval_episodes: PositiveInt = 8
    # keep the weights with the lowest greedy cost on the held-out evaluation paths (seed 10000 + seed;
    # never the paths `restock eval` uses) as policies/<role>.pt, the behaviour-cloned start included;
    # both trainers (RLlib: the trained roles' weights jointly). False: the last weights.
    keep_best: StrictBool = True
    bc_episodes: Int = Field(default=16, ge=0)  # behaviour-cloning warm start from the baseline (0 = off)
    bc_epochs: Int = Field(default=8, ge=0)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    ppo: PPOSpec = Field(default_factory=PPOSpec)
    shield: ShieldSpec = Field(default_factory=ShieldSpec)
    rllib: RLlibSpec = Field(default_factory=RLlibSpec)
    dcl: DCLSpec = Field(default_factory=DCLSpec)
    scenario_overrides: dict[str, Any] = Field(default_factory=dict)


DEFAULT_GAMMA = 0.99  # PPO's discount when neither the experiment nor the scenario (discount 1) gives one


def resolve_gamma(exp: ExperimentConfig, compiled: Any) -> tuple[float, str]:
    """(gamma, where it came from) of a run: ``ppo.gamma`` when the experiment sets it, else the
    scenario's ``discount`` when it is below 1, else `DEFAULT_GAMMA`. Every reader of the PPO discount
    (both trainers, behaviour cloning's value targets, the recorded config) goes through here."""
    if exp.ppo.gamma is not None:
        return float(exp.ppo.gamma), "ppo.gamma of the experiment"
    discount = float(compiled.config.discount)
    if discount < 1.0 and compiled.config.reward.discounted:
        # the rewards already carry discount^t (reward.discounted): discounting again would count
        # period t at discount^(2t)
        return (
            1.0,
            f"1: the scenario's rewards are discounted already ({compiled.config.name}, reward.discounted)",
        )
    if discount < 1.0:
        return discount, f"the scenario's discount ({compiled.config.name})"
    return DEFAULT_GAMMA, f"default (the scenario {compiled.config.name} is undiscounted: discount 1)"


def load_experiment(path: str | Path | None, **overrides: Any) -> ExperimentConfig:
    """Load an experiment YAML (or the defaults when None) and apply keyword overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.exists():
            cand = Path(__file__).resolve().parent.parent / "configs" / "experiments" / f"{path}.yaml"
            if not cand.exists():
                raise ConfigError(f"{path}: no such experiment file")
            p = cand
        source = str(p)
        try:
            data = load_yaml_file(p, "experiment file")
        except YamlInputError as exc:
            raise ConfigError(str(exc)) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of experiment fields")
        data.setdefault("name", p.stem)
    for k, v in overrides.items():
        if v is not None:
            data[k] = v
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, source, root=ExperimentConfig, kind="experiment")
        ) from None
