"""The plugin's config keys: their registry, defaults, validation and the README key table.

Every key the plugin reads from an NH config is declared here as a :class:`ConfigKey`. The NH adapter makes NH's
``Config`` accept exactly these keys (unknown keys are still rejected) and validates their values when the config
is read, before any run directory exists. Plugin keys start with ``xb_``; so do the names of the plugin's models
and losses, which lets a typo in either be caught early with a message that lists what is allowed.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from nh_crossbasin.registry import LOSSES, MODELS, Registry

PREFIX = "xb_"


@dataclass(frozen=True)
class ConfigKey:
    """Declaration of one plugin config key.

    Parameters
    ----------
    name : str
        The key as written in the YAML config (must start with ``xb_``).
    default : Any
        Value used when the key is absent (or null, for keys that are not ``nullable``).
    help : str
        One-line meaning, shown in error messages and the README table.
    types : tuple of type
        Accepted Python types of the value after YAML parsing (``int`` is accepted where ``float`` is).
    choices : sequence of str or Registry, optional
        Allowed string values (matched case-insensitively), or a registry whose names are allowed.
    check : callable, optional
        ``check(value) -> Optional[str]``: returns an explanation when the value is not allowed.
    nullable : bool, optional
        Whether ``null`` is a meaningful value (kept as None rather than replaced by the default).
    allowed : str, optional
        Human-readable description of allowed values for messages and docs (derived when omitted).
    """

    name: str
    default: Any
    help: str
    types: tuple = (str,)
    choices: Any = None
    check: Optional[Callable[[Any], Optional[str]]] = None
    nullable: bool = False
    allowed: Optional[str] = field(default=None)

    def allowed_values(self) -> str:
        """Describe the allowed values in words."""
        if self.allowed:
            return self.allowed
        if self.choices is not None:
            names = self.choices.names() if isinstance(self.choices, Registry) else list(self.choices)
            return "one of " + ", ".join(repr(c) for c in names)
        words = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
                 dict: "a mapping", Path: "a file path"}
        text = " or ".join(words.get(t, t.__name__) for t in self.types)
        return text + (" or null" if self.nullable else "")

    def validate(self, value: Any) -> Any:
        """Return the value to use for ``value`` (the default for None), or raise ValueError naming the key."""
        if value is None:
            return None if self.nullable else self.default
        types = self.types + ((int,) if float in self.types else ())
        if isinstance(value, bool) and bool not in self.types:
            self._fail(value)
        if not isinstance(value, types):
            self._fail(value)
        if self.choices is not None:
            names = self.choices.names() if isinstance(self.choices, Registry) else [c.lower() for c in self.choices]
            if str(value).lower() not in names:
                self._fail(value, suggestions=difflib.get_close_matches(str(value).lower(), names, n=1))
            value = str(value).lower()
        if self.check is not None:
            problem = self.check(value)
            if problem:
                self._fail(value, reason=problem)
        return value

    def _fail(self, value: Any, reason: str = "", suggestions: Sequence[str] = ()) -> None:
        hint = f" Did you mean {suggestions[0]!r}?" if suggestions else ""
        why = f" ({reason})" if reason else ""
        raise ValueError(f"Config key '{self.name}': {value!r} is not allowed{why}. Allowed: "
                         f"{self.allowed_values()}.{hint} [{self.help}]")


CONFIG_KEYS: Dict[str, ConfigKey] = {}


def register_config_key(key: ConfigKey, overwrite: bool = False) -> None:
    """Declare a plugin config key so that NH's ``Config`` accepts and validates it.

    Raises
    ------
    ValueError
        If the name does not start with ``xb_`` or is already declared and ``overwrite`` is False.
    """
    if not key.name.startswith(PREFIX):
        raise ValueError(f"Plugin config keys must start with '{PREFIX}', got '{key.name}'.")
    if key.name in CONFIG_KEYS and CONFIG_KEYS[key.name] != key and not overwrite:
        raise ValueError(f"Config key '{key.name}' is already declared.")
    CONFIG_KEYS[key.name] = key


def at_least(lower: float, inclusive: bool = True) -> Callable[[Any], Optional[str]]:
    """A ``check`` that requires ``value >= lower`` (or ``> lower``)."""
    def check(value):
        ok = value >= lower if inclusive else value > lower
        return None if ok else f"must be {'>=' if inclusive else '>'} {lower}"
    return check


def between(lower: float, upper: float) -> Callable[[Any], Optional[str]]:
    """A ``check`` that requires ``lower <= value <= upper``."""
    def check(value):
        return None if lower <= value <= upper else f"must be between {lower} and {upper}"
    return check


def plugin_keys_in(cfg_dict: Mapping[str, Any]) -> list[str]:
    """Keys of ``cfg_dict`` that are declared plugin keys."""
    return [k for k in cfg_dict if k in CONFIG_KEYS]


def uses_plugin(cfg_dict: Mapping[str, Any]) -> bool:
    """Whether a config (as a dict) asks for anything of the plugin: a plugin key, model or loss."""
    return bool(plugin_keys_in(cfg_dict)) or cfg_dict.get("model") in MODELS or cfg_dict.get("loss") in LOSSES


def validate(cfg_dict: Mapping[str, Any]) -> None:
    """Validate the plugin keys and plugin-looking model/loss names of a config dict.

    Raises
    ------
    ValueError
        Naming the key, the offending value and the allowed values.
    """
    for key in plugin_keys_in(cfg_dict):
        CONFIG_KEYS[key].validate(cfg_dict[key])
    for registry in (MODELS, LOSSES):
        value = cfg_dict.get(registry.config_key)
        if isinstance(value, str) and value.lower().startswith(PREFIX) and value not in registry:
            close = difflib.get_close_matches(value.lower(), registry.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Config key '{registry.config_key}': '{value}' is not an nh-crossbasin {registry.kind}."
                             f" Plugin {registry.plural}: {', '.join(registry.names())} (NH's own {registry.plural} "
                             f"are allowed too).{hint}")


def unknown_key_message(unknown: Sequence[str]) -> str:
    """Error text for keys neither NH nor the plugin knows, listing the plugin's keys."""
    lines = [f"{list(unknown)} are not recognized config keys (neither NeuralHydrology's nor nh-crossbasin's)."]
    for key in unknown:
        close = difflib.get_close_matches(key, list(CONFIG_KEYS), n=1)
        if close:
            lines.append(f"  '{key}': did you mean '{close[0]}'?")
    lines.append("nh-crossbasin keys: " + ", ".join(sorted(CONFIG_KEYS)))
    return "\n".join(lines)


def options(cfg: Any) -> Dict[str, Any]:
    """All plugin options of a config, with defaults filled in and values validated.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config or dict
        The run configuration.

    Returns
    -------
    dict
        ``{key: value}`` for every declared plugin key.
    """
    cfg_dict = cfg.as_dict() if hasattr(cfg, "as_dict") else cfg
    return {name: key.validate(cfg_dict.get(name)) for name, key in CONFIG_KEYS.items()}


def markdown_table() -> str:
    """The README table of plugin config keys (key, default, allowed values, meaning)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name in sorted(CONFIG_KEYS):
        key = CONFIG_KEYS[name]
        default = "null" if key.default is None else repr(key.default)
        rows.append(f"| `{name}` | `{default}` | {key.allowed_values()} | {key.help} |")
    return "\n".join(rows)
