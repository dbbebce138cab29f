"""Registers restock's single-agent face with gymnasium as ``restock/SingleNode-v0``.

Imported by ``restock.envs`` and ``restock.single_node``; it imports only gymnasium's registry (the
environment's module loads when ``gymnasium.make`` first builds one).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_ID = "restock/SingleNode-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="restock.single_node:SingleNodeEnv",
        kwargs={"scenario": "single_lost_sales"},
    )
