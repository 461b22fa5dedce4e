"""`edge outbox stats|peek|purge`: look into (and empty) the telemetry outbox."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_device.telemetry import KINDS, Outbox, default_outbox_path

from ._common import echo_json

__all__ = ["outbox_group"]

_outbox_option = click.option(
    "--outbox", "path", type=click.Path(dir_okay=False, path_type=Path), envvar="EDGE_OUTBOX",
    default=lambda: str(default_outbox_path()), show_default="$EDGE_OUTBOX or ~/.local/state/edge/outbox.db",
    help="The outbox file (the --outbox of `edge run`).")
_kind_option = click.option("--kind", type=click.Choice(KINDS), help="Only records of this kind.")


@click.group("outbox")
def outbox_group() -> None:
    """Inspect or empty the telemetry outbox (safe while `edge run` uses it, except purge)."""


@outbox_group.command("stats")
@_outbox_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_cmd(path: Path, as_json: bool) -> None:
    """Rows, bytes, age, unconfirmed messages and dropped counts.

    \b
    Example:
      edge outbox stats --outbox /var/lib/edge/outbox.db
    """
    with Outbox(path, readonly=True) as ob:
        st = ob.stats()
    if as_json:
        echo_json(st.as_dict())
        return
    click.echo(f"outbox      {st.path} (device {st.device_id})")
    click.echo(f"rows        {st.rows} ({st.bytes} bytes of records)")
    click.echo("pending     " + ", ".join(f"{k} {n}" for k, n in st.pending.items()))
    click.echo(f"unconfirmed {st.sealed_messages} message(s), {st.sealed_rows} record(s)")
    click.echo(f"oldest      {'-' if st.oldest_age_s is None else f'{st.oldest_age_s:.1f} s ago'}")
    click.echo(f"appended    {st.appended_total}, confirmed {st.confirmed_total}, next seq {st.next_seq}")
    if st.dropped:
        for kind, reasons in sorted(st.dropped.items()):
            click.echo(f"dropped     {kind}: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    else:
        click.echo("dropped     none")


@outbox_group.command("peek")
@_outbox_option
@_kind_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=10, show_default=True)
def peek_cmd(path: Path, kind: str | None, limit: int) -> None:
    """Print the oldest records, one JSON object a line, with their kind and message seq.

    \b
    Example:
      edge outbox peek --kind events -n 5
    """
    with Outbox(path, readonly=True) as ob:
        rows = ob.peek(limit, kind)
    for r in rows:
        click.echo(json.dumps({"id": r.id, "kind": r.kind, "seq": r.seq, "bytes": r.nbytes, "record": r.record},
                              separators=(",", ":")))


@outbox_group.command("purge")
@_outbox_option
@_kind_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_cmd(path: Path, kind: str | None, yes: bool) -> None:
    """Delete records (all, or one kind). They are counted as dropped (reason "purged") and that count
    is reported in the next metrics. Refuses while another process (edge run) writes the outbox.

    \b
    Example:
      edge outbox purge --kind metrics --yes
    """
    with Outbox(path) as ob:
        st = ob.stats()
        n = st.rows if kind is None else st.pending.get(kind, 0)
        if not yes:
            click.confirm(f"delete {'all' if kind is None else kind} records ({n} pending) from {path}?",
                          abort=True)
        removed = ob.purge(kind)
    click.echo(f"purged {removed} record(s)")
