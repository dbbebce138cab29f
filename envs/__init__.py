"""restock's simulator: scenario schema, Numba kernel, demand samplers, PettingZoo and array envs."""

from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled, compile_scenario
from restock.envs.config import ConfigError, ScenarioConfig, load_scenario, shipped_scenarios
from restock.envs.roles import policy_id_for

from restock import gym_registration as _gym_registration  # noqa: F401  (restock/SingleNode-v0)

ENV_NAME = "inventory_v0"
ENV_VERSION = 0


def __getattr__(name: str):
    """The PettingZoo face loads on first use, so the serving shim (which imports this package) needs
    no PettingZoo: ``pip install restock[pettingzoo]`` for ``parallel_env``."""
    if name in ("InventoryEnv", "parallel_env"):
        from restock.envs import pz_env

        return getattr(pz_env, name)
    raise AttributeError(f"module 'restock.envs' has no attribute {name!r}")


__all__ = [
    "ENV_NAME",
    "ENV_VERSION",
    "ArrayEnv",
    "Compiled",
    "ConfigError",
    "InventoryEnv",
    "ScenarioConfig",
    "compile_scenario",
    "load_scenario",
    "parallel_env",
    "policy_id_for",
    "shipped_scenarios",
]
