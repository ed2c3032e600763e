"""Types of the values given with `snakemake --config`, guided by the config schema.

Snakemake parses `--config key=value` itself: a top-level value becomes an int, a
float or a bool where it reads as one, and a nested one (`'section={key: 3}'`) is
read with YAML's BaseLoader, so every nested scalar stays a string. Config files
are loaded with their YAML types and are never touched here.

A command-line string is kept as it is wherever the schema accepts it there (`off`,
`no`, a class named "yes", a root named "2024"); only where the schema rejects the
string is it read as a YAML scalar (`3`, `0.5`, `true`, `null`) or a number (`1e-3`).

Config files get no typing, only one repair: YAML 1.1 reads an unquoted `off`, `no`,
`yes`, `on` as a bool and `2024` as a number. Where the schema rejects what YAML made
of a value but accepts the text as written (`conta.mode: off`, a class named `no`, a
root named `2024`), the text as written is used.
No Snakemake import: tests call these functions directly.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import yaml

_MISSING = object()
# libyaml's loaders where PyYAML has them: the pure-Python ones cost ~0.1 s per config file,
# paid at every planning.
_SAFE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RAW = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


def load_yaml(text: str, raw: bool = False):
    """YAML as yaml.safe_load reads it, or with `raw` every scalar as its text (BaseLoader)."""
    return yaml.load(text, Loader=_RAW if raw else _SAFE)


def _resolve(node: dict | None, root: dict) -> dict | None:
    """Follow a local `$ref` (`#/definitions/...`) to the schema it names."""
    while isinstance(node, dict) and "$ref" in node and "properties" not in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _child(node: dict | None, key: str, root: dict) -> dict | None:
    """The schema of `key` inside an object schema, None when the schema does not say."""
    node = _resolve(node, root)
    if not isinstance(node, dict):
        return None
    properties = node.get("properties") or {}
    if key in properties:
        return properties[key]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _accepts(node: dict | None, value: Any, root: dict) -> bool:
    if node is None:
        return True  # unknown key: validation names it, typing must not guess
    standalone = {**node, "definitions": root.get("definitions", {})}
    return jsonschema.Draft202012Validator(standalone).is_valid(value)


def _scalar_candidates(text: str) -> list[Any]:
    """What a command-line string could have meant, most literal first."""
    candidates = []
    try:
        candidates.append(load_yaml(text))
    except yaml.YAMLError:
        pass
    try:
        candidates.append(float(text))  # YAML 1.1 reads 1e-3 as a string
    except ValueError:
        pass
    return candidates


def type_value(value: Any, node: dict | None, root: dict) -> Any:
    """`value` from the command line, typed where the schema `node` does not accept it as given."""
    if isinstance(value, dict):
        return {key: type_value(item, _child(node, key, root), root) for key, item in value.items()}
    if _accepts(node, value, root):
        return value
    if isinstance(value, list):
        items = _resolve(node, root)
        items = items.get("items") if isinstance(items, dict) else None
        return [type_value(item, items if isinstance(items, dict) else None, root) for item in value]
    if isinstance(value, str):
        candidates = _scalar_candidates(value)
        for candidate in candidates:
            if _accepts(node, candidate, root):
                return candidate
        # Nothing fits: keep the most literal reading so the schema error shows the user's value.
        typed = [c for c in candidates if not isinstance(c, str)]
        return typed[0] if typed else value
    if isinstance(value, (bool, int, float)) and _accepts(node, str(value), root):
        return str(value)  # Snakemake made `run=2024` an int; the schema wants the name
    return value


def _overlay(config: dict, raw: dict, typed: dict) -> None:
    """Put `typed` into `config` at each command-line path whose value is still the raw one."""
    for key, raw_value in raw.items():
        current = config.get(key, _MISSING)
        if isinstance(raw_value, dict) and isinstance(current, dict):
            _overlay(current, raw_value, typed[key])
        elif current is not _MISSING and current == raw_value:
            config[key] = copy.deepcopy(typed[key])


def _restore(config: dict, typed: dict, raw: dict, node: dict | None, root: dict) -> None:
    for key, raw_value in raw.items():
        if key not in typed or key not in config:
            continue
        child = _child(node, key, root)
        current, loaded = config[key], typed[key]
        if isinstance(raw_value, dict) and isinstance(current, dict) and isinstance(loaded, dict):
            _restore(current, loaded, raw_value, child, root)
        elif (current == loaded and type(current) is type(loaded) and child is not None
              and not _accepts(child, current, root) and _accepts(child, raw_value, root)):
            config[key] = copy.deepcopy(raw_value)


def restore_file_strings(config: dict, texts: list[str], schema: dict) -> dict:
    """Undo, in place, YAML 1.1's reading of words and numbers the schema wants as text.

    `texts` are the config files' contents in the order they were merged. A value is
    changed only where `config` still holds what that file's YAML made of it.
    """
    for text in texts:
        typed, raw = load_yaml(text), load_yaml(text, raw=True)
        if isinstance(typed, dict) and isinstance(raw, dict):
            _restore(config, typed, raw, schema, schema)
    return config


def apply_cli_types(config: dict, cli_config: dict, schema: dict) -> dict:
    """Type, in place, the values of `config` that came from `cli_config` (Snakemake's `--config`).

    A path is typed only where `config` still holds the command-line value: a module
    given its own config, or a later config file, is left as it is.
    """
    cli_config = dict(cli_config or {})
    typed = type_value(cli_config, schema, schema)
    _overlay(config, cli_config, typed)
    return config


def with_defaults(config: dict, defaults: dict) -> dict:
    """Add, in place, every key of `defaults` that `config` lacks (nested dicts key by key)."""
    for key, value in defaults.items():
        if key not in config:
            config[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(config[key], dict):
            with_defaults(config[key], value)
    return config


def set_paths(tree: Any, prefix: tuple = ()) -> set[tuple]:
    """Every key path a config tree sets: its leaves and, for a key set to a non-dict, that key."""
    if not isinstance(tree, dict):
        return {prefix} if prefix else set()
    paths = set()
    for key, value in tree.items():
        paths |= set_paths(value, (*prefix, key)) if isinstance(value, dict) and value else {(*prefix, key)}
    return paths


def apply_layer(config: dict, layer: dict, user_trees: list) -> list[str]:
    """Put, in place, each value of `layer` whose key path none of `user_trees` sets.

    `user_trees` are what the user gave (config files, `--config`): they keep precedence
    over the layer, which in turn replaces the base config's values. Returns the
    dotted paths the layer set.
    """
    user = set().union(*(set_paths(tree) for tree in user_trees))
    applied = []

    def visit(node: dict, target: dict, path: tuple) -> None:
        for key, value in node.items():
            here = (*path, key)
            if any(here[: len(p)] == p for p in user):
                continue  # the user set this key, or a whole value above it
            if isinstance(value, dict) and value:
                if not isinstance(target.get(key), dict):
                    target[key] = {}
                visit(value, target[key], here)
            else:
                target[key] = copy.deepcopy(value)
                applied.append(".".join(map(str, here)))

    visit(layer, config, ())
    return applied
