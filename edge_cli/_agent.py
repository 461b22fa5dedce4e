"""`edge agent`: run the device agent, check its config, show and change its model state."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ._common import echo_json, fail

__all__ = ["agent_group"]

_CONFIG_HELP = "agent.toml (default: $EDGE_AGENT_CONFIG)."


def _config_option(f: Any) -> Any:
    return click.option("-c", "--config", "config_path", envvar="EDGE_AGENT_CONFIG",
                        type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)(f)


def _load(ctx: click.Context, config_path: Path | None) -> Any:
    from edge_device.agent import load_config

    path = config_path or (ctx.obj or {}).get("config")
    if path is None:
        fail("no config: pass --config /etc/edge/agent.toml (or set EDGE_AGENT_CONFIG)")
    return load_config(path)


@click.group("agent", invoke_without_command=True)
@_config_option
@click.pass_context
def agent_group(ctx: click.Context, config_path: Path | None) -> None:
    """Run the device agent: the pipeline with hybrid routing, telemetry, signed updates.

    \b
    Examples:
      edge agent --config /etc/edge/agent.toml             run (what systemd starts)
      edge agent check-config --config agent.toml          validate, check files and keys
      edge agent status --config agent.toml --json         which model a start would run
      edge agent rollback --config agent.toml              back to the previous model
      edge agent install mobilenet-v4.tar.gz -c agent.toml install a signed bundle by hand
      edge agent example-config > agent.toml              a commented config to start from
    """
    ctx.obj = {"config": config_path}
    if ctx.invoked_subcommand is None:
        _run(_load(ctx, config_path))


@agent_group.command("run")
@_config_option
@click.pass_context
def run_cmd(ctx: click.Context, config_path: Path | None) -> None:
    """Run the agent (the same as `edge agent --config FILE`)."""
    _run(_load(ctx, config_path))


def _run(config: Any) -> None:
    from edge_device.agent import Agent

    # A service's log is its journal: say what it does (events, switches) without -v.
    logging.getLogger("edge_device.agent").setLevel(min(logging.INFO, logging.getLogger().level or logging.INFO))
    agent = Agent(config)
    if threading.current_thread() is threading.main_thread():
        def stop(signum: int, frame: FrameType | None) -> None:
            agent.stop()

        def reload(signum: int, frame: FrameType | None) -> None:
            agent.reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
    code = agent.run()
    sys.exit(code)


@agent_group.command("check-config")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the effective config as JSON (secrets hidden).")
@click.pass_context
def check_config_cmd(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Validate agent.toml and EDGE_* overrides, then check the files it names (keys, bundle, token).

    Exits 1 with one line per problem; prints a summary when everything is usable.
    """
    from edge_device.agent import AgentConfigError
    from edge_runtime import EdgeError, key_id, load_public_key

    cfg = _load(ctx, config_path)
    problems: list[str] = []
    for p in cfg.model.trusted_keys:
        try:
            load_public_key(p)
        except EdgeError as exc:
            problems.append(f"model.trusted_keys: {exc}")
    if not Path(cfg.model.bundle).exists():
        problems.append(f"model.bundle: {cfg.model.bundle}: no such bundle")
    try:
        cfg.cloud_token()
    except AgentConfigError as exc:
        problems.append(str(exc))
    t = cfg.telemetry
    for label, f in (("telemetry.password_file", t.password_file), ("telemetry.ca_file", t.ca_file),
                     ("telemetry.cert_file", t.cert_file), ("telemetry.key_file", t.key_file)):
        if f is not None and not Path(f).is_file():
            problems.append(f"{label}: {f}: no such file")
    if problems:
        raise click.ClickException("; ".join(problems))
    if as_json:
        echo_json(json.loads(cfg.model_dump_json()))
        return
    keys = ", ".join(key_id(load_public_key(p)) for p in cfg.model.trusted_keys) or "none (signatures not checked)"
    click.echo(f"ok: device {cfg.device_id}, {cfg.router.mode} mode, state in {cfg.state_dir}")
    click.echo(f"    model {cfg.model.bundle}, trusted keys: {keys}")
    click.echo(f"    cloud: {cfg.cloud.url or 'none'}; updates: {'on' if cfg.updates_active else 'off'}; "
               f"telemetry: {t.mqtt_url if t.active else 'off'}; http: "
               f"{f'{cfg.http.host}:{cfg.http.port}' if cfg.http.enabled else 'off'}")


@agent_group.command("example-config")
def example_config_cmd() -> None:
    """Print a complete, commented agent.toml to start from."""
    from edge_device.agent import EXAMPLE_TOML

    click.echo(EXAMPLE_TOML, nl=False)


@agent_group.command("status")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-load", is_flag=True, help="Only show the state directory; do not verify and load the model.")
@click.pass_context
def status_cmd(ctx: click.Context, config_path: Path | None, as_json: bool, no_load: bool) -> None:
    """Show the state directory and the model a start would run (verified and loaded, read-only)."""
    from edge_device.agent import StateStore, verify_startup

    cfg = _load(ctx, config_path)
    out: dict[str, Any] = StateStore(cfg.state_dir).describe()
    if not no_load:
        out["startup"] = verify_startup(cfg)
    if as_json:
        echo_json(out)
        return
    cur = out.get("current") or {}
    pid = out.get("agent_pid")
    click.echo(f"state {out['state_dir']}: current {cur.get('dir', 'none')}, previous "
               f"{(out.get('previous') or {}).get('dir', 'none')}, highest accepted {out.get('highest_accepted')}, "
               f"agent {f'running (pid {pid})' if pid else 'not running'}")
    if out.get("bad_versions"):
        click.echo("bad versions: " + "; ".join(f"v{k}: {v}" for k, v in out["bad_versions"].items()))
    st = out.get("startup")
    if st:
        click.echo(f"a start runs {st['name']} v{st['version']} ({st['chosen']}, {st['backend']}, signed by "
                   f"{st['signed_by'] or 'nobody'})")
        for fb in st["fallbacks"]:
            click.echo(f"  passed over {fb['candidate']} {fb['dir'] or ''}: {fb['error']}")


@agent_group.command("rollback")
@_config_option
@click.option("--reason", default="by hand", show_default=True, help="Recorded with the version left as bad.")
@click.pass_context
def rollback_cmd(ctx: click.Context, config_path: Path | None, reason: str) -> None:
    """Go back to the previous model. The version left is marked bad (never installed again); a
    running agent is told with SIGHUP and switches between two frames."""
    from edge_device.agent import StateStore, rollback_pointers

    cfg = _load(ctx, config_path)
    store = StateStore(cfg.state_dir)
    left, back = rollback_pointers(store, f"rolled back by hand: {reason}")
    pid = store.running_agent_pid()
    told = ""
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
            told = f"; agent pid {pid} told to switch"
        except OSError as exc:
            told = f"; could not signal agent pid {pid} ({exc.strerror}): restart it"
    click.echo(f"rolled back from v{left.version} to v{back.version}; v{left.version} is marked bad{told}")


@agent_group.command("install")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_config_option
@click.pass_context
def install_cmd(ctx: click.Context, bundle: Path, config_path: Path | None) -> None:
    """Install a signed bundle by hand (air-gapped devices): the same checks as an update
    (pinned keys, hashes, newer version, expiry, health check), then the atomic switch."""
    from edge_device.agent import (
        StateStore,
        Updater,
        UpdateRefused,
        ensure_adopted,
        load_keys,
        model_options,
        resolve_startup,
    )

    cfg = _load(ctx, config_path)
    store = StateStore(cfg.state_dir)
    keys = load_keys(cfg)
    ensure_adopted(cfg, keys=keys, store=store)  # the configured bundle is what a rollback goes back to
    st = resolve_startup(cfg, keys=keys, store=store, readonly=True)
    running = (st.model.name, st.model.version, st.pointer)
    st.model.close()
    events: dict[str, dict[str, Any]] = {}
    upd = Updater(cfg, store, keys, model_options(cfg), client=None,
                  emit=lambda name, **kw: events.__setitem__(name, kw), activate=lambda m, p: m.close(),
                  running=lambda: running)
    try:
        upd.install(bundle)
    except UpdateRefused as exc:
        why = ("; this device's update policy refused it ([updates]/[model] of the config), so the version is "
               "not marked bad: it installs once the policy allows it or a corrected bundle is given"
               if exc.policy else "")
        raise click.ClickException(f"refused ({exc.reason}): {exc}{why}") from exc
    pid = store.running_agent_pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    cur = store.read_pointer("current")
    checked = events.get("update_healthy", {}).get("samples")
    click.echo(f"installed v{cur.version if cur else '?'}"
               + (f" (health check passed on {checked} sample(s))" if checked else "")
               + (f"; agent pid {pid} told to switch" if pid else ""))
