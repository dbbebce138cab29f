"""The oracle's sparse program builder and its HiGHS solves (LP in stages, or MILP with a time limit).

`_LP` collects variable blocks, rows and cost terms by part; `solve` solves the relaxation (adding
each later stage of rows to the last basis), `solve_mip` the same program with chosen variables
integer and reports the proven dual bound when the time limit stops it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import highspy
import numpy as np
import scipy.sparse as sp
from restock.envs.types import COST_NAMES, N_COST


class _LP:
    """Sparse LP under construction: variable blocks, rows, and linear terms per cost part."""

    def __init__(self) -> None:
        self.nv = 0
        self.c: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.rows = {"eq": 0, "ub": 0}
        self.rhs: dict[str, list[np.ndarray]] = {"eq": [], "ub": []}
        self.ent: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"eq": [], "ub": []}
        self.terms: list[tuple[int, np.ndarray, np.ndarray]] = []  # (part, variable ids, coefficients)
        self.const = np.zeros(N_COST)
        self.ids: dict[str, np.ndarray] = {}  # variable ids by block name (-1 where absent)
        self.stages: list[int] = []  # "ub" row counts that end a stage of the solve

    def var(self, mask: np.ndarray, upper=np.inf, **parts: np.ndarray) -> np.ndarray:
        """Variables where mask holds (ids, -1 elsewhere), bounded by [0, upper]; parts: cost by part name."""
        mask = np.asarray(mask, bool)
        idx = np.full(mask.shape, -1, np.int64)
        n = int(mask.sum())
        idx[mask] = self.nv + np.arange(n)
        self.nv += n
        cost = np.zeros(n)
        for name, coef in parts.items():
            co = np.broadcast_to(coef, mask.shape)[mask].astype(np.float64)
            cost += co
            self.terms.append((COST_NAMES.index(name), idx[mask], co))
        self.c.append(cost)
        self.lo.append(np.zeros(n))
        self.hi.append(np.broadcast_to(upper, mask.shape)[mask].astype(np.float64))
        return idx

    def fix(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Fix variables ids (>= 0) to values: prices a given plan instead of optimising it."""
        lo, hi = np.concatenate(self.lo), np.concatenate(self.hi)
        ok = ids >= 0
        lo[ids[ok]] = hi[ids[ok]] = values[ok]
        self.lo, self.hi = [lo], [hi]

    def row(self, kind: str, mask: np.ndarray, rhs) -> np.ndarray:
        """Rows (== rhs for 'eq', <= rhs for 'ub') where mask holds; ids, -1 elsewhere."""
        mask = np.asarray(mask, bool)
        idx = np.full(mask.shape, -1, np.int64)
        n = int(mask.sum())
        idx[mask] = self.rows[kind] + np.arange(n)
        self.rows[kind] += n
        self.rhs[kind].append(np.broadcast_to(rhs, mask.shape)[mask].astype(np.float64))
        return idx

    def add(self, kind: str, rows: np.ndarray, cols: np.ndarray, vals) -> None:
        """Coefficients vals at (rows, cols), broadcast together; entries with a -1 id are skipped."""
        rows, cols, vals = np.broadcast_arrays(rows, cols, np.asarray(vals, np.float64))
        ok = (rows >= 0) & (cols >= 0)
        self.ent[kind].append((rows[ok], cols[ok], vals[ok]))

    def matrix(self, kind: str):
        if self.rows[kind] == 0:
            return None, None
        r, c, v = (np.concatenate(a) for a in zip(*self.ent[kind], strict=True))
        A = sp.csr_matrix((v, (r, c)), shape=(self.rows[kind], self.nv))
        return A, np.concatenate(self.rhs[kind])

    def stage(self) -> None:
        """Mark the rows so far as a stage: `solve` solves them, then adds each later stage's rows and
        solves again from the last basis (dual simplex from a dual feasible start)."""
        self.stages.append(self.rows["ub"])

    def solve(self, time_limit: float | None) -> tuple[str, np.ndarray, float]:
        """Solve the relaxation: (status, cost by part (NaN unless optimal), number of rows)."""
        h, status = self.run(time_limit)
        return _status(status), self.parts(h, status), self.rows["eq"] + self.rows["ub"]

    def parts(self, h: highspy.Highs, status) -> np.ndarray:
        """Cost by part of h's current solution; NaN unless it is optimal."""
        parts = np.full(N_COST, np.nan)
        if status == highspy.HighsModelStatus.kOptimal:
            sol = np.asarray(h.getSolution().col_value)
            parts = self.const.copy()
            for j, ids, co in self.terms:
                parts[j] += float(co @ sol[ids])
        return parts

    def run(self, time_limit: float | None):
        """Build the program in HiGHS and solve its relaxation in stages: (the Highs instance, its status).
        The instance keeps every row and the constant cost as its objective offset, for later solves."""
        t0 = time.perf_counter()
        A_eq, b_eq = self.matrix("eq")
        A_ub, b_ub = self.matrix("ub")
        if A_ub is None:
            A_ub, b_ub = sp.csr_matrix((0, self.nv)), np.zeros(0)
        ends = sorted({*self.stages, self.rows["ub"]})
        first = ends[0]
        A = sp.vstack([A_eq, A_ub[:first]]).tocsc()
        model = highspy.HighsLp()
        model.num_col_, model.num_row_ = self.nv, A.shape[0]
        model.col_cost_ = np.concatenate(self.c)
        model.col_lower_ = np.concatenate(self.lo)
        model.col_upper_ = np.concatenate(self.hi)
        model.row_lower_ = np.concatenate([b_eq, np.full(first, -highspy.kHighsInf)])
        model.row_upper_ = np.concatenate([b_eq, b_ub[:first]])
        model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        model.a_matrix_.start_ = A.indptr.astype(np.int32)
        model.a_matrix_.index_ = A.indices.astype(np.int32)
        model.a_matrix_.value_ = A.data
        model.offset_ = float(self.const.sum())  # MIP gaps are then relative to the true cost
        h = _highs()
        h.passModel(model)
        status = highspy.HighsModelStatus.kNotset
        for lo, hi in [(first, first), *zip(ends[:-1], ends[1:], strict=True)]:
            if hi > lo:
                R = A_ub[lo:hi]
                h.addRows(hi - lo, np.full(hi - lo, -highspy.kHighsInf), b_ub[lo:hi], R.nnz,
                          R.indptr[:-1].astype(np.int32), R.indices.astype(np.int32), R.data)  # fmt: skip
            if time_limit is not None:
                h.setOptionValue("time_limit", max(float(time_limit) - (time.perf_counter() - t0), 1e-3))
            h.run()
            status = h.getModelStatus()
            if status != highspy.HighsModelStatus.kOptimal:
                break
        return h, status


_QUIET = False


def _highs() -> highspy.Highs:
    """A silent HiGHS instance. The first one in a process prints HiGHS's banner to stdout before any
    option can be set (which would corrupt `restock eval --json`), so it is built with stdout closed."""
    global _QUIET
    h = None
    if not _QUIET:
        _QUIET = True
        try:
            sys.stdout.flush()
            saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):  # no stdout to protect
            saved = null = None
        if saved is not None:
            try:
                os.dup2(null, 1)
                h = highspy.Highs()
                _flush_c_stdout()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(null)
    if h is None:
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to reach (Windows): nothing buffered to lose
        pass


def _status(s) -> str:
    M = highspy.HighsModelStatus
    names = {M.kOptimal: "optimal", M.kTimeLimit: "time_limit", M.kInfeasible: "infeasible",
             M.kUnbounded: "unbounded", M.kUnboundedOrInfeasible: "unbounded_or_infeasible"}  # fmt: skip
    return names.get(s, f"status_{s.name}" if hasattr(s, "name") else f"status_{s}")
