"""The reference ewg.toml: every key engine/config.py knows, with its default and what it does.

`ewg init --print-config` prints it and `ewg init` writes it, so neither can drift from the
configuration model: each section's comment is its class's docstring, each key's is its field's
`description`, defaults come from the fields and the built-in stages' `options` from
engine/stage_options.py. A key with no default (or a table a workspace adds itself, which TOML allows
once) is shown commented out, as `# key = value`, with an example where there is no default; removing
the `# ` sets it.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import config, pipeline, stage_options

WIDTH = 110
COMMENT_COLUMN = 26

# Tables a workspace commonly writes itself (`ewg demo`, a [sources] setup, the test suites): TOML allows
# a table once, so their defaults are shown commented out and appending the table stays valid.
COMMENTED_SECTIONS = {"demo", "sources"}
EXAMPLE_SERVICE = "llm"  # the [services.NAME] of the example, which the example stage's `services` names
EXAMPLE_STAGE = (pipeline.EPISODE, "transcribed")

HEADER = """\
ewg workspace configuration: every key with its default and what it does (`ewg init --print-config`).
Times are seconds. Validation happens at start: a mistake stops ewg with a message that names the key;
nothing is changed until the file is valid. A line `# key = value` shows a default or an example that is
not set: remove the `# ` to set it."""


def reference_toml() -> str:
    out: list[str] = _comment(HEADER)
    for name, field in config.Config.model_fields.items():
        out.append("")
        if name == "services":
            out += _services(field)
        elif name == "stages":
            out += _stages()
        else:
            model, keyed = config._section_model(field.annotation)
            if model is None or keyed:
                raise TypeError(f"config.Config.{name}: no way to print this kind of section (add it here)")
            out += _section(name, model, commented=name in COMMENTED_SECTIONS)
    return "\n".join(out) + "\n"


# -- sections ---------------------------------------------------------------------------------------
def _section(table: str, model: type[BaseModel], commented: bool = False) -> list[str]:
    out = _comment(_doc(model))
    out.append(_line(f"[{table}]", commented))
    later: list[str] = []
    for name, field in model.model_fields.items():
        sub, keyed = config._section_model(field.annotation)
        if sub is not None and keyed and typing.get_origin(field.annotation) is list:
            later += ["", *_comment(f"{_help(field)} (repeatable):"), f"# [[{table}.{_key(name, field)}]]"]
            later += [line for f_name, f in sub.model_fields.items() for line in _key_lines(f_name, f, True)]
            continue
        if sub is None and field.get_default(call_default_factory=True) == {}:
            # a table of names (keymap, shows): its own [table.key], empty, where the names go
            later += _comment(_help(field))
            later.append(_line(f"[{table}.{_key(name, field)}]", commented))
            for key, value in (field.examples[0] if field.examples else {}).items():
                later += _assignment(_toml_key(key), _toml(value), "for example", commented=True)
            continue
        out += _key_lines(name, field, commented)
    return out + later


def _services(field: FieldInfo) -> list[str]:
    model, _ = config._section_model(field.annotation)
    out = _comment(f"{_doc(model)} None by default; for example:")
    out.append(f"# [services.{EXAMPLE_SERVICE}]")
    for name, f in model.model_fields.items():
        out += _key_lines(name, f, commented=True)
    return out


def _stages() -> list[str]:
    kinds = "; ".join(f"{kind} stages: {', '.join(pipeline.stages_of(kind))}" for kind in pipeline.KINDS)
    kind, stage = EXAMPLE_STAGE
    out = _comment(
        f"{_doc(config.StageConfig)} One table per stage, [stages.KIND.NAME]; {kinds}. Every key a stage "
        f"table takes, for example as a command stage:"
    )
    out.append(f"# [stages.{kind}.{stage}]")
    for name, f in config.StageConfig.model_fields.items():
        if name == "options":  # the built-in stages' options follow, one table each
            continue
        # an example that validates as a whole: a command stage, needing the example service
        value = "command" if name == "kind" else (f.examples[0] if f.examples else None)
        out += _key_lines(name, f, commented=True, value=value)
    out += ["", *_comment(f"options: {_help(config.StageConfig.model_fields['options'])}.")]
    for (kind, stage), options in stage_options.BUILTIN_OPTIONS.items():
        out.append(f"# [stages.{kind}.{stage}.options]")
        for opt in options:
            value = opt.default if opt.default is not None else opt.example
            help_text = opt.help + (f" (default: {opt.shown})" if opt.shown else "")
            out += _assignment(opt.key, _toml(value), help_text, commented=True)
    return out


# -- keys -------------------------------------------------------------------------------------------
def _key_lines(name: str, field: FieldInfo, commented: bool, value: Any = None) -> list[str]:
    """`key = default  # what it does`, commented out when it has no default to write."""
    default = field.get_default(call_default_factory=True)
    required = default is PydanticUndefined
    help_text = _help(field)
    if value is None:
        value = default
        if required or default is None or (isinstance(default, dict) and not default):
            value = field.examples[0] if field.examples else default
            commented = True
            if required and "required" not in help_text:
                help_text += " (required)"
            elif default is None and "unset" not in help_text:
                help_text += " (unset by default)"
    if value is None or value is PydanticUndefined:  # no default and no example: nothing to show
        return []  # (tests/core/test_config_reference.py fails on the key missing)
    return _assignment(_key(name, field), _toml(value), help_text, commented)


def _assignment(key: str, value: str, help_text: str, commented: bool) -> list[str]:
    text = _line(f"{key} = {value}", commented)
    if not help_text:
        return [text]
    trailing = f"{text.ljust(COMMENT_COLUMN - 2)}  # {help_text}"
    if len(trailing) <= WIDTH:
        return [trailing]
    return [*_comment(help_text), text]


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _help(field: FieldInfo) -> str:
    """A key's comment: its Field(description=...); the tests fail on a key without one, while ewg still
    starts."""
    return field.description or ""


def _doc(model: type[BaseModel]) -> str:
    """A section's comment: its class docstring (pydantic's own is not one)."""
    doc = model.__doc__ or ""
    return "" if doc == BaseModel.__doc__ else " ".join(doc.split())


def _line(text: str, commented: bool) -> str:
    return f"# {text}" if commented else text


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, WIDTH - 2, break_on_hyphens=False)]


# -- TOML values ------------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML form ewg accepts")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        keys = (_toml_key(k) for k in value)
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in zip(keys, value.values())) + " }"
    if isinstance(value, BaseModel):
        return _toml(value.model_dump(by_alias=True))
    raise TypeError(f"{value!r}: no TOML form")
