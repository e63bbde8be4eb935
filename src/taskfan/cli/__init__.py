"""The ``taskfan`` command: one module per subcommand, wired in ``main``."""

from taskfan.cli.main import main

__all__ = ["main"]
