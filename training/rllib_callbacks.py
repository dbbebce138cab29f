"""RLlib callback: episode KPIs from the env's final infos into the training results."""

from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback


class InventoryMetrics(RLlibCallback):
    """Logs the episode summary (cost, fill rate, costs by kind, shield figures) as per-iteration means.

    ``reduce="mean"`` matters: RLlib 2.60's default is a slow exponential average.
    """

    def on_episode_end(
        self, *, episode, prev_episode_chunks=None, metrics_logger=None, env_runner=None, **kwargs
    ):
        last = episode.get_infos(-1)
        for info in last.values():
            summ = info.get("episode_summary") if isinstance(info, dict) else None
            if summ:
                for k, v in summ.items():
                    metrics_logger.log_value(k, v, reduce="mean")
                break
