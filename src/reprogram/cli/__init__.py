"""The command line: a thin layer over the library (``reprogram --help``)."""

from reprogram.cli.main import app, expand_multi_value_options, main, register_subcommands

__all__ = ["app", "expand_multi_value_options", "main", "register_subcommands"]
