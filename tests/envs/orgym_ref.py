"""A NumPy port of OR-Gym's InvManagement step (v0: backlog, v1: lost sales), for the equal-dynamics test.

Written from the published source, ``or_gym/envs/supply_chain/inventory_management.py``
(``InvManagementMasterEnv._STEP``, hubbs5/or-gym; Hubbs et al. 2020), with the user-supplied demand
option (``dist=5``) so that both simulators see the same demand path. or-gym itself does not install on
NumPy 2 (it uses ``np.Inf`` and the old gym API), hence a port. Defaults are OR-Gym's:

    periods 30, I0 = (100, 100, 200), p = 2, r = (1.5, 1.0, 0.75, 0.5), k = (0.10, 0.075, 0.05, 0.025),
    h = (0.15, 0.10, 0.05), c = (100, 90, 80), L = (3, 5, 10), alpha = 0.97, Poisson(20) demand.

Stages m = 0 (retailer) .. 3 (raw material, unlimited). One period n, as OR-Gym's ``_STEP`` runs it:

0. each stage i < 3 requests R_i = max(action_i, 0) (plus, with backlog, what stage i+1 still owes it),
   capped by the capacity c_i and by stage i+1's inventory at the *start* of the period (before its
   receipts; the raw-material stage is unlimited);
1. each stage i < 3 receives what it was sent L_i periods ago (R[n - L_i, i]);
2. demand D_n (plus, with backlog, the retailer's backlog) is served from the retailer's stock;
3. unfilled demand and replenishment requests U are backlogged (v0) or lost (v1);
4. profit P_n = alpha^n * sum_m (p_m S_m - r_m RR_m - k_m U_m - h_m I_m), where S = (sales, R_0, R_1,
   R_2), p = (p, r_0, r_1, r_2) (the price of stage m is what its customer pays), RR = (R_0, R_1, R_2,
   R_2) (the raw-material stage pays r_3 to produce what it ships) and I the end-of-period inventory
   (none at the raw-material stage).
"""

from __future__ import annotations

import numpy as np


class OrGymInvManagement:
    """One episode of OR-Gym's InvManagement-v0 (``backlog=True``) or -v1 (``backlog=False``)."""

    def __init__(self, demand: np.ndarray, backlog: bool, periods: int = 30):
        self.periods = periods
        self.I0 = np.array([100.0, 100.0, 200.0])
        self.p = 2.0
        self.r = np.array([1.5, 1.0, 0.75, 0.5])
        self.k = np.array([0.10, 0.075, 0.05, 0.025])
        self.h = np.array([0.15, 0.10, 0.05])
        self.c = np.array([100.0, 90.0, 80.0])
        self.L = np.array([3, 5, 10])
        self.alpha = 0.97
        self.backlog = backlog
        self.user_D = np.asarray(demand, float)
        assert len(self.user_D) == periods
        m = len(self.I0) + 1
        self.m = m
        self.unit_price = np.append(self.p, self.r[:-1])  # what each stage's customer pays it
        self.holding = np.append(self.h, 0.0)  # no inventory at the raw-material stage
        self.I = np.zeros((periods + 1, m - 1))  # on hand at the start of each period
        self.T = np.zeros((periods + 1, m - 1))  # in transit at the start of each period
        self.R = np.zeros((periods, m - 1))  # replenishment shipped (after caps)
        self.D = np.zeros(periods)
        self.S = np.zeros((periods, m))  # units sold by each stage (retailer: to customers)
        self.B = np.zeros((periods, m))  # backlog at the end of the period
        self.LS = np.zeros((periods, m))  # lost
        self.P = np.zeros(periods)  # discounted profit
        self.I[0] = self.I0
        self.n = 0

    def step(self, action) -> float:
        n, m, L = self.n, self.m, self.L
        req = np.maximum(np.asarray(action, float), 0).astype(int).astype(float)
        start = self.I[n].copy()
        transit = self.T[n].copy()
        # 0. requests, capped by capacity and by the supplier's stock before its receipts
        supplier_stock = np.append(start[1:], np.inf)
        if n >= 1:
            req = req + self.B[n - 1, 1:]
        asked = req.copy()
        R = np.minimum(np.minimum(req, self.c), supplier_stock)
        self.R[n] = R
        # 1. receipts of what was shipped L periods ago
        inv = start.copy()
        received = np.zeros(m - 1)
        for i in range(m - 1):
            if n - L[i] >= 0:
                received[i] = self.R[n - L[i], i]
                inv[i] += received[i]
        # 2. demand at the retailer, backlog first
        D0 = self.user_D[n]
        self.D[n] = D0
        want = D0 + (self.B[n - 1, 0] if n >= 1 else 0.0)
        S = np.append(min(inv[0], want), R)
        self.S[n] = S
        inv = inv - S[:-1]
        transit = transit - received + R
        self.I[n + 1] = inv
        self.T[n + 1] = transit
        # 3. unfilled demand and requests
        U = np.append(want, asked) - S
        if self.backlog:
            self.B[n] = U
        else:
            self.LS[n] = U
        # 4. discounted profit
        II = np.append(inv, 0.0)
        RR = np.append(R, S[-1])
        P = self.alpha**n * np.sum(self.unit_price * S - (self.r * RR + self.k * U + self.holding * II))
        self.P[n] = P
        self.n += 1
        return float(P)
