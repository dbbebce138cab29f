"""Named stress scenarios derived from any base scenario.

Each stress is a function of the base config returning a modified config; the events start a third of
the way into the horizon so policies meet them in a settled state:

  demand_shock     all demand x 2.5 for 10 periods
  promotion_spike  a random 30% of SKUs x 3 for 7 periods (unannounced: forecasts ignore it)
  supplier_outage  every external supplier ships nothing for 7 periods
  lead_time_spike  every lane's lead time + 3 periods for shipments sent in a 10-period window
  capacity_cut     storage capacity at every node halved for 14 periods (nodes without one unaffected)
"""

from __future__ import annotations

from collections.abc import Callable

from restock.envs.config import ScenarioConfig, load_scenario


def _start(cfg: ScenarioConfig) -> int:
    return max(1, cfg.horizon // 3)


def _with(cfg: ScenarioConfig, mutate: Callable[[dict, int], None]) -> ScenarioConfig:
    data = cfg.model_dump(mode="python")
    mutate(data, _start(cfg))
    data["name"] = cfg.name
    return load_scenario(data)


def demand_shock(cfg: ScenarioConfig) -> ScenarioConfig:
    return _with(
        cfg, lambda d, s: d["demand"]["shocks"].append({"start": s, "duration": 10, "multiplier": 2.5})
    )


def promotion_spike(cfg: ScenarioConfig) -> ScenarioConfig:
    return _with(
        cfg,
        lambda d, s: d["demand"]["shocks"].append(
            {"start": s, "duration": 7, "multiplier": 3.0, "sku_fraction": 0.3}
        ),
    )


def supplier_outage(cfg: ScenarioConfig) -> ScenarioConfig:
    def m(d, s):
        for sup in d["network"]["suppliers"]:
            d["disruptions"].append(
                {"type": "supplier_outage", "supplier": sup["id"], "start": s, "end": s + 7}
            )

    return _with(cfg, m)


def lead_time_spike(cfg: ScenarioConfig) -> ScenarioConfig:
    return _with(
        cfg,
        lambda d, s: d["disruptions"].append(
            {"type": "lead_time_spike", "node": "all", "start": s, "end": s + 10, "extra": 3}
        ),
    )


def capacity_cut(cfg: ScenarioConfig) -> ScenarioConfig:
    return _with(
        cfg,
        lambda d, s: d["disruptions"].append(
            {"type": "capacity_cut", "node": "all", "start": s, "end": s + 14, "factor": 0.5}
        ),
    )


STRESSES: dict[str, Callable[[ScenarioConfig], ScenarioConfig]] = {
    "demand_shock": demand_shock,
    "promotion_spike": promotion_spike,
    "supplier_outage": supplier_outage,
    "lead_time_spike": lead_time_spike,
    "capacity_cut": capacity_cut,
}


def parse_stress(spec: str | None) -> list[str]:
    if not spec:
        return []
    if spec == "all":
        return list(STRESSES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in STRESSES]
    if bad:
        raise ValueError(f"--stress: unknown stress {bad} (choose from all, {', '.join(STRESSES)})")
    return names
