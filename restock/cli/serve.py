"""`restock registry ...`, `restock serve` and `restock audit ...`: the serving side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from restock.cli.common import app, console, err, fail

registry_app = typer.Typer(
    help="Policy registry: versions per role, promote, roll back, canary and shadow.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _registry(path: Path):
    from restock.serving.registry import Registry

    return Registry(path)


def _registry_do(fn, *args, **kw):
    from restock.serving.artifact import ArtifactError

    try:
        return fn(*args, **kw)
    except (ArtifactError, ValueError) as exc:
        fail(str(exc))


@registry_app.command("list")
def registry_list(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print registry.json.")] = False,
) -> None:
    """Show the registered versions and what each role serves."""
    d = _registry_do(_registry(registry_dir).describe)
    if json_out:
        print(json.dumps(d, indent=2))
        return
    t = Table(title=f"registry {registry_dir} ({d['scenario'].get('name', 'empty')})")
    for col in ("version", "kind", "name", "roles", "registered"):
        t.add_column(col)
    for v, info in d["versions"].items():
        t.add_row(
            v,
            str(info.get("kind")),
            str(info.get("name")),
            ",".join(info.get("roles", [])),
            info.get("registered", ""),
        )
    console.print(t)
    for role, r in d["roles"].items():
        cand = (
            f", candidate {r['candidate']} ({r['mode']}"
            + (f" {r['fraction']:.0%}" if r["mode"] == "canary" else "")
            + ")"
            if r["candidate"]
            else ""
        )
        console.print(
            f"{role}: champion {r['champion']}{cand}; rollback target {r['history'][-1] if r['history'] else '-'}"
        )


@registry_app.command("register")
def registry_register(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder (created when missing).")],
    artifact: Annotated[Path, typer.Argument(help="Artifact folder from `restock export`.")],
    note: Annotated[str, typer.Option(help="Free text kept with the version.")] = "",
) -> None:
    """Verify an artifact and add it as the next version (champion of roles that have none)."""
    v = _registry_do(_registry(registry_dir).register, artifact, note=note)
    console.print(f"[green]registered[/] {artifact} as {v}")


@registry_app.command("promote")
def registry_promote(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. v3.")],
) -> None:
    """Make a version the champion of a role (the current champion becomes the rollback target)."""
    r = _registry_do(_registry(registry_dir).promote, role, version)
    console.print(f"{role}: champion {r.champion} (rollback target {r.history[-1] if r.history else '-'})")


@registry_app.command("rollback")
def registry_rollback(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
) -> None:
    """Restore the previous champion of a role and stop any canary or shadow candidate."""
    r = _registry_do(_registry(registry_dir).rollback, role)
    console.print(f"{role}: champion {r.champion} (rolled back)")


@registry_app.command("candidate")
def registry_candidate(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
    version: Annotated[str, typer.Argument(help="Candidate version.")],
    mode: Annotated[
        str, typer.Option(help="canary (a share of nodes executes it) or shadow (recorded only).")
    ] = "canary",
    fraction: Annotated[
        float, typer.Option(help="Canary share of nodes, by a stable hash of the node id.")
    ] = 0.1,
) -> None:
    """Start a canary or shadow run of a candidate version for a role."""
    r = _registry_do(_registry(registry_dir).set_candidate, role, version, mode, fraction)
    console.print(
        f"{role}: candidate {r.candidate} ({r.mode}{f' {r.fraction:.0%}' if r.mode == 'canary' else ''})"
    )


@registry_app.command("clear")
def registry_clear(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
) -> None:
    """Stop a role's canary or shadow candidate (the champion serves every node)."""
    _registry_do(_registry(registry_dir).clear_candidate, role)
    console.print(f"{role}: candidate cleared")


@app.command()
def serve(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder (restock registry register ...).")],
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    audit: Annotated[
        str | None, typer.Option(help="Audit database URL (default sqlite:///REGISTRY_DIR/audit.db).")
    ] = None,
    durability: Annotated[
        str,
        typer.Option(
            help="full: fsync every commit (survives power loss); normal: survives a killed process."
        ),
    ] = "full",
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).")] = 256 * 1024,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a connection may take to send a request's headers (then closed).")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a request body may take to arrive (408 after).")
    ] = 15.0,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle keep-alive connection is kept.")] = 5.0,
    max_connections: Annotated[
        int, typer.Option(help="Connections (or requests in progress) at once; 503 beyond.")
    ] = 1000,
) -> None:
    """Serve decisions over HTTP: POST /v1/decisions, GET /v1/decisions/{id}, /healthz, /metrics.

    Admin endpoints (promote, rollback, candidate) need RESTOCK_ADMIN_TOKEN set in this process's
    environment and Authorization: Bearer <token> on each call.
    """
    from restock.serving.registry import Registry

    if (registry_dir / "manifest.json").exists():
        fail(
            f"{registry_dir} is an artifact, not a registry: restock registry register REGISTRY_DIR {registry_dir}"
        )
    if not Registry(registry_dir).snapshot().versions:
        fail(
            f"{registry_dir}: no registered versions (restock registry register {registry_dir} ARTIFACT_DIR)"
        )
    if durability not in ("full", "normal"):
        fail(f"--durability: full or normal, not {durability!r}")
    from restock.serving.app import serve as run_server
    from restock.serving.http_limits import check_limits

    try:
        check_limits(header_timeout, body_timeout, keep_alive, max_connections, max_body)
    except ValueError as exc:
        name, why = str(exc).split(": ", 1)
        flag = "max-connections" if name == "limit_concurrency" else name.replace("_", "-")
        fail(f"--{flag}: {why}")

    try:
        from restock.serving.audit import parse_url

        parse_url(audit or "sqlite:///x")
    except ValueError as exc:
        fail(f"--audit: {exc}")
    from restock.serving.artifact import ArtifactError
    from restock.serving.audit import AuditIntegrityError
    from restock.serving.registry import RegistryError
    from restock.serving.service import DecisionService

    try:  # artifacts checked, audit store opened (and matched to its anchor) before anything listens
        svc = DecisionService(registry_dir, audit=audit, durability=durability)
    except (ArtifactError, AuditIntegrityError, RegistryError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split())
        err.print(
            f"error: refusing to serve {registry_dir}: {msg}", soft_wrap=True, markup=False, highlight=False
        )
        raise typer.Exit(2) from None
    from restock.serving.audit import KEY_ENV

    if svc.store.anchoring and svc.store.anchor_key is None:
        err.print(
            f"note: {KEY_ENV} is not set: the audit anchor beside the store is unkeyed (it catches lost or "
            "cut rows, not someone who rewrites the store and its anchor)",
            soft_wrap=True,
            highlight=False,
        )
    err.print(f"serving {registry_dir} on http://{host}:{port} (docs: /docs)")
    run_server(
        registry_dir,
        host=host,
        port=port,
        audit=audit,
        durability=durability,
        max_body=max_body,
        access_log=access_log,
        service=svc,
        limit_concurrency=max_connections,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive=keep_alive,
    )


audit_app = typer.Typer(
    help="The decision audit store: verify the hash chains, anchor their heads, export JSON lines.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def _open_audit(db: str):
    from restock.serving.audit import open_store, parse_url

    try:
        _, path = parse_url(db)
    except ValueError as exc:
        fail(str(exc))
    if not Path(path).exists():
        fail(f"{path}: no such audit database")
    try:
        return open_store(db, readonly=True)
    except (ValueError, OSError) as exc:
        fail(str(exc))


def _audit_key() -> bytes | None:
    """RESTOCK_AUDIT_KEY, or None: anchors are then unkeyed (plain digests, see docs/design.md)."""
    from restock.serving.audit import audit_key

    return audit_key()


@audit_app.command("verify")
def audit_verify(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="Also check this checkpoint (restock audit anchor, or the server's DB.anchor; key in "
            "RESTOCK_AUDIT_KEY, or unkeyed without it): the rows it counted are all there and end in "
            "its head. Default: DB.anchor when it exists.",
        ),
    ] = None,
    no_anchor: Annotated[
        bool, typer.Option("--no-anchor", help="Check the chains only, not the anchor beside the store.")
    ] = False,
) -> None:
    """Recompute the decision hash chains; exit 1 when a row was altered, dropped or reordered (dropping
    the newest rows shows against an --anchor)."""
    from restock.serving.audit import AuditIntegrityError, anchor_path, parse_url, read_anchor

    a = None
    if anchor is None and not no_anchor:  # the server's anchor beside the store, when there is one
        try:
            beside = anchor_path(parse_url(db)[1])
        except ValueError:
            beside = None
        if beside is not None and beside.exists():
            anchor = beside
    if anchor is not None:
        try:
            a = read_anchor(anchor, _audit_key())
        except AuditIntegrityError as exc:
            err.print(f"[red]broken[/]: {exc}", highlight=False)
            raise typer.Exit(1) from None
    store = _open_audit(db)
    try:
        rep = store.verify(anchor=a)
    finally:
        store.close()
    if json_out:
        print(json.dumps(rep, indent=2))
    else:
        for table in ("decisions", "shadow_decisions"):
            r = rep[table]
            b = r["broken"]
            where = (
                f"at seq {b['seq']} ({b['request_id']})"
                if b and b["seq"] is not None
                else "against the anchor"
            )
            state = "[green]ok[/]" if b is None else f"[red]broken[/] {where}: {b['why']}"
            console.print(f"{table}: {r['records']:,} records, chain {state}", highlight=False)
            if r["legacy_rows"]:
                lg = rep["legacy"]
                console.print(
                    f"  {r['legacy_rows']:,} of them written under {lg['schema']}, verified by its rules "
                    f"({lg['rules']})",
                    highlight=False,
                )
        if a is not None and rep["ok"]:
            counted = ", ".join(f"{t} {a[t]['records']:,}" for t in ("decisions", "shadow_decisions"))
            kind = "" if a.get("keyed", True) else "unkeyed "
            console.print(
                f"{kind}anchor {anchor} of {a['at']} ({counted} rows): [green]ok[/]", highlight=False
            )
        elif a is None:
            console.print("no anchor checked: the newest rows could be cut without a trace", highlight=False)
    if not rep["ok"]:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the checkpoint to this file (default: print it).")
    ] = None,
) -> None:
    """Verify the store, then print an HMAC'd checkpoint of its chain heads (row counts and last row
    hashes; key in RESTOCK_AUDIT_KEY, a plain digest without it) for audit verify --anchor. Keep it
    away from the store."""
    from restock.serving.audit import TABLES, make_anchor

    key = _audit_key()
    store = _open_audit(db)
    try:
        rep = store.verify()
        schema = store.schema
    finally:
        store.close()
    if not rep["ok"]:
        for t in TABLES:
            if rep[t]["broken"]:
                b = rep[t]["broken"]
                err.print(
                    f"[red]broken[/] {t} at seq {b['seq']} ({b['request_id']}): {b['why']}", highlight=False
                )
        err.print("no anchor written: the store does not verify")
        raise typer.Exit(1)
    a = make_anchor({t: {"records": rep[t]["records"], "head": rep[t]["head"]} for t in TABLES}, key, schema)
    text = json.dumps(a, indent=1)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {out}")


@audit_app.command("export")
def audit_export(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    out: Annotated[Path, typer.Option(help="JSON-lines file to write.")] = Path("audit.jsonl"),
    unverified: Annotated[
        bool, typer.Option("--unverified", help="Export a store that does not verify (a warning says so).")
    ] = False,
) -> None:
    """Verify the store (and DB.anchor when it exists), then write every decision (request, record)
    and shadow decision as JSON lines; a store that does not verify is not exported (exit 1)."""
    from restock.serving.audit import TABLES, AuditIntegrityError, anchor_path, parse_url, read_anchor

    store = _open_audit(db)
    try:
        broken = []
        beside = anchor_path(parse_url(db)[1])
        a = None
        if beside.exists():
            try:
                a = read_anchor(beside, _audit_key())
            except AuditIntegrityError as exc:
                broken.append(str(exc))
        rep = store.verify(anchor=a)
        broken += [
            f"{t}: {rep[t]['broken']['why']} (seq {rep[t]['broken']['seq']})"
            for t in TABLES
            if rep[t]["broken"]
        ]
        if broken and not unverified:
            for b in broken:
                err.print(f"[red]broken[/] {b}", highlight=False)
            err.print(
                "not exported: the store does not verify (restock audit verify; --unverified to export anyway)"
            )
            raise typer.Exit(1)
        n = store.export(out)
    finally:
        store.close()
    if broken:
        err.print(
            f"[yellow]warning:[/] exported a store that does not verify: {'; '.join(broken)}", highlight=False
        )
    console.print(f"wrote {n:,} records to {out}")
