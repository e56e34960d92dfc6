"""``python -m connectors.openspp.fake --port 8069``: the fake OpenSPP server, standalone and seeded.

``--costs real`` makes every call as slow as on a real Odoo 17 + OpenG2P registry
(:mod:`connectors.openspp.fake.costs`); the defaults come from ``DCSYNC_OPENSPP_FAKE_COSTS``,
``DCSYNC_OPENSPP_FAKE_COSTS_SCALE`` and ``DCSYNC_OPENSPP_FAKE_WORKERS``, and costs are off without them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from connectors.openspp.fake import serve_fake
from connectors.openspp.fake.costs import ENV_COSTS, ENV_SCALE, ENV_WORKERS, PROFILES, CostModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a fake OpenSPP 17 (Odoo JSON-RPC) server.")
    parser.add_argument("--port", type=int, default=8069)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", type=Path, default=None, help="keep records in this JSON file")
    parser.add_argument(
        "--costs",
        choices=PROFILES,
        default=os.environ.get(ENV_COSTS, "off") or "off",
        help=f"'real': charge each call what a real Odoo 17 + OpenG2P takes (default: ${ENV_COSTS} or off)",
    )
    parser.add_argument(
        "--costs-scale",
        type=float,
        default=float(os.environ.get(ENV_SCALE, "1") or 1),
        help="multiply every cost (4 is the slower server of odoo-observed.md)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get(ENV_WORKERS, "2") or 2),
        help="modelled Odoo workers: calls beyond this many wait for one (with --costs real)",
    )
    parser.add_argument(
        "--flavour",
        choices=["openspp", "openg2p"],
        default="openspp",
        help="openg2p: the OpenG2P registry core without OpenSPP's modules (no areas, no area_id)",
    )
    return parser.parse_args(argv)


def costs_of(args: argparse.Namespace) -> CostModel:
    return CostModel.named(args.costs, scale=args.costs_scale, workers=args.workers)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    costs = costs_of(args)
    print(
        f"fake OpenSPP on http://{args.host}:{args.port} (db 'openspp', admin/admin, registrar/registrar; "
        f"{costs.describe()})"
    )
    serve_fake(args.port, args.host, args.data, costs=costs, flavour=args.flavour)


if __name__ == "__main__":
    main()
