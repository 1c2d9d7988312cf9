"""`ewg.toml`: the workspace configuration, validated at start.

Every mistake becomes one `ConfigError` whose message names the key, the
problem and the fix; the CLI prints it and exits 2. Defaults follow the AI-EWG
numbers (docs/ARCHITECTURE.md, Configuration).
"""

from __future__ import annotations

import difflib
import math
import re
import shutil
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import alerts, errors, pipeline, placeholders

Policy = Literal["off", "warn", "enforce"]


# Built-in stages that only read and check files (the probe demuxes the source, no decoding):
# a hung network mount should be noticed in minutes, not after the hour an episode may take.
FILE_OPERATION_STAGES = {(pipeline.EPISODE, "discovered")}


class ConfigError(Exception):
    """A configuration problem a person must fix; the message says how."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Paths(_Section):
    """Where the workspace keeps its files, relative to the workspace folder."""

    items: str = Field("items", description="per-item folders: checkpoints, cache, temporary outputs")
    database: str = Field(
        "ewg.db",
        description="the single source of truth: a SQLite file (WAL), or a postgresql:// URL for many hosts "
        "($EWG_DATABASE_URL overrides it)",
    )
    backups: str = Field(
        "backups", description="online database backups (before migrations and on a schedule)"
    )


class Engine(_Section):
    """The stage engine: workers, leases, heartbeats, stopping, the database."""

    workers: int = Field(2, ge=0, le=256, description="worker threads of `ewg run` and of the console")
    heartbeat_interval: float = Field(
        1.0, gt=0, le=60, description="leases are extended and progress written this often (batched)"
    )
    lease_duration: float = Field(
        30.0, gt=0, le=3600, description="a lease not extended for this long may be taken over"
    )
    dead_after: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="heartbeat older than this: the owner is DEAD and its work is rescued",
    )
    check_interval: float = Field(
        1.0, gt=0, le=60, description="how often the watchdog looks for DEAD / STALLED / SLOW / TIMED OUT"
    )
    poll_interval: float = Field(0.25, gt=0, le=60, description="idle workers look for new work this often")
    stop_grace: float = Field(
        10.0, ge=0, le=3600, description="graceful stop: how long stages get to reach a safe point"
    )
    force_grace: float = Field(
        3.0, ge=0, le=600, description="force stop: SIGTERM to SIGKILL, and when a Python stage is abandoned"
    )
    synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite synchronous: NORMAL survives process crashes, FULL also power loss"
    )
    busy_timeout_ms: int = Field(
        5000,
        ge=0,
        le=600_000,
        description="wait this long for a database lock before backing off and retrying",
    )
    backup_interval: float = Field(
        3600.0, ge=0, description="online database backup every N seconds (0 = never)"
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority (nice) of stage processes: the worker subprocesses of heavy stages "
        "(media, transcription) and every command stage's program",
    )
    metrics: str = Field(
        "",
        description='HOST:PORT where `ewg run` serves Prometheus text at /metrics (e.g. "127.0.0.1:9464"); '
        '"" = off; `ewg run --metrics HOST:PORT` overrides it',
    )

    @model_validator(mode="after")
    def _dead_after_beats(self) -> Engine:
        if self.dead_after <= self.heartbeat_interval:
            raise ValueError("dead_after must be longer than heartbeat_interval, or every worker looks dead")
        return self


class Timeouts(_Section):
    """How long one stage run may take (AI-EWG defaults); [stages.KIND.NAME] timeout overrides per stage."""

    episode_processing: float = Field(3600.0, gt=0, le=7 * 86400, description="an episode stage")
    clip_generation: float = Field(1800.0, gt=0, le=7 * 86400, description="a clip stage")
    api_requests: float = Field(
        300.0, gt=0, le=86400, description="one request to an external service (e.g. an LLM)"
    )
    file_operations: float = Field(
        120.0, gt=0, le=86400, description="the built-in probe (episode `discovered`): it only reads the file"
    )


class Retry(_Section):
    """Automatic retries: exponential backoff with jitter, base_delay * exponential_base^(n-1), capped."""

    max_attempts: int = Field(
        3, ge=1, le=100, description="attempts of one stage before it needs an operator"
    )
    base_delay: float = Field(5.0, ge=0, le=86400, description="the wait before the first retry")
    max_delay: float = Field(60.0, ge=0, le=7 * 86400, description="no wait is longer than this")
    exponential_base: float = Field(2.0, ge=1, le=10, description="each wait is this many times the last")
    jitter: float = Field(0.1, ge=0, le=1, description="+-10% so retries of many items do not stampede")

    @model_validator(mode="after")
    def _max_not_below_base(self) -> Retry:
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")
        return self


class Recovery(_Section):
    """What the engine does on its own after a failure."""

    auto_retry_transient: bool = Field(True, description="transient failures are retried with backoff")
    auto_clear_cache_on_retry: bool = Field(True, description="operator retries drop the item's cache first")
    auto_cleanup_failed_files: bool = Field(
        True, description="false keeps a failed attempt's partial output in .failed-STAGE-N"
    )
    keep_failed_outputs: int = Field(
        3, ge=1, le=1000, description="with cleanup off: the newest N .failed-* folders of an item are kept"
    )
    manual_intervention_required: list[str] = Field(
        default_factory=lambda: [errors.CONFIG_ERROR, errors.MISSING_DEPENDENCY],
        description=f"error classes never retried automatically; classes: {', '.join(errors.ERROR_CLASSES)}",
    )
    max_rescues: int = Field(
        20,
        ge=1,
        le=10_000,
        description="an item whose worker died this often on one stage is failed (poison pill)",
    )

    @field_validator("manual_intervention_required")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in errors.ERROR_CLASSES:
                raise ValueError(f"unknown error class {name!r}; known: {', '.join(errors.ERROR_CLASSES)}")
        return v


class Watchdog(_Section):
    """Stuck work. Policies: off | warn | enforce (enforce stops the attempt); per stage in [stages.KIND.NAME]."""

    stall_after: float = Field(
        300.0, gt=0, description="heartbeat fresh but progress frozen this long: STALLED"
    )
    stall_policy: Policy = Field("enforce", description="what a STALLED stage gets")
    timeout_policy: Policy = Field("enforce", description="what a stage past its [timeouts] gets")
    slow_policy: Policy = Field("warn", description="what a SLOW stage gets")
    slow_factor: float = Field(
        3.0, gt=1, description="SLOW: projected duration over slow_factor x the stage's median"
    )


class Health(_Section):
    """The host's resources, sampled by the engine and shown by the console."""

    interval: float = Field(5.0, gt=0, le=3600, description="CPU, memory and disk are sampled this often")
    cpu_warn_percent: float = Field(90.0, gt=0, le=100, description="CPU use above this is a warning")
    memory_warn_percent: float = Field(90.0, gt=0, le=100, description="memory use above this is a warning")
    disk_warn_free_mb: float = Field(5120.0, ge=0, description="free disk below this is a warning")
    disk_critical_free_mb: float = Field(
        1024.0, ge=0, description="below this the engine stops claiming work until space returns"
    )
    forecast_interval: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="early warnings from history (disk for the queued work, failure rates, flapping "
        "services, memory climbing, slow hosts); 0 = off",
    )

    @model_validator(mode="after")
    def _floor_below_warning(self) -> Health:
        if self.disk_critical_free_mb > self.disk_warn_free_mb:
            raise ValueError("disk_critical_free_mb must not exceed disk_warn_free_mb")
        return self


class Service(_Section):
    """An external service a stage needs ([services.NAME]); while it is down its stages wait as blocked."""

    url: str = Field(
        description="checked with a GET (required)", examples=["http://127.0.0.1:11434/api/tags"]
    )
    timeout: float = Field(5.0, gt=0, le=600, description="one check gives up after this long")
    interval: float = Field(10.0, gt=0, le=3600, description="checked this often")
    expect_status: int = Field(200, ge=100, le=599, description="the HTTP status that means up")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/api/tags")
        return v


class Alerts(_Section):
    """Where alerts go (engine.alerts): a webhook, a command, or both; neither means no alerts. Alerts are
    sent for work that needs an operator, stuck work, resource pauses, services down and engine stops;
    `ewg alerts test` sends one now."""

    webhook: str = Field(
        "", description='a JSON POST goes here, e.g. "https://hooks.example.org/ewg"; empty: no webhook'
    )
    command: list[str] = Field(
        default_factory=list,
        description='run with the alert\'s JSON on stdin, e.g. ["/usr/local/bin/page-oncall"]; empty: no command',
    )
    dedupe_window: float = Field(
        600.0,
        ge=0,
        le=7 * 86400,
        description="the same alert (event, items, class) is sent once in this window",
    )
    per_minute: int = Field(
        10,
        ge=1,
        le=10_000,
        description="at most this many alerts a minute; the next says how many were held back",
    )
    max_tries: int = Field(
        5,
        ge=1,
        le=100,
        description="deliveries are retried with exponential backoff, off the engine's threads",
    )

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL, e.g. https://hooks.example.org/ewg")
        return v

    def settings(self) -> alerts.AlertsSettings:
        return alerts.AlertsSettings(
            webhook=self.webhook,
            command=list(self.command),
            policy=alerts.AlertPolicy(
                dedupe_window=self.dedupe_window, per_minute=self.per_minute, max_tries=self.max_tries
            ),
        )


class Retention(_Section):
    """How much history the database keeps (engine.retention); `ewg prune --dry-run` shows what goes."""

    days: float = Field(
        90.0,
        ge=0,
        le=36500,
        description="finished attempts, engine events and health samples older than this go (0 = never)",
    )
    keep_attempts_per_item: int = Field(
        5, ge=1, le=10_000, description="each item keeps its newest attempts whatever their age"
    )
    interval: float = Field(
        3600.0,
        ge=60,
        le=7 * 86400,
        description="how often the engine prunes; people's verbs in the audit log are never pruned",
    )


class ErrorRuleConfig(_Section):
    """A stage's own error classification: output matching `pattern` fails with `class`."""

    pattern: str = Field(
        description="a regular expression searched in the error", examples=["CUDA out of memory"]
    )
    error_class: str = Field(
        alias="class", description=f"one of {', '.join(errors.ERROR_CLASSES)}", examples=[errors.RESOURCE]
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("error_class")
    @classmethod
    def _cls(cls, v: str) -> str:
        if v not in errors.ERROR_CLASSES:
            raise ValueError(f"unknown error class {v!r}; known: {', '.join(errors.ERROR_CLASSES)}")
        return v


class StageConfig(_Section):
    """How one stage runs; a stage without a table runs ewg's built-in stage with its defaults."""

    kind: Literal["demo", "python", "command", "builtin", "noop"] = Field(
        "builtin",
        description="builtin (ewg's own, engine/media) | command (a program) | python (a function) | "
        "demo (simulated) | noop (does nothing)",
    )
    callable: str | None = Field(
        None, description="a python stage: the function to call", examples=["mypackage.stages:transcribe"]
    )
    command: list[str] | None = Field(
        None,
        description="a command stage: the program and its arguments; placeholders such as {source} and "
        "{output_dir} are filled in",
        examples=[["my-whisper", "--in", "{source}", "--out", "{output_dir}"]],
    )
    exit_codes: dict[str, str] = Field(
        default_factory=dict,
        description="a command's exit code -> error class",
        examples=[{"75": errors.TRANSIENT, "65": errors.PERSISTENT}],
    )
    timeout: float | None = Field(
        None, gt=0, le=7 * 86400, description="overrides [timeouts] for this stage", examples=[1800.0]
    )
    stall_after: float | None = Field(
        None, gt=0, description="overrides [watchdog] stall_after for this stage", examples=[600.0]
    )
    stall_policy: Policy | None = Field(
        None, description="overrides [watchdog] stall_policy", examples=["warn"]
    )
    timeout_policy: Policy | None = Field(
        None, description="overrides [watchdog] timeout_policy", examples=["enforce"]
    )
    slow_policy: Policy | None = Field(None, description="overrides [watchdog] slow_policy", examples=["off"])
    services: list[str] = Field(
        default_factory=list,
        description="[services.NAME] this stage needs: it waits as blocked while one is down",
        examples=[["llm"]],
    )
    error_rules: list[ErrorRuleConfig] = Field(
        default_factory=list,
        description="classify this stage's errors by their text",
        examples=[[{"pattern": "CUDA out of memory", "class": errors.RESOURCE}]],
    )
    duration: float = Field(2.0, ge=0, le=86400, description="a demo stage: seconds a simulated run takes")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the stage's own settings ([stages.KIND.NAME.options]; the built-in stages' are listed below)",
    )
    isolate: bool | None = Field(
        None,
        description="run in a worker subprocess (unset: heavy built-in stages only)",
        examples=[True],
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="a command stage: files it must write into its output_dir",
        examples=[["segments.json"]],
    )
    reads: list[str] | None = Field(
        None,
        description="earlier stages whose output this stage reads (unset: the built-in table for built-in "
        "stages, nothing for others): skip refuses to skip a stage a later one reads",
        examples=[["discovered"]],
    )
    skip_fallback: bool = Field(
        False, description="later stages cope without this stage's output: it may be skipped"
    )

    @field_validator("outputs")
    @classmethod
    def _relative_outputs(cls, v: list[str]) -> list[str]:
        for name in v:
            parts = name.replace("\\", "/").split("/")
            if not name or name.startswith("/") or ".." in parts:
                raise ValueError(
                    f"outputs entry {name!r} must be a path inside output_dir, e.g. segments.json"
                )
        return v

    @model_validator(mode="after")
    def _kind_needs(self) -> StageConfig:
        if self.kind == "python" and not (self.callable and re.match(r"^[\w.]+:[\w.]+$", self.callable)):
            raise ValueError('kind = "python" needs callable = "package.module:function"')
        if self.kind == "command":
            if not self.command:
                raise ValueError('kind = "command" needs command = ["program", "arg", ...]')
        elif self.outputs:
            raise ValueError(
                'outputs is checked only for kind = "command"; remove it or make the stage a command'
            )
        for code, cls in self.exit_codes.items():
            if not code.lstrip("-").isdigit():
                raise ValueError(f"exit_codes key {code!r} is not an exit code number")
            if cls not in errors.ERROR_CLASSES:
                raise ValueError(
                    f"exit_codes {code} maps to unknown class {cls!r}; known: {', '.join(errors.ERROR_CLASSES)}"
                )
        return self


class DemoFault(_Section):
    """One scripted fault ([[demo.faults]], repeatable)."""

    item: int | str = Field(description="an episode number (any show) or an item id", examples=[2])
    stage: str = Field(description="the stage it hits", examples=["transcribed"])
    fault: Literal[
        "transient",
        "persistent",
        "cache",
        "disk_full",
        "hang",
        "hang_hard",
        "slow",
        "missing_dependency",
        "config_error",
    ] = Field(
        description="transient | persistent | cache | disk_full | hang | hang_hard | slow | "
        "missing_dependency | config_error",
        examples=["transient"],
    )
    times: int = Field(1, ge=1, le=1000, description="how many attempts fail this way")
    kind: Literal["episode", "clip"] = Field("episode", description="episode | clip")


class Demo(_Section):
    """Fault injection ("chaos"): applies to every stage kind, so real stages can show recovery too."""

    seed: int = Field(7, description="the random seed of injected faults: the same seed, the same run")
    transient_probability: float = Field(
        0.0, ge=0, le=1, description="each stage run fails as transient with this probability"
    )
    pace: float = Field(0.0, ge=0, le=600, description="minimum seconds per stage, so a demo can be watched")
    faults: list[DemoFault] = Field(default_factory=list, description="scripted faults")


class Sources(_Section):
    """Source folders the engine scans for new episodes (one folder per show)."""

    root: str | None = Field(
        None, description="a folder whose every sub-folder is a show named after it", examples=["/srv/shows"]
    )
    shows: dict[str, str] = Field(
        default_factory=dict,
        description="show name -> its folder, beside or instead of root",
        examples=[{"Tech Talk Weekly": "/srv/ttw"}],
    )
    include: list[str] | None = Field(
        None,
        description="only files matching these globs (unset: the usual video and audio types, "
        "engine/media/discovery.py DEFAULT_INCLUDE)",
        examples=[["*.mp4"]],
    )
    exclude: list[str] | None = Field(
        None,
        description="never files matching these globs (unset: hidden and partial downloads, DEFAULT_EXCLUDE)",
        examples=[["*.part", "*.tmp"]],
    )
    stable_seconds: float = Field(
        30.0, ge=0, le=86400, description="a file must keep its size and mtime this long before it is taken"
    )
    state_file: str = Field(".ewg-scan.json", description="what the scanner remembers, in the workspace")
    scan_interval: float = Field(
        30.0, ge=0, le=86400, description="the engine scans this often (0 = only `ewg scan`)"
    )

    @property
    def configured(self) -> bool:
        return bool(self.root or self.shows)

    def folders(self) -> dict:
        """The mapping engine.media.discovery reads."""
        out = {
            "root": self.root,
            "shows": self.shows,
            "stable_seconds": self.stable_seconds,
            "state_file": self.state_file,
        }
        if self.include is not None:
            out["include"] = self.include
        if self.exclude is not None:
            out["exclude"] = self.exclude
        return out


class Console(_Section):
    """The operator console (`ewg`, `ewg demo`, `ewg --attach`): its look and keys. The theme names, the
    binding ids and clashing keys are checked when the console opens."""

    theme: str = Field(
        "",
        description='a Textual theme, e.g. "nord", "gruvbox", "ansi-dark"; "" = the default (textual-dark) '
        "or the theme last picked in the console; `--theme NAME` overrides it",
    )
    keymap: dict[str, Any] = Field(
        default_factory=dict,
        description="binding id = key(s), posting's way (`verb.retry` unquoted works too); `?` in the "
        "console lists every binding id with its key",
        examples=[{"verb.retry": "t", "main.copy": "y,ctrl+y"}],
    )

    @field_validator("keymap")
    @classmethod
    def _flat_keys(cls, v: dict[str, Any]) -> dict[str, str]:
        """`verb.retry = "t"` unquoted is a nested table in TOML: read it as the id "verb.retry"."""
        flat: dict[str, str] = {}

        def walk(prefix: str, table: dict[str, Any]) -> None:
            for name, value in table.items():
                binding_id = f"{prefix}.{name}" if prefix else name
                if isinstance(value, dict):
                    walk(binding_id, value)
                elif not isinstance(value, str) or not value.strip():
                    raise ValueError(
                        f'{binding_id}: a key is a non-empty string, e.g. "t", "ctrl+t" or "t,f5" (got {value!r})'
                    )
                elif any(not key.strip() or " " in key.strip() for key in value.split(",")):
                    raise ValueError(
                        f'{binding_id}: {value!r} is not a key list; write keys separated by commas, e.g. "t,f5"'
                    )
                else:
                    flat[binding_id] = ",".join(key.strip() for key in value.split(","))

        walk("", v)
        return flat


class Config(_Section):
    paths: Paths = Field(default_factory=Paths)
    engine: Engine = Field(default_factory=Engine)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: Retry = Field(default_factory=Retry)
    recovery: Recovery = Field(default_factory=Recovery)
    watchdog: Watchdog = Field(default_factory=Watchdog)
    health: Health = Field(default_factory=Health)
    services: dict[str, Service] = Field(default_factory=dict)
    stages: dict[str, dict[str, StageConfig]] = Field(default_factory=dict)
    demo: Demo = Field(default_factory=Demo)
    sources: Sources = Field(default_factory=Sources)
    alerts: Alerts = Field(default_factory=Alerts)
    retention: Retention = Field(default_factory=Retention)
    console: Console = Field(default_factory=Console)

    @model_validator(mode="after")
    def _known_stages(self) -> Config:
        for kind, table in self.stages.items():
            if kind not in pipeline.KINDS:
                raise ValueError(
                    f"[stages.{kind}]: unknown item kind; use [stages.episode.NAME] or [stages.clip.NAME]"
                )
            for name, stage in table.items():
                if name not in pipeline.stages_of(kind):
                    raise ValueError(
                        f"[stages.{kind}.{name}]: unknown stage; {kind} stages are "
                        f"{', '.join(pipeline.stages_of(kind))}"
                    )
                for svc in stage.services:
                    if svc not in self.services:
                        raise ValueError(
                            f"[stages.{kind}.{name}] services: {svc!r} is not declared; "
                            f"add a [services.{svc}] table with its url"
                        )
        for fault in self.demo.faults:
            if fault.stage not in pipeline.stages_of(fault.kind):
                raise ValueError(f"[[demo.faults]] stage {fault.stage!r} is not a {fault.kind} stage")
        return self

    # -- lookups used by the runtime ---------------------------------------------------
    def stage(self, kind: str, stage: str) -> StageConfig:
        return self.stages.get(kind, {}).get(stage) or StageConfig()

    def timeout_for(self, kind: str, stage: str) -> float:
        own = self.stage(kind, stage)
        if own.timeout is not None:
            return own.timeout
        if own.kind == "builtin" and (kind, stage) in FILE_OPERATION_STAGES:
            return self.timeouts.file_operations
        return self.timeouts.episode_processing if kind == pipeline.EPISODE else self.timeouts.clip_generation

    def stall_after_for(self, kind: str, stage: str) -> float:
        own = self.stage(kind, stage).stall_after
        return own if own is not None else self.watchdog.stall_after

    def policy_for(self, kind: str, stage: str, verdict: str) -> str:
        own = getattr(self.stage(kind, stage), f"{verdict}_policy")
        return own if own is not None else getattr(self.watchdog, f"{verdict}_policy")

    def error_rules_for(self, kind: str, stage: str) -> tuple[errors.ErrorRule, ...]:
        return tuple(errors.ErrorRule(r.pattern, r.error_class) for r in self.stage(kind, stage).error_rules)


def _where(loc: tuple) -> str:
    parts = [
        str(p)
        for p in loc
        if not (isinstance(p, str) and p in ("function-after", "function-before"))
        and not str(p).startswith("function-")
    ]
    if not parts:
        return "ewg.toml"
    if len(parts) == 1:
        return f"[{parts[0]}]"
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def _keys_beside(loc: tuple) -> list[str]:
    """The keys the table holding loc[-1] knows (its model's fields), for a did-you-mean."""
    model: type[BaseModel] | None = Config
    parts = [p for p in loc[:-1] if not str(p).startswith("function-")]
    while parts and model is not None:
        fields = model.model_fields
        part = str(parts.pop(0))
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return []
        if part == "stages":  # [stages.KIND.NAME]: two levels of names
            parts, model = parts[2:], StageConfig
            continue
        model, keyed = _section_model(field.annotation)
        if keyed and parts:
            parts.pop(0)  # the NAME of [services.NAME], the index of [[demo.faults]]
    if model is None or parts:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _explain(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: the configuration is not valid."]
    for err in exc.errors():
        where = _where(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _keys_beside(err["loc"]), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"  {where}: unknown key.{hint} Remove it or check its spelling against every key with its "
                "default: `ewg init --print-config`."
            )
            continue
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {msg}{shown}.")
    lines.append("Fix the file and start again; nothing was changed.")
    return "\n".join(lines)


def parse(text: str, path: Path = Path("ewg.toml")) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}. Fix the syntax at that line and start again."
        ) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(
            f"{path}: arrays or inline tables are nested too deeply to read (hundreds of levels). "
            "No ewg setting nests more than two levels: remove the nesting and start again; nothing was changed."
        ) from None
    _check_number_types(data, Config, path)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None
    _check_placeholders(config, path)
    _check_number_relations(config, path)
    _check_commands(config, path)
    return config


def _templates(config: Config):
    """Every argv template a stage expands: `command`, and a built-in stage's `options.command`."""
    for kind, table in config.stages.items():
        for name, stage in table.items():
            if stage.kind == "command" and stage.command:
                yield kind, name, "command", stage.command
            option = stage.options.get("command")
            if isinstance(option, list):
                yield kind, name, "options.command", option


def _check_placeholders(config: Config, path: Path) -> None:
    """Placeholders are checked here, not when every item fails later (engine.placeholders)."""
    found = [
        f"  [stages.{kind}.{name}] {key}: {problem}."
        for kind, name, key, template in _templates(config)
        for problem in placeholders.problems(kind, name, template)
    ]
    if found:
        raise ConfigError(
            "\n".join(
                [
                    f"{path}: a command placeholder is not valid.",
                    *found,
                    "Fix the file and start again; nothing was changed.",
                ]
            )
        )


def command_warnings(config: Config) -> list[str]:
    """Start-up warnings: placeholders a shell would parse as code (engine.placeholders.shell_warnings)."""
    return [
        warning
        for kind, name, _key, template in _templates(config)
        for warning in placeholders.shell_warnings(kind, name, template)
    ]


# -- numbers that make no sense ----------------------------------------------------------------------
def _numeric(annotation: Any) -> bool:
    """Whether a field's type takes a number and not a boolean (`float`, `int`, `float | None`, ...)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(a in (int, float) for a in args)
    return False


def _section_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model of a nested section, whether it sits under one dict level per key: [services.NAME])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
        return args[-1], True
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], True
    return None, False


def _check_number_types(data: Any, model: type[BaseModel], path: Path, where: str = "") -> None:
    """Before pydantic: a boolean where a number is meant, and NaN or an infinity anywhere.

    pydantic takes TOML `true` for a number (workers = true ran one worker), an infinite
    stall_after or backup_interval (no upper bound) as "never", and says of NaN only that it is not
    "greater than 0". Each is refused here with the key and the rule. Stage `options` are the stage's
    own business and are not looked at."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    by_alias = {f.alias: name for name, f in fields.items() if f.alias}
    for key, value in data.items():
        name = by_alias.get(key, key)
        field = fields.get(name)
        if field is None or name == "options":
            continue  # an unknown key is pydantic's to report (extra="forbid")
        here = f"{where}.{key}" if where else key
        shown = f"[{where}] {key}" if where else f"[{key}]"
        if isinstance(value, bool) and _numeric(field.annotation):
            raise ConfigError(
                f"{path}: {shown}: {str(value).lower()} is a boolean where a number is meant. "
                "Write the number itself (e.g. 2 or 1.5); nothing was changed."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{path}: {shown}: {value} is not a finite number. Every ewg number must be finite: "
                "write the largest value you mean (0 turns an interval off where the defaults say so); "
                "nothing was changed."
            )
        sub, keyed = _section_model(field.annotation)
        if sub is None:
            continue
        if not keyed:
            _check_number_types(value, sub, path, here)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_number_types(v, sub, path, f"{here}.{k}")
        elif isinstance(value, list):
            for v in value:
                _check_number_types(v, sub, path, here)
    if model is Config and isinstance(data.get("stages"), dict):
        for kind, table in data["stages"].items():
            if isinstance(table, dict):
                for name, stage in table.items():
                    _check_number_types(stage, StageConfig, path, f"stages.{kind}.{name}")


def _check_number_relations(config: Config, path: Path) -> None:
    """Settings that each pass their own bounds but contradict one another.

    lease_duration not above heartbeat_interval: a lease expires between two heartbeats, and two
    engines sharing a database rescued each other's live work 53 times in one run. stall_after not
    above dead_after: a worker whose heartbeat is merely late is judged stalled before it could be
    judged dead, so live work is cancelled as frozen."""
    eng = config.engine
    if eng.lease_duration <= eng.heartbeat_interval:
        raise ConfigError(
            f"{path}: [engine] lease_duration ({eng.lease_duration:g}) must be above heartbeat_interval "
            f"({eng.heartbeat_interval:g}), or a lease runs out between two heartbeats and other engines "
            "take live work over. Use at least 3 x heartbeat_interval (the default is 30 s for a 1 s "
            "heartbeat); nothing was changed."
        )
    stalls = [("[watchdog] stall_after", config.watchdog.stall_after)] + [
        (f"[stages.{kind}.{name}] stall_after", stage.stall_after)
        for kind, table in config.stages.items()
        for name, stage in table.items()
        if stage.stall_after is not None
    ]
    for key, value in stalls:
        if value <= eng.dead_after:
            raise ConfigError(
                f"{path}: {key} ({value:g}) must be above [engine] dead_after ({eng.dead_after:g}): "
                "progress frozen for less time than a dead worker takes to be noticed would cancel live "
                "work as STALLED. Raise it (the default is 300 s) or lower dead_after; nothing was changed."
            )


def _check_commands(config: Config, path: Path) -> None:
    for kind, table in config.stages.items():
        for name, stage in table.items():
            if stage.kind == "command" and stage.command:
                program = stage.command[0]
                if "{" in program:
                    continue
                if shutil.which(program) is None and not Path(program).is_file():
                    raise ConfigError(
                        f"{path}: [stages.{kind}.{name}] command: the program {program!r} was not found on PATH. "
                        "Install it or give its full path."
                    )


def load(path: Path) -> Config:
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None  # missing: said below
    if mode is not None and not stat.S_ISREG(mode):  # reading a FIFO would wait for ever
        raise ConfigError(
            f"{path} is not a regular file ({'a directory' if stat.S_ISDIR(mode) else 'a FIFO, socket or device'}); "
            "ewg reads its configuration from a plain ewg.toml. Move it away and put the file back "
            "(`ewg init --print-config` prints the defaults); nothing was changed."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist. Create a workspace with `ewg init {path.parent}` "
            "or point --workspace at one."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}.") from None
    return parse(text, path)
