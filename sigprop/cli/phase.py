"""``sigprop phase ACTIVATION --out FILE.png``: the (σ_w², σ_b²) phase diagram.

Heat map of the correlation depth scale ξ_c (log colour scale), the edge of chaos, and
contours of q* (Schoenholz et al. 2017, arXiv 1611.01232, Fig. 1 style).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "phase",
        help="draw the (sigma_w^2, sigma_b^2) phase diagram of an activation",
        description=(
            "Draw the mean-field phase diagram of ACTIVATION: the correlation depth scale "
            "xi_c over (sigma_w^2, sigma_b^2), the edge-of-chaos curve and q* contours."
        ),
    )
    p.add_argument(
        "activation",
        metavar="ACTIVATION",
        help="a registered name or an expression in x, as for 'sigprop eoc'",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png",
        help="output image, written under exactly this name; the suffix picks the format "
        "(.png, .pdf, .svg, ...; PNG without a suffix)",
    )
    p.add_argument("--grid", type=int, default=256, metavar="N", help="N x N grid (default 256)")
    p.add_argument("--sigma-w2-max", type=float, default=4.0, help="largest sigma_w^2 (default 4)")
    p.add_argument(
        "--sigma-b2-max", type=float, default=0.5, help="largest sigma_b^2 (default 0.5)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sigprop.plotting.phase import plot_phase_diagram

    path = plot_phase_diagram(
        args.activation,
        args.out,
        grid=args.grid,
        sigma_w2_max=args.sigma_w2_max,
        sigma_b2_max=args.sigma_b2_max,
    )
    print(path)
    return 0
