"""Command placeholders: the only names a command stage's argv may use (ARCHITECTURE.md, The boundary;
the stage that expands them is engine.stages.command, contract 6).

Each argv element is split the way `str.format` splits it, but only a plain documented name is
accepted: `{source.__class__}`, `{title[0]}`, `{title!r}` and `{attempt:>5}` are refused when
ewg.toml loads, and expansion never goes through `format_map`, so no attribute or index lookup can
run on a value. `{{`/`}}` stay literal braces.

A placeholder inside the script of `sh -c` (or `bash -c`, `python -c` ...) is the one way the
argv design can still be beaten: the shell parses the title. `shell_warnings` finds it so the CLI
and the console can say so at start-up; the safe forms are a separate argv item (`"$1"`) or the
`EWG_<NAME>` environment variable every command stage receives.
"""

from __future__ import annotations

import os
import re
import string

from . import pipeline

# The names a command may use, besides dir_<stage> for each earlier stage (README.md, Command stages).
NAMES = (
    "item_id",
    "kind",
    "stage",
    "source",
    "show",
    "title",
    "output_dir",
    "cache_dir",
    "item_dir",
    "workspace",
    "attempt",
    "clip_start",
    "clip_end",
    "input_dir",
)
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Programs whose next argument after the flag is code they parse: a placeholder there is injection.
_CODE_FLAGS = {
    "sh": "-c",
    "bash": "-c",
    "dash": "-c",
    "zsh": "-c",
    "ksh": "-c",
    "mksh": "-c",
    "ash": "-c",
    "fish": "-c",
    "csh": "-c",
    "tcsh": "-c",
    "python": "-c",
    "perl": "-e",
    "ruby": "-e",
    "node": "-e",
}


class PlaceholderError(ValueError):
    """A template element that is not literal text and plain documented names."""


def allowed(kind: str, stage: str) -> list[str]:
    """The names a template of this stage may use: the documented ones and dir_<earlier stage>."""
    order = pipeline.stages_of(kind)
    earlier = order[: order.index(stage)] if stage in order else order
    return [*NAMES, *(f"dir_{s}" for s in earlier)]


def split(part: str) -> list[tuple[str, str | None]]:
    """`part` as (literal, None) and ("", name) pieces, in order; PlaceholderError when it is not that."""
    try:
        parsed = list(string.Formatter().parse(part))
    except ValueError as exc:
        raise PlaceholderError(
            f"unbalanced braces in {part!r} ({exc}); write {{{{ and }}}} for a literal brace"
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if literal:
            pieces.append((literal, None))
        if field is None:
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field == "" or field.isdigit():
            raise PlaceholderError(f"{shown} has no name; use a named placeholder such as {{source}}")
        if not _NAME_RE.match(field):
            raise PlaceholderError(
                f"{shown}: only a plain name is allowed, no attribute (.) or index ([...]) access"
            )
        if conversion or spec:
            raise PlaceholderError(f"{shown}: conversions (!r) and format specs (:...) are not allowed")
        pieces.append(("", field))
    return pieces


def problems(kind: str, stage: str, template: list) -> list[str]:
    """What is wrong with each element of `template`, naming the placeholder; [] when all is well."""
    names = allowed(kind, stage)
    found = []
    for part in template:
        if not isinstance(part, str):
            found.append(f"{part!r} is not a string; quote it")
            continue
        try:
            pieces = split(part)
        except PlaceholderError as exc:
            found.append(str(exc))
            continue
        for _, name in pieces:
            if name is not None and name not in names:
                found.append(
                    f"{{{name}}} is not a placeholder; known: {', '.join('{' + n + '}' for n in names)}"
                )
    return found


def expand(part: str, values: dict[str, object]) -> str:
    """`part` with its placeholders replaced; KeyError names a placeholder that has no value."""
    return "".join(literal if name is None else str(values[name]) for literal, name in split(part))


def env_name(name: str) -> str:
    return f"EWG_{name.upper()}"


def _program(part: str) -> str:
    base = os.path.basename(part)
    return "python" if re.match(r"^python[0-9.]*$", base) else base


def shell_warnings(kind: str, stage: str, template: list) -> list[str]:
    """A start-up warning for each placeholder a shell (or interpreter) would parse as code."""
    warnings = []
    for i, part in enumerate(template):
        flag = _CODE_FLAGS.get(_program(str(part)))
        if flag is None:
            continue
        for j in range(i + 1, len(template) - 1):
            option = str(template[j])
            if not option.startswith("-") or option.startswith("--"):
                break
            if flag[1] not in option[1:]:
                continue
            script = str(template[j + 1])
            try:
                names = [n for _, n in split(script) if n is not None]
            except PlaceholderError:
                names = []
            if names:
                shown = ", ".join("{" + n + "}" for n in dict.fromkeys(names))
                program = _program(str(part))
                warnings.append(
                    f"[stages.{kind}.{stage}] command: {shown} is pasted into the script of "
                    f"`{program} {option}`, so a title or file name holding `;`, `$(...)`, backticks or "
                    f"quotes runs as code with your rights (command injection). Pass it as its own argv "
                    f'item and use it as a positional argument, e.g. ["sh", "-c", \'tool "$1"\', "sh", '
                    f'"{{{names[0]}}}"], or read it from the environment ("${env_name(names[0])}": every '
                    "placeholder is also given to the stage as EWG_<NAME>)."
                )
            break
    return warnings
