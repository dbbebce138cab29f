"""Ray RLlib path: multi-agent PPO on the new API stack, one policy per role (`store_policy`,
`dc_policy`) shared by every agent of the role, with restock's per-SKU network as the RLModule.

A local Ray instance by default; ``rllib.ray_address`` (``--ray-address HOST:PORT``) joins an existing
cluster and ``rllib.num_env_runners`` (``--num-env-runners``) spreads rollouts over its workers, so
outgrowing one machine means adding machines, not code. Workers import restock, so install it
(editable) in the environment that runs ``ray start`` on every node, and use the same
``RAY_AUTH_MODE`` for ``ray start`` and the driver (Ray 2.60 turns token authentication on by
default).

Checkpoints are RLlib's own (``algo.save_to_path``, written to a temporary folder and renamed, with
restock's ``restock.json`` beside), plus the plain weights under ``policies/``; the newest
``keep_checkpoints`` folders are kept. Their state files are msgpack (``state.msgpack``, never
``state.pkl``) and restock.json lists the SHA-256 of every file; a resume verifies the hashes, refuses a
pickle state file, and refuses a msgpack state that msgpack_numpy would unpickle or build from raw
memory, all before RLlib reads anything (``verify_checkpoint``). ``--resume`` builds the algorithm from the current experiment
(so ``--num-env-runners`` / ``--num-learners`` may change) and restores the checkpoint's learner
(weights, optimiser), env-runner connectors and counters into it (``restore_from_path``); a checkpoint
of another scenario, roles, network or ``num_envs`` is refused. RLlib 2.60 does not save its random
generators or the environments, so a resumed run continues from the checkpointed weights and optimiser
but is not bit for bit the uninterrupted run; PPO's adaptive KL penalty is switched off because its
coefficient is not restored (a known RLlib issue), and weights are pushed to remote env runners
synchronously after a restore (another one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from restock.agents.learned import load_role, save_role
from restock.agents.networks import PerSkuNet
from restock.envs.compile import Compiled
from restock.envs.roles import policy_id_for, role_nodes
from restock.training.checkpoints import prune_checkpoints, read_latest
from restock.training.common import (
    Baseline,
    Monitor,
    make_eval,
    net_config,
    observation_stats,
    write_cloned_run,
    write_json_atomic,
)
from restock.training.experiment import ExperimentConfig, resolve_gamma


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    class Drop(logging.Filter):
        DROP = ("You are running PPO on the new API stack", "RLModule(config=", "Install gputil")

        def filter(self, record):
            return not any(d in record.getMessage() for d in self.DROP)

    for name in (
        "ray.rllib",
        "ray.rllib.algorithms.algorithm_config",
        "ray.rllib.core.rl_module.rl_module",
        "ray._common.deprecation",
        "ray.rllib.utils.deprecation",
        "ray.tune.utils.util",
    ):
        logging.getLogger(name).addFilter(Drop())
        logging.getLogger(name).setLevel(logging.ERROR)


def _g(d: dict, path: str, default=None):
    for p in path.split("/"):
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def effective_batch(exp: ExperimentConfig) -> int:
    """Env steps per training iteration: ``rllib.train_batch_size``, else ``ppo.rollout_steps`` per
    environment (as one SB3 update), capped by the run's ``steps`` so a short run is not one big batch."""
    batch = exp.rllib.train_batch_size or exp.ppo.rollout_steps * exp.num_envs * max(
        1, exp.rllib.num_env_runners
    )
    return int(min(batch, exp.steps)) if exp.steps else int(batch)


def check_experiment(exp: ExperimentConfig) -> None:
    """Refuse experiment settings the RLlib trainer cannot honour (ValueError naming the field)."""
    ppo_set = exp.ppo.model_fields_set
    if exp.rllib.train_batch_size is not None and "rollout_steps" in ppo_set:
        implied = exp.ppo.rollout_steps * exp.num_envs * max(1, exp.rllib.num_env_runners)
        if implied != exp.rllib.train_batch_size:
            raise ValueError(
                f"ppo.rollout_steps ({exp.ppo.rollout_steps}) and rllib.train_batch_size "
                f"({exp.rllib.train_batch_size}) disagree for the rllib trainer: rollout_steps x num_envs x "
                f"max(1, num_env_runners) = {implied}; give one of them"
            )
    if exp.ppo.target_kl is not None and exp.rllib.num_learners > 1:
        raise ValueError(
            "ppo.target_kl: early stopping on the KL needs a single learner (each of "
            f"rllib.num_learners = {exp.rllib.num_learners} would stop on its own shard); "
            "set ppo.target_kl: null in the experiment file, or use --num-learners 0 or 1"
        )
    if exp.rllib.init_from:
        from restock.agents.learned import load_role

        for r in exp.roles:
            try:
                load_role(Path(exp.rllib.init_from), r)
            except Exception as err:  # missing file, wrong format
                raise ValueError(
                    f"rllib.init_from: no usable {r} weights in {exp.rllib.init_from} ({err})"
                ) from None
    if "dc" not in exp.roles and exp.rllib.dc_reward != type(exp.rllib).model_fields["dc_reward"].default:
        raise ValueError(
            f"rllib.dc_reward: {exp.rllib.dc_reward!r} sets a trained DC's reward, and roles {exp.roles} "
            "train no DC; add dc to roles or drop the field"
        )
    if exp.rllib.pair_credit:
        from restock.training.rllib_pairs import check_pair_experiment

        check_pair_experiment(exp)
    if exp.rllib.num_gpus_per_learner > 0 and not exp.rllib.ray_address:
        import torch

        need = exp.rllib.num_gpus_per_learner * max(1, exp.rllib.num_learners)
        have = torch.cuda.device_count()
        if have < need:
            raise ValueError(
                f"rllib.num_gpus_per_learner: {need:g} GPU(s) asked for, {have} visible to this machine's "
                "torch (join a cluster that has them with --ray-address)"
            )


def build_config(compiled: Compiled, exp: ExperimentConfig, baseline: Baseline, net_cfgs: dict, shield: bool):
    if exp.rllib.train_batch_size is None:
        exp = exp.model_copy(deep=True)
        exp.rllib.train_batch_size = effective_batch(exp)
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from restock.training.rllib_callbacks import InventoryMetrics
    from restock.training.rllib_env import RLlibInventoryEnv
    from restock.training.rllib_learner import RestockPPOLearner
    from restock.training.rllib_module import PerSkuRLModule
    from restock.training.rllib_pairs import PairPPOLearner
    from restock.training.rllib_runner import InventoryEnvRunner

    ppo = exp.ppo
    gamma = resolve_gamma(exp, compiled)[0]
    env_config = {
        "scenario": compiled.config.model_dump(mode="json"),
        "roles": list(exp.roles),
        "baseline": {"policy": baseline.policy, "knobs": baseline.knobs},
        "reward_scale": baseline.reward_scale / (1.0 - gamma) if gamma < 1 else baseline.reward_scale,
        "seed": exp.seed,
        "shield": shield,
        "shield_penalty": exp.shield.penalty,
        "central_critic": exp.network.centralised_critic,
        "dc_reward": exp.rllib.dc_reward,
        "pair_credit": exp.rllib.pair_credit,  # per-SKU rewards in the agents' infos (rllib_pairs.py)
        "num_envs": exp.num_envs,  # kernel environments inside one RLlib env (training/rllib_env.py)
    }
    policies = {f"{r}_policy" for r in exp.roles}
    n_trained = sum(len(role_nodes(compiled, r)) for r in exp.roles)

    def mapping(agent_id, episode=None, **kwargs):
        return policy_id_for(agent_id)

    config = (
        PPOConfig()
        .environment(
            RLlibInventoryEnv,
            env_config=env_config,
            disable_env_checking=True,
            # levels are categorical: nothing to unsquash or clip (the env clips to the masks), and
            # RLlib's connector would deep-copy every agent's action each step to find that out
            normalize_actions=False,
            clip_actions=False,
        )
        .env_runners(
            num_env_runners=exp.rllib.num_env_runners,
            num_envs_per_env_runner=1,  # one RLlib env holds exp.num_envs kernel environments
            env_runner_cls=InventoryEnvRunner,
            rollout_fragment_length="auto",
        )
        .multi_agent(
            policies=policies,
            policy_mapping_fn=mapping,
            policies_to_train=sorted(policies),
            count_steps_by="agent_steps",
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    f"{r}_policy": RLModuleSpec(
                        module_class=PerSkuRLModule,
                        model_config={
                            "net": net_cfgs[r].to_dict(),
                            "central_critic": exp.network.centralised_critic,
                            "pair_credit": exp.rllib.pair_credit,
                        },
                    )
                    for r in exp.roles
                }
            )
        )
        .training(
            # counted in agent steps (an RLlib env step is exp.num_envs environment steps): the
            # configured environment steps times the trained nodes of one environment
            train_batch_size_per_learner=exp.rllib.train_batch_size * n_trained,
            minibatch_size=min(ppo.minibatch_size, exp.rllib.train_batch_size * n_trained),
            num_epochs=ppo.n_epochs,
            lr=ppo.learning_rate,
            gamma=gamma,
            lambda_=ppo.gae_lambda,
            clip_param=ppo.clip_range,
            entropy_coeff=ppo.ent_coef,
            vf_loss_coeff=ppo.vf_coef,
            grad_clip=ppo.max_grad_norm,
            use_kl_loss=False,
        )
        .learners(
            num_learners=exp.rllib.num_learners,
            num_gpus_per_learner=exp.rllib.num_gpus_per_learner,
            learner_class=PairPPOLearner if exp.rllib.pair_credit else RestockPPOLearner,
            learner_config_dict={"target_kl": ppo.target_kl},
        )
        .callbacks(InventoryMetrics)
        .debugging(seed=exp.seed, log_level="ERROR")
        .experimental(_use_msgpack_checkpoints=True)  # msgpack state files, no pickles (save_checkpoint)
    )
    if exp.rllib.num_learners > 1:  # RLlib's batch size is per learner: split the iteration's batch
        n = exp.rllib.num_learners
        config.training(train_batch_size_per_learner=-(-config.train_batch_size_per_learner // n))
    return config


def learner_nets(algo, net_cfgs: dict) -> dict[str, PerSkuNet]:
    """CPU copies of the learner's per-role networks, read through RLlib's public
    ``LearnerGroup.get_weights`` (works with the local learner and with remote ones)."""
    import torch

    weights = algo.learner_group.get_weights(module_ids=[f"{r}_policy" for r in net_cfgs])
    nets = {}
    for r, cfg in net_cfgs.items():
        sd = {
            k[4:]: torch.as_tensor(np.asarray(v))
            for k, v in weights[f"{r}_policy"].items()
            if k[:4] == "net."
        }
        net = PerSkuNet(cfg)
        net.load_state_dict(sd)
        nets[r] = net.eval()
    return nets


def set_learner_nets(algo, nets: dict[str, PerSkuNet]) -> None:
    """Write per-role networks into every learner (public ``set_weights``), then into the env runners."""
    algo.learner_group.set_weights(
        {
            f"{r}_policy": {f"net.{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            for r, net in nets.items()
        }
    )
    force_sync_env_runner_weights(algo)


def force_sync_env_runner_weights(algo) -> None:
    """Push the learner's weights to every env runner synchronously (RLlib 2.60 may drop the push
    that follows a restore, leaving remote runners with fresh weights)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    st = algo.learner_group.get_state(
        components=COMPONENT_LEARNER + "/" + COMPONENT_RL_MODULE, inference_only=True
    )[COMPONENT_LEARNER]
    state = {COMPONENT_RL_MODULE: st[COMPONENT_RL_MODULE]}
    algo.env_runner_group.foreach_env_runner(lambda er: er.set_state(state), local_env_runner=True)


def _warm_start(
    algo, compiled, exp: ExperimentConfig, baseline: Baseline, shield_factory, log, monitor, net_cfgs, run_dir
) -> None:
    """Behaviour cloning of the baseline into the learner's networks, then a synchronous weight push.
    The cloned networks are kept in ``run_dir/cloned`` (a run of its own for `restock eval`, as with the
    dcl and pair_ppo trainers), so what PPO added on top of them can be measured."""
    from restock.training.bc import bc_budget, collect, pretrain

    nets = learner_nets(algo, net_cfgs)
    gamma = resolve_gamma(exp, compiled)[0]
    scale = baseline.reward_scale / (1.0 - gamma) if gamma < 1 else baseline.reward_scale
    for role, net in nets.items():
        data = collect(
            compiled,
            role,
            baseline.joint(),
            exp.bc_episodes,
            seed=exp.seed + 500,
            gamma=gamma,
            reward_scale=scale,
            shield=shield_factory(compiled) if shield_factory else None,
        )
        budget = bc_budget(exp, len(role_nodes(compiled, role)))  # proportionate to the run
        if exp.rllib.bc_min_steps and budget["max_updates"] is not None:
            budget["max_updates"] = max(budget["max_updates"], exp.rllib.bc_min_steps)
        res = pretrain(net, data, epochs=exp.bc_epochs, seed=exp.seed, log=log, **budget)
        monitor.log(0, {f"charts/bc_accuracy/{role}": res["accuracy"]})
        save_role(run_dir / "cloned", role, net)
    write_cloned_run(run_dir, sorted(nets))
    set_learner_nets(algo, nets)


def checkpoint_meta(compiled: Compiled, exp: ExperimentConfig) -> dict:
    """What a resume must match (and the runner counts it may change), saved as restock.json."""
    return {
        "format": "restock.rllib_checkpoint/2",  # /2: msgpack state, file hashes
        "scenario": compiled.config.name,
        "scenario_hash": compiled.config_hash,
        "roles": list(exp.roles),
        "network": exp.network.model_dump(mode="json"),
        "num_envs": exp.num_envs,
        "num_env_runners": exp.rllib.num_env_runners,
        "num_learners": exp.rllib.num_learners,
    }


# RLlib writes this pickle beside every component's state, always; only Checkpointable.from_checkpoint
# reads it (ray/rllib/utils/checkpoints.py), and restock builds the algorithm from its own config and
# calls restore_from_path instead, so it is hashed like every file but never loaded
RLLIB_CTOR_PICKLE = "class_and_ctor_args.pkl"


def _checkpoint_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its relative POSIX path, restock.json aside; a link or anything
    other than a plain file or folder is refused (ValueError), as nothing restock writes is one."""
    out: dict[str, Path] = {}

    def unreadable(err: OSError):  # os.walk would skip the folder silently
        raise ValueError(f"--resume: cannot read {err.filename} ({err.strerror}); refusing to load {folder}")

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        for name in sorted(dirs + names):
            p = Path(root) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                raise ValueError(
                    f"--resume: {p} is a link or special file, which restock never writes into a "
                    "checkpoint; refusing to load it"
                )
            if p.is_file() and p != folder / "restock.json":
                out[p.relative_to(folder).as_posix()] = p
    return dict(sorted(out.items()))


def _sha256(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise ValueError(
            f"--resume: cannot read {path} ({err.strerror or err}); refusing to load it"
        ) from None


def _plain_unpackb():
    """msgpack's own decoder: RLlib's try_import_msgpack calls msgpack_numpy.patch(), which replaces
    ``msgpack.unpackb`` in this process with one that decodes (and may unpickle) numpy encodings."""
    try:
        from msgpack._cmsgpack import unpackb
    except ImportError:
        from msgpack.fallback import unpackb
    return unpackb


def _msgpack_numpy_hazard(obj: dict) -> str | None:
    """Why msgpack_numpy's ``decode`` (msgpack_numpy 0.4.8) must not see this map, or None.

    ``decode`` unpickles ``obj[b'data']`` when ``obj[b'nd'] is True`` and ``obj[b'kind'] == b'O'`` (an
    array of object dtype); any other ``nd`` array goes through ``np.ndarray(buffer=...)``, which builds
    an object-dtype array (``type`` '|O', or a structured type with object fields) from raw bytes as
    pointers. Decoding is bottom-up, so a nested map where a plain value belongs could decode into
    something equal to b'O' (a one-byte numpy string): the fields must be plain."""
    if b"nd" not in obj:
        return None
    fields = {k: obj[k] for k in (b"nd", b"type", b"kind", b"shape") if k in obj}

    def has_map(x) -> bool:  # iterative: a type nested a few hundred lists deep overflows recursion
        todo = [x]
        while todo:
            y = todo.pop()
            if isinstance(y, dict):
                return True
            if isinstance(y, list):
                todo.extend(y)
        return False

    if any(has_map(v) for v in fields.values()):
        return "a numpy encoding with a nested map where msgpack_numpy expects a plain value"
    kind = obj.get(b"kind", b"")
    if obj[b"nd"] is True and kind == b"O":
        return "a numpy array of object dtype (msgpack_numpy would unpickle it)"
    if obj[b"nd"] is True and not (type(kind) is bytes and kind in (b"", b"V")):
        return f"a numpy array of unknown kind {reprlib.repr(kind)}"
    descr = obj.get(b"type")

    def unpack_dtype(d):  # msgpack_numpy._unpack_dtype
        if isinstance(d, (list, tuple)):
            return np.dtype([(f[0], unpack_dtype(f[1]), *f[2:]) for f in d])
        return np.dtype(d)

    try:
        if obj[b"nd"] is True and kind == b"V":
            descr = [tuple(t.decode() if type(t) is bytes else t for t in d) for d in descr]
        dtype = unpack_dtype(descr)
    except Exception:
        return f"a numpy encoding with an unreadable type {reprlib.repr(descr)}"
    if dtype.hasobject:
        return f"a numpy value of object dtype {dtype} (msgpack_numpy would read raw bytes as pointers)"
    return None


def _refuse_msgpack_pickles(path: Path, shown: str) -> None:
    """Read a state.msgpack with plain msgpack (no object hook) and refuse (ValueError naming it) any
    map that msgpack_numpy's decoder would unpickle or turn into an object array."""
    try:
        state = _plain_unpackb()(path.read_bytes(), raw=False, strict_map_key=False)
    except Exception as err:
        raise ValueError(f"--resume: {shown} is not readable msgpack ({type(err).__name__}: {err})") from None
    stack = [state]
    while stack:  # iterative: msgpack nests deeper than Python's recursion limit allows
        x = stack.pop()
        if isinstance(x, dict):
            why = _msgpack_numpy_hazard(x)
            if why:
                raise ValueError(f"--resume: {shown} holds {why}; refusing to load it")
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def verify_checkpoint(ckpt: Path, old: dict | None) -> None:
    """Refuse (ValueError naming the file) a checkpoint restock must not load: one with a pickle state
    file (written before checkpoints became msgpack), one whose files differ from the SHA-256 list in
    its restock.json (``old``; None when it has none), and one whose msgpack state would make
    msgpack_numpy unpickle or build object arrays. Reads nothing with pickle or msgpack_numpy."""
    files = _checkpoint_files(ckpt)
    for rel in files:
        if rel.lower().endswith((".pkl", ".pickle")) and Path(rel).name != RLLIB_CTOR_PICKLE:
            raise ValueError(
                f"--resume: {ckpt / rel} is a pickle: the checkpoint was written before restock's RLlib "
                "checkpoints became pickle-free (msgpack), and restock loads no pickles. Start a new run "
                f"(rllib.init_from: {ckpt.parent.parent} starts it from that run's weights)"
            )
    listed = (old or {}).get("files")
    if not isinstance(listed, dict):
        why = "lists no file hashes" if old is not None else "is missing"
        raise ValueError(
            f"--resume: {ckpt / 'restock.json'} {why} (the checkpoint predates hashed checkpoints), so "
            f"{ckpt} cannot be verified. Start a new run "
            f"(rllib.init_from: {ckpt.parent.parent} starts it from that run's weights)"
        )
    for rel, digest in listed.items():  # what save_checkpoint writes: relative POSIX paths, hex digests
        parts = rel.split("/")
        if rel == "restock.json" or rel.startswith("/") or any(q in ("", ".", "..") for q in parts):
            raise ValueError(
                f"--resume: {ckpt / 'restock.json'} lists {rel!r}, which is not a file path inside the "
                "checkpoint; refusing to load it"
            )
        if not isinstance(digest, str):
            raise ValueError(
                f"--resume: {ckpt / 'restock.json'} gives {rel} the SHA-256 {digest!r:.80}, which is not one; "
                "refusing to load it"
            )
    unlisted = sorted(files.keys() - listed.keys())
    if unlisted:
        raise ValueError(
            f"--resume: {ckpt / unlisted[0]} is not among the files restock.json lists (added after the "
            "checkpoint was saved); refusing to load it"
        )
    for rel in sorted(listed):
        if rel not in files:
            raise ValueError(f"--resume: {ckpt / rel}, listed in restock.json, is missing")
        if _sha256(files[rel]) != listed[rel]:
            raise ValueError(
                f"--resume: {ckpt / rel} does not match its SHA-256 in restock.json (changed since it was "
                "saved); refusing to load it"
            )
    for rel, p in files.items():
        if rel.endswith(".msgpack"):
            _refuse_msgpack_pickles(p, str(ckpt / rel))


def save_checkpoint(
    algo, run_dir: Path, net_cfgs: dict, env_steps: int, meta: dict | None = None, keep: int | None = None
) -> Path:
    """checkpoints/<env steps>/ written whole under a temporary name and renamed, then latest.json, then
    the oldest folders beyond ``keep`` deleted (never the one latest.json names)."""
    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"{env_steps:012d}"
    tmp = root / f".tmp-{env_steps:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    # Checkpointable.save_to_path defaults to pickle and does not read the config's
    # _use_msgpack_checkpoints (only Algorithm.save_checkpoint, Tune's path, does): pass it
    algo.save_to_path(str(tmp.resolve()), use_msgpack=True)
    files = {rel: _sha256(p) for rel, p in _checkpoint_files(tmp).items()}
    write_json_atomic(tmp / "restock.json", {**(meta or {}), "env_steps": env_steps, "files": files})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for r, net in learner_nets(algo, net_cfgs).items():
        save_role(run_dir, r, net)
    write_json_atomic(root / "latest.json", {"path": final.name, "env_steps": env_steps, "trainer": "rllib"})
    prune_checkpoints(root, keep)
    return final


def check_resume(ckpt: Path, meta: dict) -> dict:
    """The checkpoint's restock.json, after refusing one this experiment cannot continue or restock must
    not load (``verify_checkpoint``: pickles, hashes, msgpack_numpy object arrays) (ValueError)."""
    if not ckpt.is_dir():
        raise ValueError(f"--resume: {ckpt} (the checkpoint latest.json names) is not a folder")
    p = ckpt / "restock.json"
    if p.is_symlink() or (p.exists() and not p.is_file()):  # checked before reading: a FIFO would block
        raise ValueError(
            f"--resume: {p} is a link or not a plain file, which restock never writes; refusing to load {ckpt}"
        )
    if not p.exists():  # written before restock.json existed: the policies must match at least
        mods = ckpt / "learner_group" / "learner" / "rl_module"
        have = sorted(d.name for d in mods.iterdir() if d.is_dir()) if mods.is_dir() else []
        want = sorted(f"{r}_policy" for r in meta["roles"])
        if have != want:
            raise ValueError(f"--resume: {ckpt} holds the policies {have}, this experiment trains {want}")
        verify_checkpoint(ckpt, None)  # refuses it: nothing to verify its files against
    try:
        old = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON or UTF-8 decoding
        raise ValueError(f"--resume: {p} is not readable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(old, dict):
        raise ValueError(f"--resume: {p} holds {type(old).__name__}, not restock's JSON object")
    verify_checkpoint(ckpt, old)
    for key, what in (
        ("scenario_hash", "scenario"),
        ("roles", "roles"),
        ("network", "network"),
        ("num_envs", "num_envs"),
    ):
        if old.get(key) != meta[key]:
            shown = (
                (old.get("scenario"), meta["scenario"])
                if key == "scenario_hash"
                else (old.get(key), meta[key])
            )
            raise ValueError(
                f"--resume: the checkpoint {ckpt.name} was trained with {what} {shown[0]}, this experiment "
                f"has {shown[1]}; resume with the run's own {what} or start a new run"
            )
    steps = old.get("env_steps")
    if type(steps) is not int or steps < 0:  # restock.json is not among the hashed files
        raise ValueError(f"--resume: {p} gives env_steps {steps!r}, not a count of env steps")
    return old


def restore(config, ckpt: Path, meta: dict, log) -> Any:
    """Build the algorithm from the current config (its env runners and learners), then load the
    checkpoint's state into it: learner weights and optimiser, env-runner connector states, the
    metrics (env-step counters) and the iteration; then push the weights to every env runner. The
    checkpoint is verified first (``check_resume``), so RLlib reads only hashed msgpack state."""
    old = check_resume(ckpt, meta)
    algo = config.build_algo()
    try:
        algo.restore_from_path(str(ckpt.resolve()))
    except Exception as err:
        algo.stop()
        raise ValueError(
            f"--resume: cannot restore {ckpt} into this experiment "
            f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]})"
        ) from None
    force_sync_env_runner_weights(algo)
    changes = [  # the runner counts may differ from the checkpoint's: say so
        f"{k} {meta[k]}" + (f" (was {old[k]})" if k in old and old[k] != meta[k] else "")
        for k in ("num_env_runners", "num_learners")
    ]
    at = old.get("env_steps", int(ckpt.name))
    log(f"resumed from {ckpt.name} ({at:,} env steps) with {', '.join(changes)}")
    return algo


# RLlib's per-module learner results that restock names like the SB3 trainer's (losses/...)
LOSS_TAGS = (
    ("policy_loss", "policy_loss"),
    ("vf_loss", "value_loss"),
    ("entropy", "entropy"),  # the mean entropy of the current policy (positive), as on the SB3 path
    ("approx_kl", "approx_kl"),  # training.rllib_learner: SB3's estimator, not RLlib's mean_kl_loss
    ("clip_fraction", "clipfrac"),
    ("vf_explained_var", "explained_variance"),
)
ENV_TAGS = (
    ("episodic_cost", "charts/episodic_cost"),
    ("fill_rate", "inventory/fill_rate"),
    ("holding_cost", "inventory/holding_cost"),
    ("stockout_cost", "inventory/stockout_cost"),
    ("intervention_rate", "safety/intervention_rate"),
    ("violations", "safety/violations"),
)


def _numeric_leaves(d: Any, prefix: str):
    if isinstance(d, dict):
        for k, v in d.items():
            if str(k).startswith(("agent_", "num_agent_steps")):
                continue  # one entry per agent (thousands on large scenarios): the module totals remain
            yield from _numeric_leaves(v, f"{prefix}/{k}")
    elif isinstance(d, (int, float, np.integer, np.floating)) and not isinstance(d, bool):
        yield prefix, float(d)


def result_scalars(result: dict, roles: list[str]) -> dict[str, float]:
    """One iteration's TensorBoard scalars: restock's tags (charts/, inventory/, safety/, losses/) and
    every numeric learner and env-runner result of RLlib's own under ``rllib/`` (``rllib/learners/...``,
    ``rllib/env_runners/...``: returns, episode lengths, throughput, learning rates, gradient norms)."""
    scal: dict[str, float] = {}
    for key, tag in ENV_TAGS:
        v = _g(result, f"env_runners/{key}")
        if v is not None:
            scal[tag] = float(v)
    for role in roles:
        for key, tag in LOSS_TAGS:
            v = _g(result, f"learners/{role}_policy/{key}")
            if v is not None:
                scal[f"losses/{tag}" + ("" if len(roles) == 1 else f"/{role}")] = float(v)
    for part in ("learners", "env_runners"):
        scal.update(_numeric_leaves(result.get(part, {}), f"rllib/{part}"))
    return {k: v for k, v in scal.items() if np.isfinite(v)}


def _read_best(run_dir: Path, roles: list[str]) -> dict | None:
    p = Path(run_dir) / "best" / f"{roles[0]}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _write_best(run_dir: Path, nets: dict[str, PerSkuNet], best: dict) -> None:
    best_dir = Path(run_dir) / "best"
    for role, net in nets.items():
        save_role(best_dir, role, net)
    for role in nets:  # one record per role, as the SB3 trainer writes (the same joint selection)
        write_json_atomic(best_dir / f"{role}.json", best)


def train_rllib(
    compiled: Compiled,
    exp: ExperimentConfig,
    run_dir: Path,
    baseline: Baseline,
    monitor: Monitor,
    shield_factory=None,
    resume: Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
    stop_after_checkpoints: int | None = None,
    log=print,
) -> dict:
    _quiet()
    import ray

    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    address = exp.rllib.ray_address
    own_ray = not ray.is_initialized()
    if own_ray:
        runtime_env = dict(exp.rllib.runtime_env or {})
        runtime_env["env_vars"] = {
            **runtime_env.get("env_vars", {}),
            "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"),
        }
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            # logical CPUs: at least one per env runner and remote learner, so a small machine still
            # schedules them (they time-share its cores) instead of waiting forever
            need = exp.rllib.num_env_runners + (exp.rllib.num_learners if exp.rllib.num_learners > 1 else 0)
            ray.init(
                num_cpus=max(os.cpu_count() or 2, need + 1),
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=False,
            )
    try:
        net_cfgs = {}
        for r in exp.roles:
            if len(role_nodes(compiled, r)) == 0:
                raise ValueError(f"scenario {compiled.config.name!r} has no {r} agents to train")
            # the centralised critic (training.rllib_module.CentralCritic) sits beside the deployed
            # network, whose own value head is then unused: the policy's config keeps global_state 0
            net_cfgs[r] = net_config(compiled, r, exp, observation_stats(compiled, r, baseline))
        config = build_config(compiled, exp, baseline, net_cfgs, shield=shield_factory is not None)
        meta = checkpoint_meta(compiled, exp)
        if resume is not None:
            latest, ckpt = read_latest(resume)
            algo = restore(config, ckpt, meta, log)
        else:
            algo = config.build_algo()
            if exp.rllib.init_from:
                start = Path(exp.rllib.init_from)
                set_learner_nets(algo, {r: load_role(start, r) for r in exp.roles})
                log(f"started {'+'.join(exp.roles)} from the weights in {start}")
            elif exp.bc_episodes and exp.bc_epochs:
                _warm_start(algo, compiled, exp, baseline, shield_factory, log, monitor, net_cfgs, run_dir)
        target = exp.steps or 10**12
        steps = 0
        last_ckpt = int(latest["env_steps"]) if resume is not None else 0
        n_ckpt = 0
        it = 0
        stopped_for_time = False
        evaluate = make_eval(compiled, exp, baseline, shield_factory)
        best = _read_best(run_dir, exp.roles)  # survives --resume
        last_eval = -1

        def eval_and_keep(at: int) -> None:
            nonlocal best, last_eval
            last_eval = at
            nets = learner_nets(algo, net_cfgs)
            res = evaluate(nets)
            monitor.log(at, {f"eval/{k}": v for k, v in res.items()})
            if exp.keep_best and (best is None or res["episodic_cost"] < best["eval_cost"]):
                best = {"env_steps": at, "eval_cost": res["episodic_cost"]}
                _write_best(run_dir, nets, best)

        if exp.keep_best and best is None:
            eval_and_keep(0)  # the starting (behaviour-cloned) policy competes
        while steps < target:
            r = algo.train()
            it += 1
            steps = int(_g(r, "env_runners/num_env_steps_sampled_lifetime", 0)) * exp.num_envs
            dt = float(r.get("time_this_iter_s", 1e-9))
            scal: dict[str, Any] = {
                "charts/SPS": _g(r, "env_runners/num_env_steps_sampled", 0) * exp.num_envs / max(dt, 1e-9)
            }
            scal.update(result_scalars(r, exp.roles))
            monitor.log(steps, {k: v for k, v in scal.items() if v is not None and np.isfinite(v)})
            if on_progress:
                on_progress({"env_steps": steps, "role": "+".join(exp.roles), **scal})
            if steps - max(last_eval, 0) >= exp.eval_every:
                eval_and_keep(steps)
            if steps - last_ckpt >= exp.checkpoint_every:
                last_ckpt = steps
                save_checkpoint(algo, run_dir, net_cfgs, steps, meta, exp.keep_checkpoints)
                n_ckpt += 1
                if stop_after_checkpoints is not None and n_ckpt >= stop_after_checkpoints:
                    algo.stop()
                    return {"stopped": "test", "env_steps": steps}
            if deadline is not None and time.perf_counter() > deadline:
                stopped_for_time = True
                break
        if exp.keep_best and last_eval != steps:
            eval_and_keep(steps)  # the last weights compete too
        if last_ckpt != steps:
            # (when the last iteration checkpointed these very steps, saving again would delete the folder
            # latest.json names before its replacement is in place)
            save_checkpoint(algo, run_dir, net_cfgs, steps, meta, exp.keep_checkpoints)
        algo.stop()
        summary: dict[str, Any] = {
            "roles": {r: {"env_steps": steps} for r in exp.roles},
            "iterations": it,
            "stopped_for_time": stopped_for_time,
            "learners": {"num_learners": exp.rllib.num_learners, "remote": not algo.learner_group.is_local},
            "seconds": time.perf_counter() - t_start,
        }
        if exp.keep_best and best is not None:
            # the deployed weights: the best greedy joint policy on the held-out evaluation paths
            for role in exp.roles:
                save_role(run_dir, role, load_role(run_dir / "best", role))
                summary["roles"][role]["selected"] = dict(best)
            log(
                f"{'+'.join(exp.roles)}: kept the weights from env step {best['env_steps']:,} (held-out "
                f"greedy cost {best['eval_cost']:,.1f} per episode)"
            )
        return summary
    finally:
        if own_ray:
            ray.shutdown()
