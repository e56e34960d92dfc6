"""``python -m connectors.openspp.fake --port 8069``: the fake OpenSPP server, standalone and seeded."""

from __future__ import annotations

import argparse
from pathlib import Path

from connectors.openspp.fake import serve_fake


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenSPP 17 (Odoo JSON-RPC) server.")
    parser.add_argument("--port", type=int, default=8069)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", type=Path, default=None, help="keep records in this JSON file")
    parser.add_argument(
        "--flavour",
        choices=["openspp", "openg2p"],
        default="openspp",
        help="openg2p: the OpenG2P registry core without OpenSPP's modules (no areas, no area_id)",
    )
    args = parser.parse_args(argv)
    print(f"fake OpenSPP on http://{args.host}:{args.port} (db 'openspp', admin/admin, registrar/registrar)")
    serve_fake(args.port, args.host, args.data, args.flavour)


if __name__ == "__main__":
    main()
