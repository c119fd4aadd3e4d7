"""``python -m e2e.localcluster --kubeconfig PATH [--port N]``: run the local control plane."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import yaml

from . import LocalCluster


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.localcluster", description=__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path,
                        help="where to write the kubeconfig (context 'localcluster')")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--request-log", type=Path, default=None,
                        help="append one JSON line per API request to this file")
    parser.add_argument("--no-controllers", action="store_true",
                        help="serve the API only (no simulated scheduler, kubelet, controllers; "
                             "with --data-plane: the data plane only)")
    parser.add_argument("--topology", type=Path, default=None,
                        help="YAML file describing the simulated nodes (handed to the controllers)")
    parser.add_argument("--data-plane", action="store_true",
                        help="also run kube-proxy (Service cluster IPs on 127.96.0.0/16 carry TCP) "
                             "and the cluster DNS (zone cluster.local)")
    parser.add_argument("--dns-address", default=None, metavar="IP:PORT",
                        help="where the cluster DNS listens, UDP and TCP (default 127.0.0.10:53)")
    parser.add_argument("--process-runtime", action="store_true",
                        help="run the pods of every node as real processes (node label "
                             "localcluster.tfleet.dev/runtime=process; needs root, ip, unshare)")
    parser.add_argument("--storage-root", type=Path, default=None,
                        help="the process runtime's storage: PVCs and the stand-in's object store")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def controller_options(args: argparse.Namespace) -> dict[str, object]:
    """The simulated cluster's options the command line asks for."""
    options: dict[str, object] = {}
    if args.topology is not None:
        options["topology"] = yaml.safe_load(args.topology.read_text())
    if args.data_plane:
        options["data_plane"] = True
        if args.no_controllers:  # the data plane alone, no simulated controllers
            options["controllers"] = []
    if args.dns_address is not None:
        options["dns_address"] = args.dns_address
    if args.process_runtime:
        options["process_runtime"] = True
    if args.storage_root is not None:
        options["storage_root"] = args.storage_root
    return options


async def serve(args: argparse.Namespace) -> None:
    options = controller_options(args)
    # --data-plane with --no-controllers runs the data plane alone (options["controllers"] = []).
    controllers = not args.no_controllers or args.data_plane
    lc = LocalCluster(port=args.port, kubeconfig=args.kubeconfig, controllers=controllers,
                      controller_options=options, request_log_path=args.request_log,
                      keep_request_log=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with lc:
        print(f"Serving the local control plane at {lc.url} (kubeconfig {args.kubeconfig})",
              file=sys.stderr, flush=True)
        if lc.dns_address is not None:
            print("Serving cluster DNS at {}:{} and Service cluster IPs on 127.96.0.0/16".format(
                *lc.dns_address), file=sys.stderr, flush=True)
        print("ready", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
