"""`python -m rebal_devstack run`: the whole system on this machine (what `make run` calls)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from rebal_devstack.stack import NATS_PORT, POSTGRES_PORT, SERVICE_PORTS, SERVICES, Options, run


def _band(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a decimal >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rebal_devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "run", help="start NATS, Postgres, the services and the demo bot; Ctrl-C stops them all"
    )
    start.add_argument("--var", type=Path, default=Path("var"), help="state directory (default: var)")
    start.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout (examples/demo)")
    start.add_argument("--nats-port", type=int, default=NATS_PORT, help="free port used if taken")
    start.add_argument("--postgres-port", type=int, default=POSTGRES_PORT, help="free port used if taken")
    for name in SERVICES:
        start.add_argument(f"--{name}-port", type=int, default=SERVICE_PORTS[name])
    start.add_argument("--no-bot", action="store_true", help="do not start the demo bot")
    start.add_argument("--no-rebalance", action="store_true", help="no first rebalance, no autopilot policy")
    start.add_argument(
        "--no-autopilot",
        action="store_true",
        help="one operator's rebalance at start instead of the demo's autopilot policy",
    )
    start.add_argument("--band", type=_band, default=Decimal("0.01"), help="drift band of the first run")
    args = parser.parse_args(argv)
    root = args.root.absolute()
    var_dir = args.var if args.var.is_absolute() else root / args.var
    options = Options(
        var_dir=var_dir,
        root=root,
        nats_port=args.nats_port,
        postgres_port=args.postgres_port,
        service_ports={name: getattr(args, f"{name}_port") for name in SERVICES},
        bot=not args.no_bot,
        rebalance=not args.no_rebalance,
        band=args.band,
        autopilot=not args.no_autopilot,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
