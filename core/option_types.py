"""The command line's parameter types: each one validates one kind of value, and a bad value is one
line naming the option (exit 2), never a traceback (README, "Exit codes")."""
from __future__ import annotations

import click

from pobatch.core.portal_address import NotAPortalAddress, PortalAddress


class OptionError(click.BadParameter):
    """A bad option value as one line, "Error: --base-url: 'x' is not ...; expected ...": the option
    first, then what was expected, without the usage block click adds to other usage errors."""

    def format_message(self) -> str:
        name = self.param.opts[0] if self.param is not None and self.param.opts else self.param_hint
        return f"{name}: {self.message}" if name else self.message

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=True)


class PortalURL(click.ParamType):
    """--base-url: an http(s) address; it becomes a PortalAddress, which knows whether it is local."""

    name = "URL"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> PortalAddress:
        if isinstance(value, PortalAddress):
            return value
        try:
            return PortalAddress(str(value))
        except NotAPortalAddress as exc:
            raise OptionError(str(exc), ctx=ctx, param=param) from None


class CommandText(click.ParamType):
    """--on-finish: a command line to run; empty text is a mistake, not "no command"."""

    name = "CMD"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not str(value).strip():
            raise OptionError("the command is empty; expected a command to run when the run ends, e.g. "
                              "--on-finish \"powershell -File notify.ps1\"", ctx=ctx, param=param)
        return str(value)


class WorkersType(click.ParamType):
    """--workers: a whole number from 1 to 32, or 'auto' (None: let the machine decide)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            n = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            self.fail(f"'{value}' is not a number; expected a whole number from 1 to 32, or 'auto'", param, ctx)
        if not 1 <= n <= 32:
            self.fail(f"{n} is out of range; expected a whole number from 1 to 32, or 'auto'", param, ctx)
        return n


COMMAND = CommandText()
PORTAL_URL = PortalURL()
WORKERS = WorkersType()
