"""Models for the subcommands that run one (``spp``, ``trainability``): their shared options,
a spec to build, a checkpoint to load into an architecture, pruning at initialisation for a
random batch."""

from __future__ import annotations


def add_model_options(p, checkpoint: str = "with --arch") -> None:
    """The positional MODEL (``checkpoint``: how a checkpoint file is given) and ``--arch``,
    ``--allow-import``, ``--density``, ``--method``, ``--batch``, ``--seed``."""
    p.add_argument(
        "model",
        metavar="MODEL",
        help="torchvision:NAME, timm:NAME, module.path:factory (needs --allow-import), or a "
        f"checkpoint file {checkpoint}",
    )
    p.add_argument(
        "--arch",
        metavar="SPEC",
        help="MODEL is a checkpoint (state dict, safetensors; never unpickled) of this "
        "architecture (torchvision:NAME, timm:NAME, module.path:factory)",
    )
    p.add_argument(
        "--allow-import",
        action="store_true",
        help="let MODEL/--arch be 'module.path:factory', imported and called: that is "
        "running CODE; use only with a module you would run as a script",
    )
    p.add_argument("--density", type=float, metavar="RHO", help="prune at init to RHO kept")
    p.add_argument(
        "--method",
        metavar="M",
        help="pruning method with --density (random, magnitude, snip, grasp, synflow, ...); "
        "data-driven methods get a random batch of the input shape and random labels",
    )
    p.add_argument("--batch", type=int, default=32, metavar="B", help="batch size (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and pruning")


def check_model_options(args, *, model_is_spec: bool = True) -> None:
    """The checks of :func:`add_model_options`' values that need no torch (the pruning
    method's name last: it imports torch); ``model_is_spec=False`` when MODEL is a file."""
    from sigprop.validate import InvalidInput, density, nonneg_int, positive_int

    positive_int(args.batch, "--batch")
    nonneg_int(args.seed, "--seed")
    if args.arch is not None:
        check_model_spec(args.arch, args.allow_import, "--arch")
    elif model_is_spec:
        check_model_spec(args.model, args.allow_import, "MODEL")
    if (args.density is None) != (args.method is None):
        raise InvalidInput("--density and --method go together")
    if args.density is not None:
        density(args.density, "--density")
        from sigprop.prune import METHODS  # imports torch: after the cheap checks

        if args.method not in METHODS:
            raise InvalidInput(
                f"unknown pruning method {args.method!r}; choose one of {', '.join(METHODS)}"
            )


def check_model_spec(spec: str, allow_import: bool, what: str) -> str:
    """``spec`` stripped, refused when it names a Python module without ``allow_import``."""
    from sigprop.nn.arch import parse_arch_spec
    from sigprop.validate import InvalidInput

    source, _ = parse_arch_spec(spec)
    if source not in ("torchvision", "timm") and not allow_import:
        raise InvalidInput(
            f"{what} {spec!r} names a Python module: importing it runs code; pass "
            "--allow-import if you would run that module as a script"
        )
    return spec.strip()


def build_or_load(model: str, arch: str | None, seed: int = 0, *, trust_pickle: bool = False):
    """``(module, checkpoint path or None)``: ``model`` built from its spec (``arch`` None),
    a checkpoint file loaded into ``arch`` (:func:`sigprop.io.load_checkpoint` with
    ``arch=``, never unpickled), or — only with ``trust_pickle`` — a pickled module file."""
    import torch

    from sigprop.io import CheckpointError, load_checkpoint

    torch.manual_seed(seed)
    if arch is None and not trust_pickle:
        from sigprop.nn.arch import build_model

        return build_model(model), None
    if arch is None:
        ckpt = load_checkpoint(model, trust_pickle=True)
        if ckpt.module is None:
            raise CheckpointError(
                f"{ckpt.path} holds no whole module ({ckpt.layout}); pass --arch SPEC for a "
                "state dict"
            )
        return ckpt.module, ckpt.path
    ckpt = load_checkpoint(model, trust_pickle=False, arch=arch.strip())
    return ckpt.module, ckpt.path


def prune_for_cli(model, method: str, density: float, x, out, seed: int) -> str:
    """Prune ``model`` at init with ``method`` to ``density`` on a random N(0, 1) batch
    shaped like ``x`` with uniform random labels in [0, outputs); returns a line saying so."""
    import torch
    import torch.nn.utils.prune as torch_prune

    from sigprop.prune import attach_masks, convert_from_torch_prune, prune_at_init
    from sigprop.prune.scores import SCORERS

    if any(n.endswith("_orig") for n, _ in model.named_parameters()):
        sd = convert_from_torch_prune(model.state_dict())
        for m in model.modules():  # back to plain parameters, then sigprop masks
            for name in [k[: -len("_orig")] for k in m._parameters if k.endswith("_orig")]:
                torch_prune.remove(m, name)
        attach_masks(model)
        model.load_state_dict(sd, strict=False)
    else:
        attach_masks(model)
    gen = torch.Generator().manual_seed(seed + 1)
    n_out = out.reshape(out.shape[0], -1).shape[1]
    y = torch.randint(0, n_out, (x.shape[0],), generator=gen)
    data = (torch.randn(x.shape, generator=gen), y)
    result = prune_at_init(model, method, density, data=data, generator=seed, progress=False)
    scorer = SCORERS.get(method)
    data_driven = scorer is None or scorer.needs_data  # the training-based methods too
    note = f"pruned at init: {method} to density {result.density:g}"
    if data_driven:
        note += (
            f" (scores from a random N(0, 1) batch of {x.shape[0]} inputs with uniformly "
            f"random labels in [0, {n_out}), not from data)"
        )
    return note


def masks_from_zeros(model) -> int:
    """Give every dense linear/conv layer that has exactly-zero weights a ``weight_mask`` of
    its nonzeros (a checkpoint pruned with ``prune.remove``, or zeros from any tool);
    returns the number of layers masked."""
    import torch

    from sigprop.nn.kinds import is_weight_layer
    from sigprop.prune import attach_masks

    zero = [
        m
        for m in model.modules()
        if is_weight_layer(m)
        and "weight_mask" not in m._buffers
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        and bool((m.weight == 0).any())
    ]
    if not zero:
        return 0
    attach_masks(model)
    with torch.no_grad():
        for m in zero:
            m.weight_mask.copy_((m.weight != 0).to(m.weight_mask.dtype))
    return len(zero)
