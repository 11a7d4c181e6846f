"""``sigprop eoc ACTIVATION --sigma-b SB``: the edge-of-chaos initialisation for σ_b.

Prints σ_w (and σ_w², q*, χ₁, ξ_q) on the edge of chaos (Poole et al. 2016, arXiv
1606.05340; Schoenholz et al. 2017, arXiv 1611.01232). ACTIVATION is a registered name
(``tanh``, ``leaky_relu:0.2``, ...) or an expression in x (``"x*tanh(x)"``) of the safe
language of :mod:`sigprop.theory.expression` (parsed, never evaluated as Python). Exit 2 with
a one-line reason where no EOC exists (e.g. ReLU with σ_b > 0) or the expression is refused.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eoc",
        help="edge-of-chaos sigma_w for an activation and bias std sigma_b",
        description=(
            "Edge of chaos (chi1 = 1) for ACTIVATION at bias standard deviation SB. "
            "ACTIVATION: a registered name (linear, relu, leaky_relu[:alpha], tanh, "
            "hard_tanh, erf, sigmoid, elu[:alpha], selu, gelu, silu, softplus) or an "
            "expression in x such as 'x*tanh(x)' (x, numbers, pi, e, + - * / ** ^, and the "
            "functions abs asinh atan cos cosh erf erfc exp heaviside log max min sigmoid "
            "sign sin sinh softplus sqrt tanh). Exit 2 where no EOC exists."
        ),
    )
    p.add_argument("activation", metavar="ACTIVATION")
    p.add_argument(
        "--sigma-b",
        type=float,
        default=0.0,
        metavar="SB",
        help="bias standard deviation (not variance); default 0",
    )
    p.add_argument(
        "--q0",
        type=float,
        default=1.0,
        help="input variance reported as q* where every q is a fixed point (ReLU family)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sigprop.theory import eoc_init

    point = eoc_init(args.activation, args.sigma_b, q0=args.q0)
    data = point.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
        return 0
    xi_q = "inf" if data["xi_q"] is None else f"{data['xi_q']:.6g}"
    print(f"edge of chaos for {data['activation']} at sigma_b = {data['sigma_b']:.10g}")
    print(f"  sigma_w   = {data['sigma_w']:.12g}   (sigma_w^2 = {data['sigma_w2']:.12g})")
    print(f"  q*        = {data['q_star']:.12g}")
    print(f"  chi1      = {data['chi1']:.15g}")
    print(f"  xi_q      = {xi_q}   (xi_c is infinite on the EOC)")
    return 0
