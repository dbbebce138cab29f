"""restock: multi-agent reinforcement learning for retail inventory control.

``import restock`` is cheap: it reads the version and nothing else; the names below load their modules
(numba, PettingZoo, gymnasium, ...) on first use (PEP 562), so a process that uses only part of restock
(the serving shim, say) imports only that part.

    import restock

    env = restock.parallel_env("default")         # PettingZoo ParallelEnv, one agent per DC and store
    fast = restock.ArrayEnv("default", num_envs=256)
    cfg = restock.load_scenario("tiny", horizon=20)
    single = restock.make("single_lost_sales")    # gymnasium.Env for a one-node scenario (reward = -cost)
    policy = restock.make_policy("base_stock", {"store": {"z": 1.0}})

``gymnasium.make("restock/SingleNode-v0", scenario=...)`` works once ``restock.envs`` (or
``restock.single_node``) is imported; ``gymnasium.make("restock.single_node:restock/SingleNode-v0")``
imports it itself.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("restock")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

# name -> (modules to try in order, attribute).
_LAZY: dict[str, tuple[tuple[str, ...], str]] = {
    "parallel_env": (("restock.envs.pz_env",), "parallel_env"),
    "ArrayEnv": (("restock.envs.array_env",), "ArrayEnv"),
    "load_scenario": (("restock.envs.config",), "load_scenario"),
    "shipped_scenarios": (("restock.envs.config",), "shipped_scenarios"),
    "compile_scenario": (("restock.envs.compile",), "compile_scenario"),
    "make": (("restock.single_node",), "make"),
    "SingleNodeEnv": (("restock.single_node",), "SingleNodeEnv"),
    "make_policy": (("restock.agents.catalogue",), "make_policy"),
    "load_params": (("restock.agents.catalogue",), "load_params"),
    "JointPolicy": (("restock.agents.base",), "JointPolicy"),
    "Shield": (("restock.agents.shield",), "Shield"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'restock' has no attribute {name!r}")
    modules, attr = spec
    for i, mod in enumerate(modules):
        try:
            value = getattr(import_module(mod), attr)
        except (ImportError, AttributeError):
            if i == len(modules) - 1:
                raise
            continue
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(name)  # pragma: no cover


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
