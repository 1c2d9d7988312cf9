"""`ewg init --print-config` (engine/config_reference.py): every key engine/config.py knows, with its
default and a comment, derived from the model so it cannot drift; and the built-in stages' `options`
table (engine/stage_options.py) checked against the option() calls of engine/media."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine import config, pipeline, stage_options
from engine.config_reference import reference_toml
from engine.workspace import DEFAULT_TOML
from ewg_tui.cli import main

ROOT = Path(__file__).resolve().parents[2]
# `# key = value` and `# [table]` lines: what the reference shows commented out (a default or an example)
COMMENTED = re.compile(r'^# (\[\[?[\w."-]+\]\]?$|(?:[A-Za-z0-9_-]+|"[^"]*") = )')


def printed(capsys) -> str:
    assert main(["init", "--print-config"]) == 0
    return capsys.readouterr().out


def uncommented(text: str) -> str:
    return "\n".join(line[2:] if COMMENTED.match(line) else line for line in text.splitlines())


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key path of a section model: `engine.workers`, `services.*.url`, `demo.faults.*.stage`."""
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.add(key)
        sub, keyed = config._section_model(field.annotation)
        if name == "stages" and model is config.Config:
            keys |= model_keys(config.StageConfig, "stages.*.*.")
        elif sub is not None:
            keys |= model_keys(sub, f"{key}.*." if keyed else f"{key}.")
    return keys


def doc_keys(doc: dict, model: type[BaseModel] = config.Config, prefix: str = "") -> set[str]:
    """The same key paths, read off a parsed TOML document shaped like the model."""
    keys = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        keys.add(path)
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)
        assert field is not None, f"{path}: printed but not a key of config.{model.__name__}"
        sub, keyed = config._section_model(field.annotation)
        if key == "stages" and model is config.Config:
            for kind, table in value.items():
                for stage, stage_doc in table.items():
                    assert stage in pipeline.stages_of(kind)
                    keys |= doc_keys(stage_doc, config.StageConfig, "stages.*.*.")
        elif sub is not None and keyed:
            for entry in value.values() if isinstance(value, dict) else value:
                keys |= doc_keys(entry, sub, f"{path}.*.")
        elif sub is not None:
            keys |= doc_keys(value, sub, f"{path}.")
    return keys


def test_the_printed_config_is_what_init_writes_and_loads_as_the_defaults(capsys):
    text = printed(capsys)
    assert text == DEFAULT_TOML == reference_toml()
    assert config.parse(text) == config.Config()  # every active line is the default


def test_the_printed_config_covers_every_key_config_py_knows(capsys):
    text = printed(capsys)
    doc = tomllib.loads(uncommented(text))  # the commented defaults and examples are valid TOML too
    assert doc_keys(doc) == model_keys(config.Config)
    # ... and, set, they make a configuration that validates: the examples agree with one another
    assert config.Config.model_validate(doc).stages["episode"]["transcribed"].kind == "command"
    for (kind, stage), options in stage_options.BUILTIN_OPTIONS.items():
        assert set(doc["stages"][kind][stage]["options"]) == {o.key for o in options}


def test_every_printed_key_has_a_comment(capsys):
    lines = printed(capsys).splitlines()
    for n, line in enumerate(lines):
        bare = line.removeprefix("# ")
        if re.match(r"^(?:[A-Za-z0-9_-]+|\"[^\"]*\") = ", bare) and (line == bare or COMMENTED.match(line)):
            trailing = re.search(r"\s#\s\S", bare.split(" = ", 1)[1])
            above = n > 0 and lines[n - 1].startswith("# ") and not COMMENTED.match(lines[n - 1])
            assert trailing or above, f"no comment for {line!r}"


def test_every_field_has_a_description_and_every_section_a_docstring():
    def walk(model: type[BaseModel]) -> None:
        if model is not config.Config:  # the sections' docstrings are their comments
            assert model.__doc__ and model.__doc__ != BaseModel.__doc__, (
                f"config.{model.__name__}: no docstring"
            )
        for name, field in model.model_fields.items():
            sub, _ = config._section_model(field.annotation)
            if model is not config.Config:
                assert field.description, f"config.{model.__name__}.{name} has no description"
            if sub is not None:
                walk(sub)

    walk(config.Config)
    walk(config.StageConfig)


def test_an_unknown_key_suggests_the_closest_and_points_at_print_config():
    for text, want in (
        ("[retry]\nmax_attemps = 3\n", "Did you mean 'max_attempts'?"),
        ("[stages.episode.transcribed]\ntimout = 3.0\n", "Did you mean 'timeout'?"),
        ('[services.llm]\nurl = "http://127.0.0.1:1"\nintervall = 3.0\n', "Did you mean 'interval'?"),
    ):
        with pytest.raises(config.ConfigError) as info:
            config.parse(text)
        assert want in str(info.value) and "`ewg init --print-config`" in str(info.value)


# -- the built-in stages' options: the table against the code --------------------------------------
def _option_calls() -> dict[str, dict[str, tuple]]:
    """module -> key -> (default, type) of every option(ctx, KEY, DEFAULT, TYPE) and ctx.options.get(KEY,
    DEFAULT) in engine/media; a default that is not a literal is None."""
    found: dict[str, dict[str, tuple]] = {}
    for path in sorted((ROOT / "engine" / "media").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name == "_size":  # clips.py: option(ctx, key, None, str) for the variant size named here
                name, node.args = "option", [*node.args, ast.Constant(None), ast.Name("str")]
            is_get = isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            is_get = is_get and ast.unparse(node.func.value) == "ctx.options"
            args = node.args[1:] if name == "option" else node.args if is_get else None
            if not args or not isinstance(args[0], ast.Constant):
                continue
            try:
                default = ast.literal_eval(args[1]) if len(args) > 1 else None
            except ValueError:
                default = None
            kind = ast.unparse(args[2]) if len(args) > 2 else type(default).__name__
            found.setdefault(path.stem, {})[args[0].value] = (default, kind)
    return found


def test_the_options_table_matches_every_option_the_media_stages_read():
    from engine.media import STAGES

    calls = _option_calls()
    modules: dict[tuple[str, str], str] = {
        key: target.split(":")[0].rsplit(".", 1)[1] for key, target in STAGES.items()
    }
    documented: dict[str, dict] = {}
    for (kind, stage), options in stage_options.BUILTIN_OPTIONS.items():
        module = modules[(kind, stage)]
        for opt in options:
            assert opt.key in calls.get(module, {}), f"{kind}.{stage} options.{opt.key}: no code reads it"
            documented.setdefault(module, {})[opt.key] = opt
            default, kind_name = calls[module][opt.key]
            if default is not None or opt.default is not None:
                assert opt.default == default, f"options.{opt.key}: table {opt.default!r}, code {default!r}"
            assert opt.type.__name__ == kind_name, f"options.{opt.key}: table {opt.type}, code {kind_name}"
            assert opt.default is not None or opt.example is not None, opt.key
    for module, keys in calls.items():
        for key in keys:
            assert key in documented.get(module, {}), (
                f"engine/media/{module}.py reads options.{key}: not in the table"
            )


def test_the_config_reference_has_no_stage_table_of_its_own(capsys):
    """`ewg demo` and the tests append [stages.K.S], [sources] and [demo] tables to what init writes:
    TOML allows a table once, so the reference keeps those commented out."""
    doc = tomllib.loads(printed(capsys))
    assert "stages" not in doc and "sources" not in doc and "demo" not in doc and "services" not in doc
