"""The `attackgen` command. Subcommands load lazily, so validate, plan and audit never import torch."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from taxonomy.errors import AttackgenError

# name -> "module:function"; each module owns its command (one place per command).
COMMANDS: dict[str, str] = {
    "taxonomy": "attackgen.cli.design:taxonomy_command",
    "catalog": "attackgen.cli.design:catalog_command",
    "validate": "attackgen.cli.design:validate_command",
    "plan": "attackgen.cli.design:plan_command",
    "run": "attackgen.cli.execute:run_command",
    "demo": "attackgen.cli.execute:demo_command",
    "audit": "attackgen.cli.audit:audit_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attackgen")
def cli() -> None:
    """Turn a written-down threat model into adversarial attacks that run, and audit threat coverage."""


def main(argv: list[str] | None = None) -> Any:
    """Entry point: user errors become one clear message and exit code 2, never a traceback."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except AttackgenError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort as abort:
        if isinstance(abort.__cause__, EOFError):  # click's reading of it; attackgen never prompts, so a defect
            raise abort.__cause__ from None
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def run_in_process(*args: object) -> int:
    """Run one attackgen command in this process (tests, notebooks) and return its exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    return 0


if __name__ == "__main__":
    main()
