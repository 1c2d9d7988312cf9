"""The `ewg` command line.

`ewg` alone opens the console; sub-commands run the engine headless, show
status, and carry out operator verbs through the engine API. Exit codes:
0 done, 1 the work itself failed, 2 a user mistake (bad arguments, bad
config, unknown ids), 3 the database is missing, damaged or too new.
Textual is imported only when the console opens, so scripts stay fast.

Text from outside (titles, file names, stage output, messages, reasons, ids) is printed through
engine/text.py: one_line() for a value inside a line, so a newline in it cannot forge a line of its own,
inert() for text that has lines (a log tail); and stdout/stderr are wrapped (text.inert_output) so
nothing printed any other way (argparse, a traceback) reaches the terminal raw either.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import pipeline
from engine.clock import iso
from engine.config import ConfigError, command_warnings
from engine.db import DatabaseError, DatabasePathError, faults, queries
from engine.fsafe import UnsafePath
from engine.text import InertFormatter, inert, inert_output, is_utf8, one_line
from engine.verbs import Operator, Preview, VerbError, parse_where
from engine.workspace import DEFAULT_TOML, Workspace, open_workspace, resolve_root

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3
SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes completion scripts for (`ewg completion SHELL`)


class UsageError(Exception):
    """A mistake in how ewg was called; the message says how to call it."""


class _Parser(argparse.ArgumentParser):
    """argparse with ewg's exit code and wording: a mistyped command, option or choice names the closest
    match (difflib) and points at --help; under --json the error is a JSON document (_fail)."""

    def error(self, message: str) -> None:  # argparse's default exit code is 2 too; keep its wording short
        if not _json_errors:
            self.print_usage(sys.stderr)
        if self.prog == "ewg":
            hint = "Run `ewg --help` for the commands and options."
        else:
            hint = f"Run `{self.prog} --help` for its options, `ewg --help` for the commands."
        _fail(f"ewg: {message}", EXIT_USAGE, hint=hint)
        self.exit(EXIT_USAGE)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = [str(c) for c in action.choices]
        if isinstance(action, argparse._SubParsersAction):
            if self.prog == "ewg":
                what = f"{value!r} is not an ewg command"
            else:
                noun = str(action.metavar or "command").lower()
                what = f"{value!r} is not {'an' if noun[0] in 'aeiou' else 'a'} `{self.prog}` {noun}"
        else:
            name = "/".join(action.option_strings) or action.metavar or action.dest
            what = f"{name}: {value!r} is not one of {', '.join(choices)}"
        raise argparse.ArgumentError(None, what + _did_you_mean(str(value), choices))


def _did_you_mean(value: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(value, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_json_errors = False  # set by main() when --json is on the command line: errors are then JSON documents


def _fail(message: str, code: int, hint: str = "") -> None:
    """One error, as `ewg: ...` on stderr, or under --json as a JSON document on stdout."""
    if _json_errors:
        doc = {"error": message.removeprefix("ewg: "), "exit": code}
        if hint:
            doc["hint"] = hint
        print(json.dumps(_versioned(doc), indent=1), flush=True)
        return
    print(f"{inert(message)}" + (f"\n{hint}" if hint else ""), file=sys.stderr, flush=True)


JSON_SCHEMA = 1  # the version of ewg's --json documents; raised when a field changes meaning or goes


def _versioned(doc: dict) -> dict:
    """Every --json document says which ewg wrote it and which document schema it follows."""
    return {**doc, "version": {"ewg": _version(), "schema": JSON_SCHEMA}}


def _print_json(doc: dict, **kw: Any) -> None:
    print(json.dumps(_versioned(doc), indent=1, **kw))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def _since(text: str) -> tuple[str, float]:
    """`--since`: ("ago", seconds) for a duration like 90m or 1h30m, ("at", epoch) for an ISO time (UTC)."""
    import re
    from datetime import UTC, datetime

    value = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", value)
    if parts and "".join(n + u for n, u in parts) == value:
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        if 0 < seconds <= 36500 * 86400:
            return ("ago", seconds)
    else:
        try:
            at = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            return ("at", (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a duration (90m, 6h, 7d, 1h30m) nor a UTC time (2026-12-01T08:00)"
    )


def _limit(text: str) -> int:
    """A row count for SQL: a whole number SQLite can hold (10**23 was an OverflowError traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text} must be between 1 and 1000000 rows")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):  # NaN passes every comparison below, and the database refuses it
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if value <= 0 or value > 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 604800 seconds")
    return value


@functools.cache
def _version() -> str:
    """The installed package's version (pyproject.toml), without importing anything heavy."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ewg-tui")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


THEME_HELP = (
    "console: the Textual theme, e.g. nord, gruvbox, ansi-dark (default: [console] theme in ewg.toml)"
)


def _stage_names() -> list[str]:
    """Every stage name, episode stages first (engine/pipeline.py): the choices where a stage is asked for."""
    return list(dict.fromkeys(s for kind in pipeline.KINDS for s in pipeline.stages_of(kind)))


def _stages_help() -> str:
    return "; ".join(f"{kind} stages: {', '.join(pipeline.stages_of(kind))}" for kind in pipeline.KINDS)


# Commands whose output --json turns into one JSON document (`ewg log --follow --json`: one a line).
JSON_COMMANDS = {"scan", "doctor", "status", "failures", "metrics", "log", "prune", "clip"}


def _global_options(p: argparse.ArgumentParser, top: bool, json_help: str | None = None) -> None:
    """The options every command takes before or after its name (`ewg -w DIR status` = `ewg status -w DIR`).

    Below the top they default to SUPPRESS: a sub-command's parser then sets nothing when the option is
    not given after it, and the value given before the name stands."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    if not top:
        p = p.add_argument_group("global options (also before the command)")  # type: ignore[assignment]
    p.add_argument(
        "--workspace",
        "-w",
        metavar="DIR",
        help="workspace folder (default: $EWG_WORKSPACE or the current folder)",
        **unset,
    )
    p.add_argument(
        "--readonly",
        action="store_true",
        help="open the workspace read-only: everything visible, no verb runs",
        **unset,
    )
    if top or json_help:
        p.add_argument(
            "--json",
            action="store_true",
            help=json_help or "JSON output, and errors as JSON on stdout (commands with a --json option)",
            **unset,
        )


def _workers_option(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker threads (default: [engine] workers in ewg.toml)",
        **({} if top else {"default": argparse.SUPPRESS}),
    )


_VERB_JSON = "print the preview/result as JSON"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ewg",
        description="Resume-and-recovery console for the AI-EWG video pipeline. Without a command: "
        "the console.",
        epilog="--workspace, --readonly, --json and --workers go before or after the command. "
        "`ewg COMMAND --help` shows a command's options; `ewg completion bash|zsh|tcsh` a completion script.",
    )
    p.add_argument(
        "--version", action="version", version=f"ewg {_version()}", help="print the version and exit"
    )
    _global_options(p, top=True)
    p.add_argument(
        "--attach",
        action="store_true",
        help="console: show the work of a headless engine running elsewhere (same as --workers 0)",
    )
    _workers_option(p, top=True)
    p.add_argument("--theme", metavar="NAME", help=THEME_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str, help_text: str, json_help: str | None = None, **kw: Any
    ) -> argparse.ArgumentParser:
        cp = sub.add_parser(name, help=help_text, description=kw.pop("description", help_text), **kw)
        _global_options(cp, top=False, json_help=json_help)
        return cp

    def verb_parser(name: str, help_text: str, where: bool = False) -> argparse.ArgumentParser:
        vp = command(name, help_text, _VERB_JSON)
        JSON_COMMANDS.add(name)
        vp.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
        vp.add_argument("--reason", default="", help="why: goes into the audit log")
        if where:
            vp.add_argument(
                "--where",
                action="append",
                metavar="KEY=VALUE",
                help="select by filter instead of ids (repeatable, all must match): status=failed,stopped "
                f"stage=STAGE show=NAME class=transient kind=clip older-than=2h ({_stages_help()})",
            )
        return vp

    def ids(vp: argparse.ArgumentParser, what: str = "items to act on (`ewg status` lists the ids)") -> None:
        vp.add_argument("ids", nargs="*", metavar="ID", help=what)

    def group(vp: argparse.ArgumentParser) -> None:
        vp.add_argument(
            "--group",
            metavar="N|FINGERPRINT",
            help="every failed item of a failure group: its number in `ewg failures` (1 is the largest) "
            "or its fingerprint",
        )

    d = command("demo", "create a demo workspace with injected faults and open the console on it")
    d.add_argument(
        "dir",
        nargs="?",
        help="where (default: ./demo-workspace; an earlier demo there is replaced, after a question)",
    )
    d.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier demo made by ewg without asking (never anything else)",
    )
    d.add_argument("--episodes", type=_positive_int, default=6, help="good episodes to generate (default 6)")
    d.add_argument(
        "--headless", action="store_true", help="run it headless until idle instead of the console"
    )
    d.add_argument(
        "--simulated",
        action="store_true",
        help="simulated stages with scripted faults instead of real media (no PyAV work)",
    )
    d.add_argument("--theme", metavar="NAME", default=argparse.SUPPRESS, help=THEME_HELP)
    _workers_option(d, top=False)

    i = command("init", "create a workspace: ewg.toml with every default, the database, items/")
    i.add_argument("dir", nargs="?", help="folder (default: the workspace)")
    i.add_argument(
        "--demo",
        type=_positive_int,
        metavar="N",
        help="also generate N demo episodes (real media files) with bad inputs and injected faults",
    )
    i.add_argument(
        "--simulated", action="store_true", help="with --demo: simulated stages instead of real media"
    )
    i.add_argument(
        "--print-config",
        action="store_true",
        help="print every ewg.toml key with its default and a comment, and exit",
    )
    i.add_argument(
        "--database",
        metavar="URL",
        help="keep the database on a PostgreSQL server (postgresql://USER@HOST/DB) so several hosts share "
        "the work; credentials from the URL, PG* variables or ~/.pgpass (default: ewg.db beside ewg.toml)",
    )

    r = command("run", "run the engine without the console (the default way to run it headless)")
    r.add_argument("--headless", action="store_true", help="(the default for `run`; kept for scripts)")
    r.add_argument(
        "--until-idle",
        action="store_true",
        help="return once nothing is pending, running or waiting for a retry",
    )
    r.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    r.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="event and warning lines: plain text, or one JSON object a line (for journald, Loki, jq)",
    )
    _workers_option(r, top=False)
    r.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus text at http://HOST:PORT/metrics (default: [engine] metrics; port 0 picks one)",
    )

    command(
        "scan",
        "look for new, settled files in the [sources] folders and add them",
        '{"added": [...], "known": N, "waiting": [...], "problems": [...], ...}',
    )
    dr = command(
        "doctor",
        "check the workspace (database, leases, temp files, checkpoints, disk, "
        "services, dependencies, backups); --repair fixes what is safe",
        "the report as JSON: every check with its verdict, evidence and fix",
    )
    dr.add_argument(
        "--repair",
        action="store_true",
        help="sweep temp files, rescue dead leases, rerun stages with damaged checkpoints (audited)",
    )

    s = command("status", "counts and per-item state", '{"episodes": [...], "clips": [...], "counts": {...}}')
    s.add_argument("--all", action="store_true", help="also list discarded items (dead letters)")
    command(
        "failures",
        "failure groups, numbered: stage + error class + normalized message",
        '{"groups": [{"number": 1, "fingerprint": ..., "ids": [...]}, ...]}',
    )
    m = command(
        "metrics",
        "recovery success rate, time to recovery, failure points, verb effectiveness",
        "the metrics and the cost of recovery as JSON",
    )
    m.add_argument(
        "--since",
        type=_since,
        metavar="DURATION|ISO",
        help="only what ended since then: a duration back from now (90m, 6h, 7d, 1h30m) or a UTC time "
        "(2026-12-01 or 2026-12-01T08:00)",
    )
    lg = command(
        "log",
        "the audit/engine log, or one item's attempt history and log tail",
        '{"events": [...], "attempts": [...]}; with --follow one JSON object a line',
    )
    lg.add_argument("id", nargs="?", metavar="ID", help="one item: its events, attempts and last log tail")
    lg.add_argument("--limit", type=_limit, default=50, help="newest N events (1 to 1000000)")
    lg.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="like tail -f: keep printing new events (and the item's attempts) as they arrive, "
        "until Ctrl-C; reads the database only",
    )
    lg.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="with --follow: how often the database is read (default 1)",
    )

    pr = command(
        "prune",
        "delete history older than [retention] days (people's verbs in the audit log stay)",
        "what was (or would be) deleted, as JSON",
    )
    pr.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    pr.add_argument("--days", type=_days, metavar="N", help="override [retention] days for this run")

    al = command("alerts", "alerts ([alerts] in ewg.toml): `ewg alerts test` sends one now")
    al_sub = al.add_subparsers(dest="alerts_command", metavar="ACTION", parser_class=_Parser, required=True)
    _global_options(
        al_sub.add_parser("test", help="send a test alert to every configured sink and say how each went"),
        top=False,
    )

    co = command(
        "completion",
        "print a shell completion script: eval it, or save it where your shell loads completions",
        description="Print a completion script for ewg's commands, options and stage names. "
        'bash: eval "$(ewg completion bash)" in ~/.bashrc; zsh: ewg completion zsh > '
        '"${fpath[1]}/_ewg"; tcsh: eval `ewg completion tcsh` in ~/.tcshrc.',
    )
    co.add_argument("shell", choices=SHELLS, help=f"the shell: {', '.join(SHELLS)}")

    v = verb_parser(
        "retry", "retry failed, waiting, blocked, stopped or discarded items now (fresh attempt budget)", True
    )
    ids(v)
    v.add_argument("--failed", action="store_true", help="every failed item")
    group(v)
    v = verb_parser("reprocess", "force reprocess from the start, or from a stage (cache dropped)", True)
    ids(v)
    v.add_argument(
        "--from",
        dest="from_stage",
        metavar="STAGE",
        help=f"the first stage to run again (default: the first); {_stages_help()}",
    )
    v.add_argument("--failed", action="store_true", help="every failed item (Retry Failed Episodes)")
    group(v)
    v = verb_parser("resume", "continue stopped or failed items from their last checkpoint", True)
    ids(v, "items to resume (none: every stopped, failed, waiting or blocked item)")
    v = verb_parser(
        "reset", "reset to discovered: clear results, caches and errors (Clear Results / System Reset)", True
    )
    ids(v)
    v.add_argument("--all", action="store_true", help="every item (System Reset)")
    v.add_argument(
        "--failed", action="store_true", help="every failed item (Retry Failed Episodes: caches cleared)"
    )
    v = verb_parser("skip", "mark the current stage done without running it", True)
    ids(v)
    v = verb_parser(
        "discard", "dead letters: archive failed items (kept, hidden from lists; `retry` brings back)", True
    )
    ids(v)
    v = verb_parser("rollback", "move an item back to an earlier checkpoint; later stages rerun")
    v.add_argument("id", metavar="ID", help="the item to roll back")
    v.add_argument(
        "--to",
        dest="to_stage",
        required=True,
        metavar="STAGE",
        help=f"the checkpoint to go back to (later stages rerun); {_stages_help()}",
    )
    v = verb_parser("clear-cache", "remove items' caches", True)
    ids(v)
    verb_parser("deep-clean", "sweep orphans, temp files, stale checkpoints and dead leases; vacuum")
    v = verb_parser(
        "stop", "stop items (they wait for resume); with no ids stop all processing (pause)", True
    )
    ids(v, "items to stop (none: stop all processing)")
    v.add_argument(
        "--force", action="store_true", help="kill subprocesses now; abandon stages that ignore it"
    )
    v = verb_parser("extend", "wait longer: push a running item's timeout and stall limits out")
    v.add_argument("id", metavar="ID", help="the running item")
    v.add_argument("seconds", type=_seconds, metavar="SECONDS", help="how much longer (up to 604800)")
    verb_parser("pause", "stop claiming new work (running work finishes)")
    verb_parser("unpause", "claim work again")

    clip = command(
        "clip",
        "clip verbs: retry, rerender, delete-retry, retry-failed, regenerate-all, clean-retry",
        _VERB_JSON,
    )
    csub = clip.add_subparsers(dest="clip_command", metavar="VERB", parser_class=_Parser, required=True)

    def clip_parser(name: str, help_text: str, nargs: str, what: str = "clip ids") -> None:
        cp = csub.add_parser(name, help=help_text, description=help_text)
        _global_options(cp, top=False, json_help=_VERB_JSON)
        cp.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
        cp.add_argument("--reason", default="", help="why: goes into the audit log")
        if nargs:
            cp.add_argument("ids", nargs=nargs, metavar="ID", help=what)

    clip_parser("retry", "retry failed clips", "+")
    clip_parser("rerender", "render clips again from their generated cut", "+")
    clip_parser("delete-retry", "delete clips' files and generate them again", "+")
    clip_parser("retry-failed", "retry every failed clip", "")
    clip_parser(
        "regenerate-all",
        "regenerate every clip (of the given episodes)",
        "*",
        "episode ids (none: every clip)",
    )
    clip_parser(
        "clean-retry",
        "delete failed clips' files and retry them",
        "*",
        "episode ids (none: every failed clip)",
    )
    return p


# -- output --------------------------------------------------------------------------------------
def _print_preview(preview: Preview, as_json: bool) -> int:
    if as_json:
        _print_json(preview.to_dict(), default=str)
        return EXIT_OK
    if preview.nothing_to_do and not preview.applied:
        print(
            f"Nothing to do: {one_line(preview.selection or 'the selection')} matches no item the verb applies to."
        )
        for item_id, why in preview.skipped[:20]:
            print(f"  {one_line(item_id)}: {one_line(why)}")
        return EXIT_OK
    print(
        ("Applied. " if preview.applied else "Dry run, nothing changed. ") + one_line(preview.summary()) + "."
    )
    for c in preview.changes:
        before = one_line(f"{c.before.get('stage') or '-'}/{c.before.get('status')}")
        after = one_line(f"{c.after.get('stage') or '-'}/{c.after.get('status')}")
        extras = []
        if c.stages_rerun:
            extras.append("reruns " + one_line(", ".join(c.stages_rerun)))
        if c.cache_dropped:
            extras.append("cache dropped")
        if c.files_deleted:
            extras.append("files deleted")
        if c.interrupts_run:
            extras.append("interrupts the running attempt")
        if c.note:
            extras.append(one_line(c.note))
        print(
            f"  {one_line(c.item_id)}: {before} -> {after}" + (f"  ({'; '.join(extras)})" if extras else "")
        )
    for item_id, why in preview.skipped:
        print(f"  {one_line(item_id)}: not changed: {one_line(why)}")
    for note in preview.notes:
        print(f"  {one_line(note)}")
    if preview.applied and preview.event_id:
        print(f"Audit event #{preview.event_id}.")
    return EXIT_OK


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[one_line(v) for v in r] for r in rows]  # one_line(None) is ""
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def _cmd_status(ws: Workspace, args) -> int:
    doc = queries.status(ws.store, include_discarded=args.all)
    if args.json:
        _print_json(doc)
        return EXIT_OK
    for kind, key in ((pipeline.EPISODE, "episodes"), (pipeline.CLIP, "clips")):
        c = doc["counts"][kind]
        by = ", ".join(f"{n} {s}" for s, n in c["by_status"].items() if n)
        hidden = ""
        if c["discarded"]:
            shown = "listed below" if args.all else "hidden; --all lists them"
            hidden = f"; {c['discarded']} discarded ({shown})"
        print(f"{key}: {c['total']}" + (f" ({by})" if by else "") + hidden)
    ov = queries.overview(ws.store, time.time())
    ov.resource_pause = ov.resource_pause or ws.disk_floor_breach()
    if ov.paused:
        print(
            f"engine: PAUSED ({one_line(ov.paused['reason'] or 'no reason given')}); `ewg unpause` to continue"
        )
    if ov.resource_pause:
        print(f"engine: not claiming work: {one_line(ov.resource_pause)}")
    for svc in ov.services:
        if not svc["ok"]:
            print(
                f"service {one_line(svc['name'])} is DOWN since {iso(svc['since'])} ({one_line(svc['message'])}); "
                "the stages that need it wait as blocked, spending no attempts"
            )
    for w in ov.warnings:
        print(
            f"early warning: {one_line(w['message'])} ({one_line(w['evidence'])}). {one_line(w['suggestion'])}"
        )
    if ov.db_busy_at and time.time() - ov.db_busy_at < 300:
        why = one_line(ov.db_busy_reason or "writes waited for a database lock held elsewhere")
        print(f"warning: {why} (last at {iso(ov.db_busy_at)}); {_busy_fix(ws)}")
    rows = []
    for item in doc["episodes"] + doc["clips"]:
        attempts = f"{item['attempts']}/{ws.config.retry.max_attempts}" if item["attempts"] else ""
        message = item["blocked_reason"] if item["status"] == "blocked" else item["error_message"]
        rows.append(
            [
                item["id"],
                item["kind"],
                item["stage"] or "-",
                item["status"],
                attempts,
                item["verdict"],
                item["error_class"],
                one_line(message)[:60],
            ]
        )
    if rows:
        print()
        print(_table(rows, ["ID", "KIND", "STAGE", "STATUS", "ATTEMPTS", "VERDICT", "ERROR", "MESSAGE"]))
    return EXIT_OK


def _numbered_groups(ws: Workspace) -> list[dict]:
    """`ewg failures`' groups with their numbers: 1 is the largest (ties by fingerprint), the same order
    in text and JSON, so `--group 2` means the second group printed."""
    return [{"number": n, **g} for n, g in enumerate(queries.failure_groups(ws.store), start=1)]


def _cmd_failures(ws: Workspace, args) -> int:
    groups = _numbered_groups(ws)
    if args.json:
        _print_json({"groups": groups})
        return EXIT_OK
    if not groups:
        print("No failed items.")
        return EXIT_OK
    for g in groups:
        fingerprint = one_line(g["fingerprint"])
        print(f"{g['number']}. [{g['count']}] {fingerprint}")
        print(f"    first {iso(g['first_seen'])}  last {iso(g['last_seen'])}")
        print(f"    ids: {one_line(', '.join(g['ids'][:8]))}{' ...' if len(g['ids']) > 8 else ''}")
        if g["suggestion"]:
            print(f"    fix: {one_line(g['suggestion'])}")
        print(f"    retry the group: ewg retry --group {g['number']}")
    return EXIT_OK


def _group_fingerprint(ws: Workspace, given: str | None) -> str | None:
    """`--group N` (a number from `ewg failures`) or `--group FINGERPRINT`: the fingerprint either way.
    A fingerprint always holds `|` (STAGE|CLASS|MESSAGE), so a whole number is never one."""
    if given is None or not given.strip().isdigit():
        return given
    groups = _numbered_groups(ws)
    number = int(given)
    if not 1 <= number <= len(groups):
        have = f"groups 1 to {len(groups)}" if len(groups) > 1 else ("group 1" if groups else "no groups")
        raise UsageError(
            f"--group {number}: there is no failure group {number}; `ewg failures` shows {have} now "
            "(the numbers follow the current failures, largest group first)."
        )
    return groups[number - 1]["fingerprint"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def _cmd_metrics(ws: Workspace, args) -> int:
    now = ws.clock.now()
    since = None if args.since is None else (now - args.since[1] if args.since[0] == "ago" else args.since[1])
    m = queries.metrics(ws.store, since=since)
    m["since"] = None if since is None else iso(since)
    m["recovery_cost"] = cost = queries.recovery_cost(ws.store, since, now)
    if args.json:
        _print_json(m)
        return EXIT_OK
    if since is not None:
        print(f"since {iso(since)}:")
    print(
        f"recovery success rate: {_pct(m['recovery_success_rate'])} "
        f"({m['recovered']} of {m['failures']} failed stages recovered)"
    )
    t = m["time_to_recovery_s"]
    print(f"time to recovery: median {_secs(t['median'])}, mean {_secs(t['mean'])}, max {_secs(t['max'])}")
    if m["top_failure_points"]:
        print("\nmost common failure points:")
        print(
            _table(
                [[p["kind"], p["stage"], p["error_class"], p["count"]] for p in m["top_failure_points"]],
                ["KIND", "STAGE", "CLASS", "COUNT"],
            )
        )
    if m["action_effectiveness"]:
        print("\naction effectiveness:")
        print(
            _table(
                [
                    [
                        a["verb"],
                        a["items"],
                        a["succeeded"],
                        a["failed_again"],
                        a["pending"],
                        _pct(a["refailure_rate"]),
                    ]
                    for a in m["action_effectiveness"]
                ],
                ["VERB", "ITEMS", "SUCCEEDED", "FAILED AGAIN", "PENDING", "RE-FAILURE RATE"],
            )
        )
    _print_recovery_cost(cost)
    return EXIT_OK


def _print_recovery_cost(cost: dict) -> None:
    print("\ncost of recovery: " + queries.recovery_cost_summary(cost))
    rows = [
        [
            s["kind"],
            s["stage"],
            s["runs"],
            s["failed_runs"],
            _secs(s["failed_seconds"]),
            s["retries"],
            _secs(s["retry_seconds"]),
            s["rescues"],
            _secs(s["rescue_seconds"]),
        ]
        for s in cost["stages"]
        if s["failed_runs"] or s["retries"] or s["rescues"]
    ]
    if rows:
        print(
            _table(
                rows,
                [
                    "KIND",
                    "STAGE",
                    "RUNS",
                    "FAILED",
                    "FAILED TIME",
                    "RETRIES",
                    "RETRY TIME",
                    "RESCUES",
                    "LOST",
                ],
            )
        )
    if cost["by_error_class"]:
        print("\ntime lost by error class:")
        print(
            _table(
                [
                    [c["kind"], c["stage"], c["error_class"], c["runs"], _secs(c["seconds"])]
                    for c in cost["by_error_class"]
                ],
                ["KIND", "STAGE", "CLASS", "RUNS", "TIME"],
            )
        )


def _cmd_log(ws: Workspace, args) -> int:
    if args.id and queries.item(ws.store, args.id) is None:
        raise UsageError(f"Unknown item id {args.id!r}. `ewg status` lists the ids.")
    events = queries.events(ws.store, args.id, limit=args.limit)
    attempts = queries.attempts(ws.store, args.id) if args.id else []
    if args.follow:
        return _follow_log(ws, args, events, attempts)
    if args.json:
        _print_json({"events": events, "attempts": attempts})
        return EXIT_OK
    for e in reversed(events):
        _print_event(e)
    if attempts:
        print(f"\nattempts of {one_line(args.id)}:")
        for a in attempts:
            _print_attempt(a)
        _print_log_tail(attempts[-1])
    return EXIT_OK


def _print_event(e: dict) -> None:
    affected = e["affected"] or []
    target = ", ".join(affected[:3]) + (f" (+{len(affected) - 3})" if len(affected) > 3 else "")
    print(  # each value on this line: a newline in a reason must not start a forged event line
        f"{iso(e['at'])}  {one_line(e['actor']):<10} {one_line(e['verb']):<16} "
        + one_line(target or e["selection"])
        + (f"  reason: {one_line(e['reason'])}" if e["reason"] else "")
        + (f"  -> {one_line(e['result'])}" if e["result"] else ""),
        flush=True,
    )


def _print_attempt(a: dict) -> None:
    print(
        f"  #{a['number']} {iso(a['started_at'])} {one_line(a['stage']):<12} "
        f"{one_line(a['outcome'] or 'running'):<10} {_secs(a['duration']):>8}  "
        f"{one_line(a['error_class'])} {one_line(a['error_message'])}".rstrip(),
        flush=True,
    )
    if a["decision"]:
        print(f"      decision: {one_line(a['decision'])}", flush=True)


def _print_log_tail(a: dict) -> None:
    if a["log_tail"]:
        print(f"\nlog tail of attempt #{a['number']} ({one_line(a['stage'])}):")
        for line in inert(a["log_tail"]).splitlines():  # indented: a stage's line reads as its own
            print(f"    {line}")
        sys.stdout.flush()


def _attempt_key(a: dict) -> tuple:
    """An attempt while it runs has no row yet (queries.attempts reads it off the lease): it is known by
    its lease token, then by its row id once it ended."""
    return ("ended", a["id"]) if a["id"] is not None else ("running", a["lease_token"])


def _follow_log(ws: Workspace, args, events: list[dict], attempts: list[dict]) -> int:
    """`ewg log [ID] --follow`: what `ewg log` prints, then each new event (and, for one item, each attempt
    as it starts and ends, with its log tail) as the database gets it, until Ctrl-C (exit 0). Under
    --json one document a line. The workspace is open read-only: following never writes."""

    def emit_event(e: dict) -> None:
        if args.json:
            print(json.dumps(_versioned({"event": e})), flush=True)
        else:
            _print_event(e)

    def emit_attempt(a: dict, tail: bool) -> None:
        if args.json:
            print(json.dumps(_versioned({"attempt": a})), flush=True)
            return
        if tail and a["id"] is not None:
            print(f"attempt of {one_line(args.id)}:", flush=True)
        _print_attempt(a)
        if tail:
            _print_log_tail(a)

    last_event = max((e["id"] for e in events), default=0)
    seen = set()
    try:
        for e in reversed(events):
            emit_event(e)
        if attempts and not args.json:
            print(f"\nattempts of {one_line(args.id)}:", flush=True)
        for a in attempts:
            seen.add(_attempt_key(a))
            emit_attempt(a, tail=False)
        if attempts and not args.json:
            _print_log_tail(attempts[-1])
        if not args.json:
            print(f"-- following{' ' + one_line(args.id) if args.id else ''}; Ctrl-C stops --", flush=True)
        while True:
            time.sleep(args.interval)
            new = queries.events(ws.store, args.id, limit=1000, since_id=last_event)
            for e in reversed(new):
                emit_event(e)
                last_event = max(last_event, e["id"])
            if args.id:
                for a in queries.attempts(ws.store, args.id):
                    if _attempt_key(a) not in seen:
                        seen.add(_attempt_key(a))
                        emit_attempt(a, tail=True)
    except KeyboardInterrupt:  # the way to stop following: not an error, and no traceback
        return EXIT_OK


def _cmd_verb(ws: Workspace, args) -> int:
    op = Operator(ws)
    kw = {"reason": args.reason, "dry_run": args.dry_run}
    cmd = args.command
    ids: Any = getattr(args, "ids", None) or None
    if getattr(args, "group", None) is not None:
        args.group = _group_fingerprint(ws, args.group)
    if getattr(args, "where", None):
        if (
            ids
            or getattr(args, "failed", False)
            or getattr(args, "group", None)
            or getattr(args, "all", False)
        ):
            raise UsageError(f"`ewg {cmd}`: give ids, --failed, --group, --all or --where, not several.")
        ids = parse_where(args.where, ws.clock.now())
    calls: dict[str, Callable[[], Preview]] = {
        "retry": lambda: (
            op.retry(ids, failed=args.failed, group=args.group, **kw)
            if (ids or args.failed or args.group)
            else _missing("retry", "ID..., --failed, --group N|FINGERPRINT or --where KEY=VALUE")
        ),
        "reprocess": lambda: (
            op.reprocess(ids, from_stage=args.from_stage, failed=args.failed, group=args.group, **kw)
            if (ids or args.failed or args.group)
            else _missing("reprocess", "ID..., --failed, --group N|FINGERPRINT or --where KEY=VALUE")
        ),
        "resume": lambda: op.resume(ids, **kw),
        "reset": lambda: op.reset(ids, all_items=args.all, failed=args.failed, **kw),
        "skip": lambda: op.skip(ids, **kw) if ids else _missing("skip", "ID... or --where KEY=VALUE"),
        "discard": lambda: (
            op.discard(ids, **kw) if ids else _missing("discard", "ID... or --where KEY=VALUE")
        ),
        "rollback": lambda: op.rollback(args.id, args.to_stage, **kw),
        "clear-cache": lambda: (
            op.clear_cache(ids, **kw) if ids else _missing("clear-cache", "ID... or --where KEY=VALUE")
        ),
        "deep-clean": lambda: op.deep_clean(**kw),
        "stop": lambda: op.stop(ids, force=args.force, **kw),
        "extend": lambda: op.extend(args.id, args.seconds, **kw),
        "pause": lambda: op.pause(**kw),
        "unpause": lambda: op.unpause(**kw),
    }
    if cmd == "clip":
        clip_calls: dict[str, Callable[[], Preview]] = {
            "retry": lambda: op.retry_clips(args.ids, **kw),
            "rerender": lambda: op.rerender_clips(args.ids, **kw),
            "delete-retry": lambda: op.delete_and_retry_clips(args.ids, **kw),
            "retry-failed": lambda: op.retry_all_failed_clips(**kw),
            "regenerate-all": lambda: op.regenerate_all_clips(args.ids or None, **kw),
            "clean-retry": lambda: op.clean_and_retry_clips(args.ids or None, **kw),
        }
        preview = clip_calls[args.clip_command]()
    else:
        preview = calls[cmd]()
    return _print_preview(preview, args.json)


def _missing(verb: str, what: str) -> Preview:
    raise UsageError(f"`ewg {verb}` needs {what}.")


# -- engine commands -------------------------------------------------------------------------------
def _cmd_run(ws: Workspace, args) -> int:
    from engine.runtime import Engine, EngineEvent

    quiet = args.quiet

    as_json = getattr(args, "log_format", "plain") == "json"
    human = sys.stderr if as_json else sys.stdout  # with JSON lines, stdout holds nothing else

    def show(event: EngineEvent) -> None:
        if quiet or event.kind == "claimed":
            return
        stamp = iso(time.time())  # one timestamp format everywhere: ISO 8601 UTC with Z
        if as_json:  # json.dumps escapes every control character: the line stays one inert line
            fields = {"at": stamp, "event": event.kind, "item": event.item_id, "stage": event.stage}
            print(json.dumps({**fields, "text": event.text or ""}, ensure_ascii=True), flush=True)
            return
        text = f"  {event.text}" if event.text else ""
        print(one_line(f"{stamp} {event.kind:<9} {event.item_id} {event.stage}{text}"), flush=True)

    engine = Engine(ws, workers=args.workers, on_event=show)
    signals = {"count": 0}
    wake = threading.Event()

    def on_signal(signum, _frame) -> None:
        signals["count"] += 1
        if signum == signal.SIGHUP:  # the terminal went away (tmux, SSH): stop as for SIGTERM, print nowhere
            from ewg_tui.terminal import detach_dead

            detach_dead(all_ttys=True)
        wake.set()
        if signals["count"] >= 2:
            print("second signal: forcing stop", file=sys.stderr, flush=True)
            threading.Thread(target=engine.stop, kwargs={"force": True}, daemon=True).start()

    exporter = _metrics_server(
        ws, getattr(args, "metrics", None)
    )  # binds first: a bad address starts nothing
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for warning in command_warnings(ws.config):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    from engine.sd_notify import Notifier

    systemd = Notifier()
    log_lines = _log_to_stderr(getattr(args, "log_format", "plain"))
    engine.start()
    print(
        f"engine {engine.owner} running with {engine.workers} worker(s) on {one_line(ws.root)}"
        + ("; stops when idle" if args.until_idle else "; Ctrl-C stops gracefully, twice forces"),
        flush=True,
        file=human,
    )
    systemd.ready(f"running with {engine.workers} worker(s) on {ws.root}")
    systemd.start_watchdog(engine.alive)
    if exporter is not None:
        print(f"Prometheus metrics at {exporter.url}", flush=True, file=human)
    try:
        while not wake.wait(0.25):
            if args.until_idle and engine.idle():
                break
        if signals["count"]:
            print(
                f"stopping gracefully (up to {ws.config.engine.stop_grace:.0f} s; signal again to force)",
                file=sys.stderr,
                flush=True,
            )
        systemd.stopping()
        engine.stop()
    finally:
        systemd.close()
        for s, h in old.items():
            signal.signal(s, h)
        if exporter is not None:
            exporter.stop()
        logging.getLogger("ewg").removeHandler(log_lines)
    counts = queries.counts(ws.store)
    for kind in pipeline.KINDS:
        by = {s: n for s, n in counts[kind]["by_status"].items() if n}
        print(f"{kind}s: " + (", ".join(f"{n} {s}" for s, n in by.items()) or "none"), file=human)
    failed = sum(counts[k]["by_status"]["failed"] for k in pipeline.KINDS)
    if failed:
        print(
            f"{failed} item(s) need an operator: `ewg failures` groups them, `ewg retry --failed` retries them.",
            file=human,
        )
    return EXIT_OK


def _metrics_server(ws: Workspace, address: str | None):
    """The /metrics endpoint of `ewg run`, bound now; None when neither --metrics nor [engine] metrics asks."""
    where = "--metrics" if address else "[engine] metrics in ewg.toml"
    address = address or ws.config.engine.metrics
    if not address:
        return None
    from engine.metrics_export import MetricsAddressError, MetricsServer, parse_address

    try:
        return MetricsServer(ws.store, parse_address(address), clock=ws.clock).start()
    except MetricsAddressError as exc:
        raise UsageError(f"{where}: {exc}") from None


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: at (ISO 8601 UTC, Z), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"at": iso(record.created), "level": record.levelname.lower(), "logger": record.name}
        doc["message"] = record.getMessage()
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=True)


def _log_to_stderr(log_format: str = "plain") -> logging.Handler:
    """The engine's warnings as `ewg run` lines on stderr, inert: they quote stage output and errors."""
    handler = logging.StreamHandler()  # sys.stderr now: the inert stream main() put there
    handler.setLevel(logging.WARNING)
    if log_format == "json":
        formatter: logging.Formatter = _JsonFormatter()
    else:
        formatter = InertFormatter("%(asctime)s %(levelname)-9s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime  # the same UTC clock as the event lines
    handler.setFormatter(formatter)
    logging.getLogger("ewg").addHandler(handler)
    return handler


def _cmd_prune(ws: Workspace, args) -> int:
    from engine.retention import prune
    from engine.verbs import _os_user

    keep = ws.config.retention
    days = keep.days if args.days is None else args.days
    if not days:
        raise UsageError("[retention] days is 0 (keep everything); pass --days N to prune once.")
    report = prune(
        ws.store,
        days=days,
        keep_attempts_per_item=keep.keep_attempts_per_item,
        now=ws.clock.now(),
        dry_run=args.dry_run,
        actor=_os_user(),
    )
    if args.json:
        _print_json({**report.to_dict(), "cutoff": iso(report.cutoff)})
        return EXIT_OK
    what = (
        f"{report.attempts} finished attempts, {report.events} engine events, {report.health} health samples"
        f" older than {iso(report.cutoff)}"
    )
    print(("Deleted " if report.applied else "Dry run, nothing deleted: would delete ") + what + ".")
    return EXIT_OK


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 0 < value <= 36500:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 36500 days")
    return value


def _cmd_alerts(ws: Workspace, args) -> int:
    from engine.alerts import Alert, Alerter, AlertEvent

    settings = ws.config.alerts.settings()
    alerter = Alerter(settings.sinks(), settings.policy, clock=ws.clock)
    if not alerter.enabled:
        raise UsageError(
            "no alerts are configured: set `webhook` or `command` under [alerts] in ewg.toml "
            "(`ewg init --print-config` shows the keys)."
        )
    host = socket.gethostname()
    test = Alert(
        event=AlertEvent.TEST,
        message=f"test alert from ewg on {host}",
        host=host,
        at=ws.clock.now(),
        suggestion="Nothing to do: this checks that alerts reach you.",
    )
    failed = 0
    for result in alerter.send_now(test):
        if result.ok:
            print(
                f"{one_line(result.sink)}: delivered ({result.tries} {'try' if result.tries == 1 else 'tries'})"
            )
        else:
            failed += 1
            print(
                f"{one_line(result.sink)}: NOT delivered after {result.tries} tries: {one_line(result.error)}"
            )
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_init(args) -> int:
    if args.print_config:
        print(DEFAULT_TOML, end="")
        return EXIT_OK
    root = resolve_root(args.dir or args.workspace)
    if args.demo:
        ws = _make_demo(root, args.demo, args.simulated, args.database)
        print(
            f"Created a demo workspace in {one_line(root)} with {args.demo} episodes, bad inputs and injected faults."
        )
    else:
        from engine.workspace import init_workspace

        ws = init_workspace(root, database=args.database)
        shown = one_line(root)
        print(f"Created a workspace in {shown}: edit {shown}/ewg.toml, then `ewg --workspace {shown}`.")
    ws.close()
    return EXIT_OK


def _cmd_completion(args) -> int:
    """A completion script from the parser itself (shtab), so it knows every command, option and choice:
    the stage names of --from and --to, the verbs, the shells; folders for --workspace and DIR."""
    import shtab

    parser = build_parser()
    for action in _all_actions(parser):
        if action.dest in ("workspace", "dir"):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.dest in ("from_stage", "to_stage"):  # offered, not enforced: the verb names the kind's
            action.choices = _stage_names()
    print(shtab.complete(parser, shell=args.shell), end="")
    return EXIT_OK


def _all_actions(parser: argparse.ArgumentParser):
    """Every action of a parser and of its sub-commands' parsers, depth first."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _all_actions(sub)


def _make_demo(root: Path, count: int, simulated: bool, database: str | None = None) -> Workspace:
    from engine import demo

    if simulated:
        return demo.create_demo(root, count=count, database=database)
    return demo.create_media_demo(root, count=count, database=database)


def _cmd_scan(ws: Workspace, args) -> int:
    """Exit 0 when the scan ran, even with entries skipped: the rest was taken, and each problem is a
    warning line (and in --json `problems`), not a failed command."""
    from engine.intake import scan_once
    from engine.media.discovery import printable

    intake = scan_once(ws, actor=Operator(ws).actor)
    if args.json:
        _print_json(
            {
                "added": intake.added,
                "known": intake.known,
                "moved": intake.moved,
                "waiting": [{"file": printable(str(p)), "why": w} for p, w in intake.waiting],
                "missing_folders": [
                    {"show": printable(s), "folder": printable(str(p))} for s, p in intake.missing_folders
                ],
                "problems": [{"file": p.shown, "why": p.why} for p in intake.problems],
            }
        )
        return EXIT_OK
    print(
        f"{len(intake.added)} new episode(s), {intake.known} already known, {len(intake.waiting)} waiting"
        + (f", {len(intake.problems)} problem(s)." if intake.problems else ".")
    )
    for item_id in intake.added:
        print(f"  added {one_line(item_id)}")
    for item_id in intake.moved:
        print(f"  source moved: {one_line(item_id)} now reads its file from its new place")
    for path, why in intake.waiting:
        print(f"  waiting: {printable(str(path))}: {one_line(why)}")
    for show, path in intake.missing_folders:
        print(f"  missing folder for show {printable(show)!r}: {printable(str(path))}")
    for problem in intake.problems:
        print(f"  warning: {problem.shown}: {one_line(problem.why)}")
    return EXIT_OK


def _cmd_doctor(root: Path, args) -> int:
    """Works on a workspace that cannot be opened (that is when it is needed most): never opens it normally."""
    from engine.doctor import diagnose

    report = diagnose(root, repair=args.repair)
    if args.json:
        _print_json(report.to_dict(), default=str)
    else:
        print(inert(report.text()))
    return EXIT_OK if report.healthy else EXIT_FAILED


def _cmd_demo(args) -> int:
    from engine.demo import why_not_replaceable

    if not args.headless:
        _need_terminal()  # before anything is written: a demo nobody can see is no use
    root = Path(args.dir or "demo-workspace").resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        why = why_not_replaceable(root) if root.is_dir() and not root.is_symlink() else "it is not a folder"
        if why:
            raise UsageError(
                f"{one_line(root)} is not empty and is not a demo that ewg can replace: {why}. Nothing was deleted. "
                f"Choose a new or empty folder (ewg demo DIR), or move {root} away yourself."
            )
        if not args.force:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise UsageError(
                    f"{root} holds an earlier ewg demo; replacing it deletes its database and every file in "
                    f"it. Nothing was deleted. Run `ewg demo {root} --force` to replace it, or choose another folder."
                )
            try:
                answer = input(
                    f"Replace the demo workspace {one_line(root)}? Its database and files are deleted. [y/N] "
                )
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing was deleted.")
                return EXIT_FAILED
        import shutil

        shutil.rmtree(root)
    ws = _make_demo(root, args.episodes, args.simulated)
    print(
        f"Demo workspace: {one_line(root)} ({args.episodes} episodes plus bad inputs; faults injected: transient, hang, "
        "corrupt source, disk full, slow, missing dependency).",
        flush=True,
    )
    if args.headless:
        args.until_idle, args.quiet = True, False
        return _cmd_run(ws, args)
    ws.close()
    return _console(root, args)


def _need_terminal() -> None:
    """The console draws with escape codes and reads keys: into a file or a pipe it would write them
    forever and never be answered."""
    for name, stream in (("output", sys.stdout), ("input", sys.stdin)):
        if not stream.isatty():
            raise UsageError(
                f"The console needs a terminal, and its {name} is not one (a pipe or a file). "
                "For text, use `ewg status` (or `ewg status --json`); to run the engine without the "
                "console, `ewg run`."
            )


def _console(root: Path, args) -> int:
    _need_terminal()
    # Opened before the screen takes over, so its errors print plainly; the console goes on with it
    # (opening twice ran the database's quick_check twice: 80 ms each at 100k episodes). That check
    # runs after the first frame (run_console), and a damaged database ends the console the same way.
    ws = open_workspace(root, readonly=args.readonly, verify=False)
    from ewg_tui.app import run_console

    return run_console(
        root, workers=args.workers, attach=args.attach, readonly=args.readonly, theme=args.theme, ws=ws
    )


WRITES = {
    "retry",
    "reprocess",
    "resume",
    "reset",
    "skip",
    "discard",
    "rollback",
    "clear-cache",
    "deep-clean",
    "stop",
    "extend",
    "pause",
    "unpause",
    "clip",
    "run",
    "scan",
    "prune",
}


def main(argv: list[str] | None = None) -> int:
    # Everything ewg and its stages create is owner-only, whatever umask the caller had (a stricter one
    # is kept): under umask 000 another user could append a command stage to ewg.toml.
    os.umask(os.umask(0o077) | 0o077)
    global _json_errors
    given = sys.argv[1:] if argv is None else list(argv)
    _json_errors = "--json" in given[: given.index("--")] if "--" in given else "--json" in given
    with inert_output():  # argparse echoes what it was given: an id holding ESC[2J must not clear the screen
        args = parse_args(build_parser(), given)
    if args.command is None or (args.command == "demo" and not args.headless):
        return _run(args)  # the console: Textual owns the terminal and gets its text inert from its widgets
    with inert_output():
        return _run(args)


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, with an unknown option or argument named in the words of the (sub-)command it was
    given to, and the closest option of that command suggested."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        target = _chosen_parser(parser, args)
        word = extras[0]
        if word.startswith("-") and word != "-":
            options = [o for a in target._actions for o in a.option_strings if o.startswith("--")]
            what = f"`{target.prog}` has no option {word!r}" + _did_you_mean(word.split("=", 1)[0], options)
        else:
            what = f"`{target.prog}` takes no argument {word!r}"
        target.error(what)
    return args


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser the arguments chose (`ewg clip retry` -> the clip retry parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_parser(chosen, args)
    return parser


def _busy_fix(ws: Workspace) -> str:
    if ws.store.backend == "postgresql":
        return "check the server and the network between it and the engine hosts (`ewg doctor`)"
    return "check for long-running sqlite3 sessions or backups on this workspace"


def _database_failed(exc: BaseException) -> int:
    """A driver's error that reached the command: a permission, a lost server, or damage."""
    kind = faults.fault(exc)
    if kind == faults.READ_ONLY and "readonly" in str(exc):  # SQLite's file made read-only under ewg
        _fail(
            f"ewg: the database cannot be written ({one_line(exc)}): a permission problem, not damage. "
            "Check the owner and mode of the database, its -wal/-shm files and its folder (ls -l); "
            "`chmod u+rw` the files and `chmod u+rwx` the folder as the workspace's owner.",
            EXIT_USAGE,
        )
        return EXIT_USAGE
    if kind == faults.LOST:
        _fail(
            f"ewg: the database server went away during the command ({one_line(str(exc).strip())[:200]}); "
            "what was committed is kept. Run the command again when `ewg doctor` reaches it.",
            EXIT_DATABASE,
        )
        return EXIT_DATABASE
    _fail(
        f"ewg: the database cannot be used ({one_line(exc)}). `ewg doctor` checks it and shows the way back "
        "from the newest backup.",
        EXIT_DATABASE,
    )
    return EXIT_DATABASE


def _run(args) -> int:
    try:
        return _dispatch(args)
    except (UsageError, ConfigError, VerbError, UnsafePath) as exc:
        _fail(f"ewg: {exc}", EXIT_USAGE)
        return EXIT_USAGE
    except DatabasePathError as exc:  # a path or permission set up wrong: the user's to fix, no damage
        _fail(f"ewg: {exc}", EXIT_USAGE)
        return EXIT_USAGE
    except DatabaseError as exc:
        _fail(f"ewg: {exc}", EXIT_DATABASE)
        return EXIT_DATABASE
    except Exception as exc:
        if not isinstance(exc, faults.driver_errors()):
            raise
        return _database_failed(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _check_ids(args) -> None:
    """An id typed in another encoding (bytes that are not UTF-8) names no item: say so, not a traceback
    from the database driver, which cannot even look it up."""
    given = list(getattr(args, "ids", None) or []) + [getattr(args, "id", None) or ""]
    for item_id in given:
        if not is_utf8(item_id):
            raise UsageError(
                f"{one_line(item_id)} is not an item id: it holds bytes that are not UTF-8. "
                "`ewg status` lists the ids."
            )


def _dispatch(args) -> int:
    if args.json and args.command not in JSON_COMMANDS:
        if args.command is None:
            raise UsageError("the console has no JSON output: `ewg status --json` prints the state as JSON.")
        other = " (`ewg run --log-format json` writes its lines as JSON)" if args.command == "run" else ""
        raise UsageError(
            f"`ewg {args.command}` has no --json output{other}; `ewg --help` lists the commands."
        )
    if args.command == "init":
        return _cmd_init(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "completion":
        return _cmd_completion(args)
    root = resolve_root(args.workspace)
    if args.command is None:
        return _console(root, args)
    if args.readonly and (args.command in WRITES or (args.command == "doctor" and args.repair)):
        what = "doctor --repair" if args.command == "doctor" else args.command
        raise UsageError(f"--readonly: `ewg {what}` would change the workspace; run it without --readonly.")
    if args.command == "doctor":
        return _cmd_doctor(root, args)
    _check_ids(args)
    following = args.command == "log" and args.follow  # reads only, even when another process migrates
    ws = open_workspace(root, readonly=args.readonly or following)
    try:
        if args.command == "run":
            return _cmd_run(ws, args)
        handler = {
            "status": _cmd_status,
            "failures": _cmd_failures,
            "metrics": _cmd_metrics,
            "log": _cmd_log,
            "scan": _cmd_scan,
            "alerts": _cmd_alerts,
            "prune": _cmd_prune,
        }.get(args.command, _cmd_verb)
        return handler(ws, args)
    finally:
        ws.close()


if __name__ == "__main__":
    sys.exit(main())
