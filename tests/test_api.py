"""`import restock`: the version, the lazy API, the gymnasium single-node face, `python -m restock`."""

from __future__ import annotations

import subprocess
import sys
import warnings
from importlib.metadata import version

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

import restock
from restock.cli import app


def test_api__version_is_the_installed_distributions():
    assert restock.__version__ == version("restock")
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"restock {restock.__version__}"


def test_api__import_restock_loads_nothing_heavy():
    code = (
        "import sys, restock; heavy = [m for m in ('numba', 'pettingzoo', 'gymnasium', 'torch', 'scipy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_api__lazy_names_resolve_and_unknown_names_raise():
    assert restock.load_scenario("tiny").name == "tiny"
    assert callable(restock.parallel_env) and callable(restock.make_policy)
    pol = restock.make_policy("base_stock")
    assert pol.name.startswith("base_stock")
    assert "ArrayEnv" in dir(restock)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        restock.nope  # noqa: B018


def test_api__single_node_env_passes_gymnasiums_checker():
    env = restock.make("single_lost_sales")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # features are not bounded a priori (stock, pipeline, demand): the Box is (-inf, inf)
        warnings.filterwarnings("ignore", message=".*(minimum|maximum) value is -?infinity")
        check_env(env, skip_render_check=True)
    assert env.action_space == gymnasium.spaces.Discrete(26)


def test_api__single_node_env_through_gymnasium_make_rewards_minus_cost_and_truncates():
    env = gymnasium.make("restock/SingleNode-v0", scenario="lost_sales/ls_L1_p9", horizon=30)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info["action_mask"].shape == (env.action_space.n,)
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(15)  # order up to 15 units every period
        assert r == pytest.approx(-info["cost"]) and r <= 0 and not term
        total += r
        steps += 1
        if trunc:
            break
    assert steps == 30
    # the same seed replays the same demand: the same costs
    env.reset(seed=3)
    again = sum(env.step(15)[1] for _ in range(30))
    assert again == pytest.approx(total)
    env.reset(seed=4)
    other = sum(env.step(15)[1] for _ in range(30))
    assert other != pytest.approx(total)


def test_api__single_node_env_refuses_networks_naming_the_alternatives():
    with pytest.raises(ValueError, match=r"one-node scenarios only.*restock\.parallel_env"):
        restock.make("default")


def test_api__multi_sku_single_node_has_a_multidiscrete_action():
    env = restock.make("single_lost_sales", skus__count=3)
    obs, info = env.reset(seed=0)
    assert isinstance(env.action_space, gymnasium.spaces.MultiDiscrete)
    assert env.action_space.shape == (3,) and info["action_mask"].shape == (3, 26)
    _, r, _, _, info = env.step(np.full(3, 10))
    assert r == pytest.approx(-info["cost"]) and info["ordered"].shape == (3,)


def test_api__python_dash_m_restock_help():
    res = subprocess.run([sys.executable, "-m", "restock", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "Usage" in res.stdout and "demo" in res.stdout
