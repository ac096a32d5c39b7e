"""Named experiment configs: `get_config(name_or_path)`, `list_configs()` and the `--config` flag.

A bare name such as `row_lstm_mnist` resolves to `experiments/configs/row_lstm_mnist.py`; a
path to any `.py` file that defines `get_config()` works too. Every config comes back locked,
so assigning a misspelt field raises instead of adding a new one.
"""

import difflib
import importlib.util
import pathlib
import re
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from pixel_rnn_jax.errors import ConfigError

CONFIG_DIR = pathlib.Path(__file__).resolve().parent
# Files in this folder that are not experiments.
_NOT_EXPERIMENTS = frozenset({"__init__", "base"})


def list_configs() -> list[str]:
    """Returns the sorted names of every named experiment config."""
    return sorted(
        path.stem for path in CONFIG_DIR.glob("*.py") if path.stem not in _NOT_EXPERIMENTS
    )


def resolve_config_path(name_or_path: str) -> pathlib.Path:
    """Maps a config name or a path to the config file it means.

    Args:
      name_or_path: a name from `list_configs()` (`row_lstm_mnist`), or a path to a `.py`
        file that defines `get_config()`.

    Returns:
      The absolute path of the config file.

    Raises:
      ConfigError: the name is unknown or the path does not exist; the message lists the names.
    """
    text = str(name_or_path)
    if text.endswith(".py") or "/" in text:
        path = pathlib.Path(text).expanduser()
        if path.is_file():
            return path.resolve()
        raise ConfigError(
            f"Config file {text!r} does not exist. Pass a path to a .py file defining "
            f"get_config(), or one of these names: {', '.join(list_configs())}."
        )
    if text in list_configs():
        return CONFIG_DIR / f"{text}.py"
    raise ConfigError(
        f"Unknown config {text!r}. Known configs: {', '.join(list_configs())}. "
        "A path to a .py file defining get_config() also works."
    )


def config_name(name_or_path: str) -> str:
    """Returns the short name of a config (the file stem), e.g. for a default workdir."""
    return resolve_config_path(name_or_path).stem


def get_config(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads a config by name or path and returns it locked.

    Args:
      name_or_path: see `resolve_config_path`.

    Returns:
      The experiment's locked ConfigDict.

    Raises:
      ConfigError: unknown name, missing file, or a file without `get_config()`.
    """
    path = resolve_config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"_pixel_rnn_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path} does not define get_config().")
    config = module.get_config()
    config.lock()
    return config


def check_override_keys(config: ml_collections.ConfigDict, keys: list[str], prefix: str = "config"):
    """Raises ConfigError for an override key that names no field, listing the fields there.

    Args:
      config: the loaded config.
      keys: dotted field paths, e.g. ['train.batch_size'].
      prefix: the flag name, for the message.
    """
    for key in keys:
        node, walked = config, prefix
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(part, fields, n=1)
                hint = f" Did you mean {walked}.{close[0]}?" if close else ""
                raise ConfigError(
                    f"--{prefix}.{key}: {walked} has no field {part!r}.{hint} Fields of "
                    f"{walked}: {', '.join(fields) or '(none; it is a value)'}."
                )
            node, walked = node[part], f"{walked}.{part}"


class _NameOrPathConfigParser(flags.ArgumentParser):
    """Wraps ml_collections' config-file parser: bare names, and early checks of overrides."""

    def __init__(self, file_parser: flags.ArgumentParser, name: str):
        self._file_parser = file_parser
        self._name = name

    def parse(self, argument):
        # Resolve first so that an unknown name fails here, with the list of names, rather
        # than as ml_collections' deferred "failed loading config file" IOError.
        name, sep, rest = str(argument).partition(":")
        config = self._file_parser.parse(str(resolve_config_path(name)) + sep + rest)
        # ml_collections applies overrides after this and reports a misspelt one as a bare
        # AttributeError traceback; check them here for a message that lists the fields.
        pattern = re.compile(rf"^--?(?:no)?{re.escape(self._name)}\.([^=]+)")
        keys = [m.group(1) for m in map(pattern.match, sys.argv[1:]) if m]
        check_override_keys(config, keys, self._name)
        return config

    def flag_type(self):
        return self._file_parser.flag_type()


def define_config_flag(
    name: str = "config",
    default: str | None = None,
    help_string: str | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> flags.FlagHolder:
    """Defines `--config=NAME_OR_PATH` with `--config.a.b=value` overrides (locked).

    Args:
      name: flag name.
      default: default config name or path, or None.
      help_string: flag help; a default listing the known names is used if None.
      flag_values: the absl FlagValues to register in (tests use a fresh one).

    Returns:
      The absl flag holder; `.value` is the loaded, overridden, locked ConfigDict.
    """
    help_string = help_string or (
        f"Config name ({', '.join(list_configs())}) or path to a config .py file. "
        f"Override fields with --{name}.train.batch_size=8 and the like."
    )
    holder = config_flags.DEFINE_config_file(
        name, default, help_string, flag_values=flag_values, lock_config=True
    )
    # ml_collections has no public hook for name resolution; its flag object calls
    # `self.parser.parse(argument)`, so wrap that parser.
    flag = flag_values[name]
    flag.parser = _NameOrPathConfigParser(flag.parser, name)
    return holder


def flag_run_dirs(
    workdir: str | None, name: str = "config", flag_values: flags.FlagValues = flags.FLAGS
) -> tuple[str, str]:
    """The config name given to `--{name}` and the run's workdir.

    Args:
      workdir: the `--workdir` value; None means `./workdirs/<config name>`.
      name: the config flag's name.
      flag_values: the parsed absl FlagValues.

    Returns:
      (config name, workdir).
    """
    config = config_name(config_flags.get_config_filename(flag_values[name]))
    return config, workdir or str(pathlib.Path("workdirs") / config)
