"""``sigprop figures``: regenerate ``figures/`` by running every notebook headless."""

from __future__ import annotations

import argparse

from sigprop.validate import InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "figures",
        help="regenerate figures/ by running the notebooks",
        description="Run every notebook in notebooks/ headless; each writes its figures.",
    )
    p.add_argument("--budget", choices=("small", "full"), default="full")
    p.add_argument("--out", default=None, help="figures folder (default: figures/ in the repo)")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from sigprop.experiments.notebooks import find_notebooks, run_notebook

    notebooks = find_notebooks()
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in args.only)]
        if not notebooks:
            raise InvalidInput(f"no notebook matches {args.only}")
    for nb in tqdm(notebooks, desc="notebooks", unit="nb"):
        result = run_notebook(nb, budget=args.budget, figures_dir=args.out)
        tqdm.write(f"{nb.name}: {result.seconds:.1f} s, {len(result.figures)} figure(s)")
    return 0
