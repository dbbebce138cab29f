"""Export a training run to a serving artifact: one ONNX model per trained role, checked for parity.

`export_run` writes the masked-logits graph of each role's `PerSkuNet` (``forward(obs, mask)``:
inputs ``obs`` [B, K*F + G] and ``mask`` [B, K*L] float32, output ``logits`` [B, K*L], dynamic
batch; feature normalisation is part of the graph) plus the manifest `serving.artifact` describes.
Before anything is kept it replays at least ``n_parity`` observations sampled from rollouts of the
run's own scenario through both the torch network and onnxruntime, and requires logits within
``atol`` (+ ``rtol`` x |logit|) and identical greedy actions: an export that would serve different
decisions from the ones evaluated fails loudly and leaves no artifact behind.

One exception, recorded in the manifest: a greedy mismatch where, by the torch logits themselves, the
two levels are equal to within the logit tolerance (a numerical tie; float32 matrix products summed
in another order move logits by a few 1e-6). Over 10^5 SKU decisions about one such tie turns up; no
float32 implementation can promise the same pick there, torch with another thread count included.
``allow_ties=False`` (``restock export --strict``) refuses those too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from restock.agents.echelon_features import EXTRA_SKU_FEATURES, augment, uses_echelon
from restock.agents.learned import load_learned_policy, load_role, read_run
from restock.agents.networks import MASK_MIN, PerSkuNet
from restock.envs.roles import role_nodes
from restock.serving.artifact import (
    ARTIFACT_FORMAT,
    ArtifactError,
    action_mapping,
    finalize,
    now_iso,
    observation_layout,
    scenario_section,
    staging_dir,
    write_scenario,
)

OPSET = 18


class ExportError(ArtifactError):
    """The export failed (parity, a missing run file, a scenario mismatch); nothing was written."""


def onnx_session(path: str | Path):
    """An onnxruntime session configured as the serving shim configures it (one thread, CPU)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_onnx(net: PerSkuNet, path: str | Path, n_skus: int) -> str:
    """Write the masked-logits graph of ``net`` to ``path``; returns the exporter used."""
    net = net.eval()
    F, G, L = net.cfg.sku_features, net.cfg.node_features, net.cfg.levels
    obs = torch.zeros(2, n_skus * F + G)
    mask = torch.ones(2, n_skus * L)
    names = {"input_names": ["obs", "mask"], "output_names": ["logits"]}
    quiet = io.StringIO()
    for name in ("torch.onnx", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                net,
                (obs, mask),
                str(path),
                dynamo=True,
                dynamic_shapes=({0: batch}, {0: batch}),
                opset_version=OPSET,
                external_data=False,
                verbose=False,
                **names,
            )
            return f"torch.onnx (dynamo, opset {OPSET})"
        except Exception:
            torch.onnx.export(
                net,
                (obs, mask),
                str(path),
                dynamo=False,
                dynamic_axes={"obs": {0: "batch"}, "mask": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                **names,
            )
            return "torch.onnx (torchscript, opset 17)"


def sample_observations(
    run_dir: str | Path, compiled, role: str, n: int, seed: int = 0, num_envs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """At least ``n`` (obs [B, D], mask [B, K*L]) rows of ``role``'s agents from shielded rollouts of
    the run's policy (sampled actions, so states off the greedy path are covered too)."""
    from restock.agents.shield import Shield
    from restock.envs.array_env import ArrayEnv

    nodes = role_nodes(compiled, role)
    if num_envs is None:  # enough environments that about half an episode gives n rows
        per_step = len(nodes) * max(compiled.horizon // 2, 1)
        num_envs = int(min(64, max(2, -(-n // per_step))))
    env = ArrayEnv(compiled, num_envs=num_envs, seed=seed, auto_reset=True, shield=Shield(compiled))
    env.reset()
    joint = load_learned_policy(run_dir, compiled, deterministic=False)
    joint.bind(compiled)
    echelon = uses_echelon(run_dir, role)  # agents.echelon_features: the observation has one more SKU feature
    L = int(compiled.params.levels[nodes[0]])
    K = compiled.K
    obs, masks, rows = [], [], 0
    while rows < n:
        obs.append(augment(env, nodes) if echelon else env.obs[:, nodes].reshape(-1, env.obs_dim).copy())
        masks.append(env.mask[:, nodes, :, :L].reshape(-1, K * L).astype(np.float32))
        rows += len(nodes) * num_envs
        env.step_qty(joint.propose(env).qty)
    return np.concatenate(obs), np.concatenate(masks)


def check_parity(
    net: PerSkuNet, onnx_path: str | Path, obs: np.ndarray, mask: np.ndarray, atol: float, rtol: float
) -> dict[str, Any]:
    """Compare torch and onnxruntime logits and greedy levels on the same rows."""
    L = net.cfg.levels
    with torch.no_grad():
        ref = net(torch.as_tensor(obs), torch.as_tensor(mask)).numpy()
    sess = onnx_session(onnx_path)
    got = np.concatenate(
        [
            sess.run(["logits"], {"obs": obs[i : i + 512], "mask": mask[i : i + 512]})[0]
            for i in range(0, len(obs), 512)
        ]
    )
    if got.shape != ref.shape:
        raise ExportError(f"ONNX logits have shape {got.shape}, torch {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    allowed = atol + rtol * np.abs(ref.astype(np.float64))
    live = mask > 0.5
    B = len(obs)
    K = ref.shape[1] // L
    r3 = ref.reshape(B, K, L).astype(np.float64)
    g_ref = r3.argmax(-1)
    g_got = got.reshape(B, K, L).argmax(-1)
    miss = g_ref != g_got
    # a mismatch is a numerical tie when, by the torch logits themselves, the level ONNX picked is
    # within the logit tolerance of the best one: both are the maximum to the precision being checked
    top = np.take_along_axis(r3, g_ref[..., None], -1)[..., 0]
    alt = np.take_along_axis(r3, g_got[..., None], -1)[..., 0]
    gap = top - alt
    tie = miss & (gap <= atol + rtol * np.abs(top))
    return {
        "observations": int(B),
        "sku_decisions": int(B * K),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_abs_diff_unmasked": float(diff[live].max()) if live.any() else 0.0,
        "max_abs_logit": float(np.abs(ref[live]).max()) if live.any() else 0.0,
        "within_tolerance": bool((diff <= allowed).all()),
        "greedy_mismatches": int(miss.sum()),
        "greedy_mismatches_at_ties": int(tie.sum()),
        "greedy_mismatch_max_gap": float(gap[miss].max()) if miss.any() else 0.0,
        "masked_exact": bool((got[~live] == MASK_MIN).all()),
        "atol": atol,
        "rtol": rtol,
    }


def _metrics_last(run_dir: Path) -> dict[str, float]:
    """The last value of every scalar in the run's metrics.csv."""
    out: dict[str, float] = {}
    path = run_dir / "metrics.csv"
    if not path.exists():
        return out
    with open(path) as fh:
        for row in csv.DictReader(fh):
            try:
                out[row["tag"]] = float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to n inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    n_parity: int = 1000,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 0.0,
    overwrite: bool = False,
    log=print,
    allow_ties: bool = True,
) -> dict[str, Any]:
    """Export every trained role of a run directory to ``out_dir``; returns the manifest."""
    from restock.envs.compile import compile_scenario
    from restock.envs.config import ConfigError, load_scenario

    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    sc_file = run_dir / "scenario.yaml"
    if not sc_file.exists():
        raise ExportError(f"{run_dir}: no scenario.yaml (the run's resolved scenario)")
    try:
        compiled = compile_scenario(load_scenario(str(sc_file)))
    except ConfigError as exc:
        raise ExportError(f"{sc_file}: {exc}") from None
    if run.get("scenario_hash") and run["scenario_hash"] != compiled.config_hash:
        raise ExportError(
            f"{run_dir}: scenario.yaml hashes to {compiled.config_hash} but run.json names "
            f"{run['scenario_hash']}; the run directory was edited"
        )
    trained = sorted(p.stem for p in (run_dir / "policies").glob("*.pt"))
    if not trained:
        raise ExportError(f"{run_dir}: no trained policies (policies/<role>.pt)")
    if n_parity < 1:
        raise ExportError("--parity: at least one observation is needed")
    base = run.get("baseline", {})
    baseline = {"policy": base.get("policy", "base_stock"), "knobs": base.get("knobs") or {}}
    # small per-SKU networks: intra-op threads only contend on a busy machine
    with _torch_threads(1), staging_dir(out_dir, overwrite) as tmp:
        write_scenario(tmp, compiled)
        roles: dict[str, Any] = {}
        for role in ("store", "dc"):
            am = action_mapping(compiled, role)
            if not am["nodes"]:
                continue
            if role not in trained:
                roles[role] = {"policy": "heuristic", "heuristic": baseline["policy"], "action": am}
                continue
            net = load_role(run_dir, role)
            if net.cfg.levels != am["levels"]:
                raise ExportError(
                    f"{run_dir}: the {role} network has {net.cfg.levels} levels, the scenario {am['levels']}"
                )
            path = tmp / f"{role}.onnx"
            exporter = export_onnx(net, path, compiled.K)
            obs, mask = sample_observations(run_dir, compiled, role, n_parity, seed=seed)
            par = check_parity(net, path, obs, mask, atol, rtol)
            log(
                f"{role}: parity on {par['observations']:,} observations ({par['sku_decisions']:,} SKU "
                f"decisions): max |logit diff| {par['max_abs_diff']:.2e}, greedy mismatches "
                f"{par['greedy_mismatches']} ({par['greedy_mismatches_at_ties']} at numerical ties, largest "
                f"logit gap {par['greedy_mismatch_max_gap']:.1e})"
            )
            untied = par["greedy_mismatches"] - (par["greedy_mismatches_at_ties"] if allow_ties else 0)
            par["allow_ties"] = allow_ties
            if not par["within_tolerance"] or untied or not par["masked_exact"]:
                ulp = float(np.spacing(np.float32(max(par["max_abs_logit"], 1.0))))
                raise ExportError(
                    f"{role}: ONNX parity failed: max |logit diff| {par['max_abs_diff']:.3e} (allowed "
                    f"{atol:g} + {rtol:g} x |logit|), {par['greedy_mismatches']} greedy mismatches in "
                    f"{par['sku_decisions']} SKU decisions ({par['greedy_mismatches_at_ties']} at numerical "
                    f"ties{', allowed' if allow_ties else ', not allowed (strict)'}), masked logits exact: "
                    f"{par['masked_exact']}. "
                    f"Logits reach {par['max_abs_logit']:.3g} (float32 spacing there {ulp:.1e}); nothing was "
                    "written"
                )
            roles[role] = {
                "policy": "onnx",
                "file": path.name,
                "inputs": {
                    "obs": ["batch", int(compiled.K * net.cfg.sku_features + net.cfg.node_features)],
                    "mask": ["batch", int(compiled.K * net.cfg.levels)],
                },
                "output": {"logits": ["batch", int(compiled.K * net.cfg.levels)]},
                "greedy": "level of SKU k = argmax over l of logits[k * L + l] (first on ties)",
                "masked_logit": MASK_MIN,
                "action": am,
                "net_config": net.cfg.to_dict(),
                # per SKU after the F kernel features (agents.echelon_features); the request must carry them
                "extra_sku_features": list(EXTRA_SKU_FEATURES) if uses_echelon(run_dir, role) else [],
                "normalisation": {
                    "inside_graph": True,
                    "feat_mean": net.cfg.feat_mean,
                    "feat_std": net.cfg.feat_std,
                    "clip": 10.0,
                    "rule": "x_norm = clip((x - mean) / max(std, 1e-3), -clip, clip), per SKU feature and node feature",
                },
                "exporter": exporter,
                "torch": torch.__version__,
                "parity": par,
            }
        summary = run.get("summary", {})
        manifest = {
            "format": ARTIFACT_FORMAT,
            "kind": "learned",
            "name": run_dir.name,
            "created": now_iso(),
            "scenario": scenario_section(compiled),
            "observation": observation_layout(compiled),
            "roles": roles,
            "baseline": baseline,
            "training": {
                "run": run_dir.name,
                "trainer": run.get("trainer"),
                "experiment": run.get("experiment"),
                "seed": run.get("seed"),
                "status": run.get("status"),
                "started": run.get("started"),
                "finished": run.get("finished"),
                "version": run.get("version", "1"),
                "baseline_cost_per_period": base.get("cost_per_period"),
                "summary": json.loads(json.dumps(summary, default=str)),
                "metrics_last": _metrics_last(run_dir),
            },
        }
        manifest = finalize(tmp, manifest)
    return manifest
