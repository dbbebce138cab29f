"""restock's RLlib env runner: RLlib 2.60's `MultiAgentEnvRunner` with two per-agent costs removed.

With one RLlib env holding E kernel environments (`training.rllib_env`), a runner steps E x N agents
per call, and two pieces of RLlib's bookkeeping scale with that count for no benefit here:

- the vector env deep-copies every observation dict after each step (`SyncVectorMultiAgentEnv.copy`);
  `RLlibInventoryEnv` returns freshly allocated arrays every step, so the copy is switched off;
- four metric updates per agent and step (`_increase_sampled_metrics`): agent-step counts are logged
  per module instead (one key per policy, with the number of its agents that stepped), so every sum
  RLlib takes over them (the agent-step stopping rule, lifetime counters) is unchanged.
"""

from __future__ import annotations

from collections import Counter

from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.utils.metrics import (
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
)


class InventoryEnvRunner(MultiAgentEnvRunner):
    def make_env(self):
        super().make_env()
        if self.env is not None and hasattr(self.env, "copy"):
            self.env.copy = False

    def _increase_sampled_metrics(self, num_steps, next_obs, episode):
        m = self.metrics
        m.log_value(NUM_ENV_STEPS_SAMPLED, num_steps, reduce="sum")
        m.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, num_steps, reduce="lifetime_sum", with_throughput=True)
        if episode.is_done:
            m.log_value(NUM_EPISODES, 1, reduce="sum")
            m.log_value(NUM_EPISODES_LIFETIME, 1, reduce="lifetime_sum")
        per_module = Counter(episode.module_for(aid) for aid in next_obs)
        for mid, n in per_module.items():
            m.log_value((NUM_AGENT_STEPS_SAMPLED, str(mid)), n, reduce="sum")
            m.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, str(mid)), n, reduce="lifetime_sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED, mid), n, reduce="sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, mid), n, reduce="lifetime_sum")
        return num_steps
