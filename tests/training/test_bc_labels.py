"""Behaviour cloning's labels (`training.bc.levels_for_quantities`) rebuild the level -> quantity mapping in
NumPy; a label is only right if it is the level whose quantity, as the kernel maps it (`levels_to_qty`, what
a learned policy's level becomes), is nearest the heuristic's order among the allowed levels."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.roles import role_nodes
from restock.training.bc import levels_for_quantities


@pytest.mark.parametrize("scenario", ["tiny", "default", "serial_3"])
def test_bc_labels__the_nearest_allowed_level_as_the_kernel_maps_it(scenario):
    c = compile_any(scenario)
    E = 3
    env = ArrayEnv(c, num_envs=E, seed=5)
    env.reset()
    pol = JointPolicy(make_policy("s_S", {}))
    pol.bind(c)
    rng = np.random.default_rng(0)
    checked = 0
    for t in range(min(c.horizon, 12)):
        out = pol.propose(env)
        if t % 4 == 3:
            for role in ("store", "dc"):
                nodes = role_nodes(c, role)
                if len(nodes) == 0:
                    continue
                L = int(c.params.levels[nodes[0]])
                # every allowed level's quantity, as the kernel maps it [L, E, n, K]
                qk = np.zeros((L, E, c.N, c.K), np.int32)
                for lv_ in range(L):
                    kn.levels_to_qty(
                        c.params, env.state, env.work, np.full((E, c.N, c.K), lv_, np.int64), qk[lv_]
                    )
                qk = qk[:, :, nodes]
                allowed = np.moveaxis(env.mask[:, nodes, :, :L] == 1, -1, 0)
                # the heuristic's orders, and random ones over the grid's range
                for q in (out.qty[:, nodes], rng.integers(0, int(qk.max()) + 3, qk.shape[1:])):
                    lab = levels_for_quantities(env, nodes, q)
                    got = np.take_along_axis(qk, lab[None], 0)[0]
                    err = np.where(allowed, np.abs(qk - q[None]), np.iinfo(np.int64).max)
                    assert np.all(np.take_along_axis(allowed, lab[None], 0)), "a label outside the mask"
                    np.testing.assert_array_equal(np.abs(got - q), err.min(0))
                    checked += q.size
        env.step_qty(out.qty)
    assert checked > 0
