"""``sigprop demo``: the main job — theory against experiment on the embedded default network.

The default network is a deep tanh MLP (20 hidden layers) on MNIST-1D (Greydanus 2020,
arXiv 2011.14439; generated locally), initialised at the edge of chaos (EOC) and pruned to a
low density. Five sections, each stating the theory's prediction, the measurement and their
agreement in numbers:

a. **EOC point** (Poole et al. 2016, arXiv 1606.05340, eq. (3)–(5); Schoenholz et al. 2017,
   arXiv 1611.01232, §3): σ_w at which χ₁ = 1 for the chosen σ_b, q*, and the depth scales
   of the ordered and chaotic comparison points; checked against the wide network's
   measured fixed point and against the constant of Hayou et al.'s code (tanh σ_b = 0.2,
   σ_w = 1.2981; arXiv 2002.08797).
b. **Signal and gradient flow** per layer for the dense network, the randomly pruned one
   (no rescaling: σ_w² → ρσ_w², Hayou et al. §3) and the rescaled one (the rescaling trick,
   Hayou et al. §4), in the ordered, EOC and chaotic phases: q^l and c^l from the mean-field
   maps against hook measurements, and per-layer gradient norms against the χ-product
   prediction (Schoenholz et al. §4).
c. **Layer collapse** across pruning methods (random, magnitude, SNIP, GraSP, SynFlow) at
   several densities: collapsed layers, and sparsity against effective sparsity
   (Vysogorets & Kempe, arXiv 2107.02306), with the theory's prediction of where global
   magnitude pruning first empties a layer (Hayou et al. §3).
d. **Jacobian spectra** of the hidden chain: empirical squared singular values against the
   free-probability moments and density (Pennington et al. 2017, arXiv 1711.04735, §3 and
   eq. (15)–(16)) for dense, pruned and rescaled networks.
e. **Training**: dense vs pruned vs pruned+rescaled vs DCT-plus-sparse (Price & Tanner 2021,
   arXiv 2102.07655) at the same density, with the theory's gradient attenuation as the
   prediction of which ones train.

Outputs in ``out``: ``report.md``, ``results.json`` (every number of the report) and
``demo_*.png`` figures. ``quick=True`` shrinks widths, probe batches, densities and epochs so
the whole job runs in under two minutes on two CPU cores. Every random choice comes from
``seed`` through explicit generators, so the same seed gives the same numbers on the CPU.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sigprop.validate import InvalidInput

__all__ = ["DemoConfig", "DemoResult", "FULL", "QUICK", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of the demo.

    Fields
    ------
    dataset: data set name for :func:`sigprop.experiments.data.load_dataset`.
    activation: theory name of the nonlinearity.
    sigma_b: bias standard deviation (not variance) shared by all phases.
    width: hidden width; depth: number of weight layers of the MLP (``depth − 1`` hidden
        layers of ``width`` units plus the readout; ``sigprop.nn.models.mlp``'s convention).
    density: fraction of weights kept by the pruned networks of sections b, d and e.
    phase_factors: σ_w² of each phase as a multiple of the EOC σ_w².
    n_probe: inputs used for q^l, c^l and gradient-norm measurements.
    n_pairs: input pairs over which c^l is averaged.
    collapse_densities: densities of the layer-collapse section.
    methods: pruning methods of the layer-collapse section.
    n_jacobian: inputs whose hidden-chain Jacobian spectrum is computed.
    epochs, batch_size, lr, momentum: the training comparison (SGD).
    """

    dataset: str = "mnist1d"
    activation: str = "tanh"
    sigma_b: float = 0.2
    width: int = 256
    depth: int = 20
    density: float = 0.1
    phase_factors: tuple[tuple[str, float], ...] = (
        ("ordered", 0.6),
        ("eoc", 1.0),
        ("chaotic", 2.0),
    )
    n_probe: int = 512
    n_pairs: int = 256
    collapse_densities: tuple[float, ...] = (0.1, 0.01, 0.003, 0.001)
    methods: tuple[str, ...] = ("random", "magnitude", "snip", "grasp", "synflow")
    n_jacobian: int = 8
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9

    def to_dict(self) -> dict:
        out = asdict(self)
        out["phase_factors"] = dict(self.phase_factors)
        return out


#: The full run (under 15 minutes on two CPU cores).
FULL = DemoConfig()
#: ``--quick`` (under 2 minutes on two CPU cores).
QUICK = DemoConfig(
    width=128,
    n_probe=256,
    n_pairs=128,
    collapse_densities=(0.1, 0.01, 0.001),
    n_jacobian=4,
    epochs=3,
)


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`run_demo`.

    Fields
    ------
    out: the output folder.
    report: path of ``report.md``; results: path of ``results.json``.
    figures: paths of the PNG figures, in report order.
    verdicts: one line per section (``"eoc"``, ``"signal"``, ``"collapse"``, ``"spectra"``,
        ``"training"``): the agreement between prediction and measurement.
    sections: every number of the report, by section (what ``results.json`` holds).
    config: the :class:`DemoConfig` used, as a dict.
    quick, seed, device: the arguments of the run.
    seconds: wall-clock time of the run; section_seconds: per section.
    """

    out: str
    report: str
    results: str
    figures: tuple[str, ...]
    verdicts: dict[str, str]
    sections: dict
    config: dict
    quick: bool
    seed: int
    device: str
    seconds: float
    section_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Section:
    key: str
    title: str
    markdown: str
    numbers: dict
    figures: tuple[Path, ...]
    verdict: str


def run_demo(
    out: str | Path = "sigprop-demo",
    quick: bool = False,
    device: str = "cpu",
    seed: int = 0,
    *,
    progress: bool = True,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Run the main job and write ``report.md``, ``results.json`` and figures into ``out``.

    Parameters
    ----------
    out: output folder (created; existing demo files in it are overwritten).
    quick: use :data:`QUICK` instead of :data:`FULL` (ignored when ``config`` is given).
    device: torch device of the training comparison (``"cpu"`` or ``"cuda"``); the
        diagnostics run on the CPU in float64.
    seed: seed of every random choice (weights, masks, batches, data split).
    progress: show tqdm progress bars.
    config: explicit sizes (e.g. for tests); overrides ``quick``.

    Returns
    -------
    DemoResult
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    device = str(device)
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise InvalidInput(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' requested but torch.cuda.is_available() is False")
    cfg = config if config is not None else (QUICK if quick else FULL)
    _validate(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    ctx = _Context(cfg, out, device, seed, progress)
    steps = [
        ("eoc", _section_eoc),
        ("signal", _section_signal),
        ("collapse", _section_collapse),
        ("spectra", _section_spectra),
        ("training", _section_training),
    ]
    sections: list[_Section] = []
    timings: dict[str, float] = {}
    bar = tqdm(steps, desc="sigprop demo", unit="section", disable=not progress)
    for key, fn in bar:
        bar.set_postfix_str(key)
        t0 = time.perf_counter()
        sections.append(fn(ctx))
        timings[key] = round(time.perf_counter() - t0, 3)
    seconds = time.perf_counter() - start

    results = {
        "sigprop_demo": 1,
        "config": cfg.to_dict(),
        "quick": bool(quick) if config is None else None,
        "seed": seed,
        "device": device,
        "verdicts": {s.key: s.verdict for s in sections},
        "sections": {s.key: s.numbers for s in sections},
        "environment": _environment(),
        "section_seconds": timings,
        "seconds": round(seconds, 3),
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n")
    report_path = out / "report.md"
    report_path.write_text(_report(cfg, sections, results, quick, seed, device, seconds))
    figures = tuple(str(f) for s in sections for f in s.figures)
    return DemoResult(
        out=str(out),
        report=str(report_path),
        results=str(results_path),
        figures=figures,
        verdicts={s.key: s.verdict for s in sections},
        sections={s.key: _jsonable(s.numbers) for s in sections},
        config=cfg.to_dict(),
        quick=bool(quick),
        seed=seed,
        device=device,
        seconds=seconds,
        section_seconds=timings,
    )


def _validate(cfg: DemoConfig) -> None:
    if not 0.0 < cfg.density <= 1.0:
        raise InvalidInput(f"density must be in (0, 1], got {cfg.density}")
    for d in cfg.collapse_densities:
        if not 0.0 < d <= 1.0:
            raise InvalidInput(f"collapse density must be in (0, 1], got {d}")
    if cfg.depth < 2 or cfg.width < 2:
        raise InvalidInput(f"depth and width must be at least 2, got {cfg.depth}, {cfg.width}")
    if cfg.sigma_b < 0 or not math.isfinite(cfg.sigma_b):
        raise InvalidInput(f"sigma_b must be a finite standard deviation >= 0, got {cfg.sigma_b}")
    names = [name for name, _ in cfg.phase_factors]
    if "eoc" not in names:
        raise InvalidInput(f"phase_factors must contain 'eoc', got {names}")


def _environment() -> dict:
    import numpy as np
    import torch

    import sigprop

    return {
        "sigprop": sigprop.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }


def _jsonable(obj):
    """Plain JSON types: numpy scalars/arrays → floats/lists, non-finite floats → None."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _Context:
    """State shared by the sections: settings, the data set, the EOC point, generators."""

    def __init__(self, cfg: DemoConfig, out: Path, device: str, seed: int, progress: bool):
        self.cfg = cfg
        self.out = out
        self.device = device
        self.seed = seed
        self.progress = progress
        self._dataset = None
        self.eoc = None  # set by _section_eoc
        self.sigma_w = {}  # phase -> σ_w, set by _section_eoc

    @property
    def dataset(self):
        if self._dataset is None:
            from sigprop.experiments.data import load_dataset

            self._dataset = load_dataset(self.cfg.dataset, seed=self.seed)
        return self._dataset

    def generator(self, *tags: object):
        """A torch generator seeded from ``seed`` and ``tags`` (stable across runs)."""
        import torch

        return torch.Generator().manual_seed(_derive_seed(self.seed, *tags))

    def probe(self, n: int):
        """The first ``n`` training inputs after a seeded permutation (float64)."""
        import torch

        x = self.dataset.x_train
        perm = torch.randperm(x.shape[0], generator=self.generator("probe"))[:n]
        return x[perm].to(torch.float64), self.dataset.y_train[perm]


def _derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed from ``seed`` and tags, by a stable hash (not Python's salted ``hash``)."""
    import hashlib

    text = "/".join([str(seed), *map(str, tags)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _report(cfg, sections, results, quick, seed, device, seconds) -> str:
    from sigprop.plotting.report import markdown_table

    env = results["environment"]
    lines = [
        "# sigprop demo: will signal flow through this sparse network?",
        "",
        f"A {cfg.activation} MLP of {cfg.depth} weight layers ({cfg.depth - 1} hidden layers "
        f"of width {cfg.width} and a readout) on "
        f"`{cfg.dataset}`, initialised at the edge of chaos (σ_b = {cfg.sigma_b}) and pruned to "
        f"density ρ = {cfg.density} (fraction of weights kept). Each section states the "
        "theory's prediction, the measurement and their agreement in numbers; every number "
        "is in `results.json`.",
        "",
        f"Run: {'`--quick`' if quick else 'full'}, seed {seed}, device `{device}`, "
        f"{seconds:.0f} s; sigprop {env['sigprop']}, torch {env['torch']}, "
        f"numpy {env['numpy']}, {env['machine']}.",
        "",
        "## Summary",
        "",
        markdown_table(["section", "verdict"], [(s.title, s.verdict) for s in sections]),
        "",
    ]
    for s in sections:
        lines += [f"## {s.title}", "", s.markdown.strip(), ""]
        for f in s.figures:
            lines += [f"![{f.stem}]({f.name})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Model construction (shared by the sections)
# --------------------------------------------------------------------------------------------


def _build(ctx: _Context, phase: str, *, layer: str = "masked", tag: str = "weights"):
    """The default MLP, dense (a full ``weight_mask``), weights N(0, σ_w²/fan_in) of ``phase``.

    The same ``(phase, tag)`` gives the same weights, so pruned and rescaled variants are
    the dense network with weights removed (and rescaled), not a different draw. With
    ``layer="dct"`` the layers are DCT-plus-sparse at density ρ: the sparse part S starts at
    zero (Price & Tanner 2021, arXiv 2102.07655, §3), the offset α·D is orthogonal with gain
    α, so α = σ_w puts the network at the same point of the phase diagram with orthogonal
    weights; biases are N(0, σ_b²) as for the other variants.
    """
    import torch

    from sigprop.nn.init import gaussian_init_
    from sigprop.nn.models import mlp

    cfg = ctx.cfg
    ds = ctx.dataset
    model = mlp(
        ds.n_features,
        cfg.width,
        cfg.depth,
        ds.n_classes,
        activation=cfg.activation,
        layer=layer,
        density=1.0 if layer == "masked" else cfg.density,
        generator=ctx.generator(phase, tag, "mask"),
    )
    gen = ctx.generator(phase, tag)
    if layer == "dct":
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "alpha"):
                    m.alpha.fill_(ctx.sigma_w[phase])
                    if m.bias is not None:
                        m.bias.normal_(0.0, cfg.sigma_b, generator=gen)
    else:
        gaussian_init_(model, ctx.sigma_w[phase], cfg.sigma_b, generator=gen)
    return model


def _variants(ctx: _Context, phase: str) -> dict:
    """``{"dense", "pruned", "rescaled"}`` networks of ``phase``: one draw, a random mask of
    density ρ without rescaling, and the same mask with the rescaling trick (Hayou et al.
    2021, arXiv 2002.08797, §4)."""
    import copy

    from sigprop.nn.init import rescale_
    from sigprop.prune import prune_at_init

    dense = _build(ctx, phase)
    pruned = copy.deepcopy(dense)
    prune_at_init(
        pruned,
        "random",
        ctx.cfg.density,
        generator=ctx.generator(phase, "random-mask"),
        progress=False,
    )
    rescaled = copy.deepcopy(pruned)
    rescale_(rescaled)
    return {"dense": dense, "pruned": pruned, "rescaled": rescaled}


# --------------------------------------------------------------------------------------------
# (a) The EOC point
# --------------------------------------------------------------------------------------------

#: Hayou et al.'s EOC constant for tanh at σ_b = 0.2 (official code sAviOr287/imagenet_ICLR,
#: models/base/init_utils.py), about 0.5% off the exact EOC (REFERENCES §4).
_HAYOU_TANH = {"sigma_b": 0.2, "sigma_w": 1.2981}


def _section_eoc(ctx: _Context) -> _Section:
    """EOC point, depth scales of the phase points, and the measured fixed point / χ₁."""
    import numpy as np

    from sigprop import theory
    from sigprop.diagnostics import describe, input_moments, measure, predict

    cfg = ctx.cfg
    eoc = theory.eoc_init(cfg.activation, cfg.sigma_b)
    ctx.eoc = eoc
    phases = {}
    for name, factor in cfg.phase_factors:
        sw = math.sqrt(factor) * eoc.sigma_w
        ctx.sigma_w[name] = sw
        ds = theory.depth_scales(cfg.activation, sw, cfg.sigma_b)
        phases[name] = {
            "sigma_w2_factor": factor,
            "sigma_w": sw,
            "sigma_w2": sw**2,
            "q_star": float(ds.q_star),
            "chi1": float(ds.chi1),
            "c_star": float(ds.c_star),
            "xi_q": float(ds.xi_q),
            "xi_c": float(ds.xi_c),
        }

    # Measurement: the dense network at the EOC. Deep layers sit at q* and χ^l ≈ χ₁ = 1.
    model = _build(ctx, "eoc")
    x, _ = ctx.probe(cfg.n_probe)
    spec = describe(model)
    meas = measure(model, x, spec=spec, seed=_derive_seed(ctx.seed, "eoc-probes"))
    q0, c0 = input_moments(x)
    pred = predict(spec, q0=q0, c0=c0)
    hidden = slice(cfg.depth // 2, cfg.depth - 1)  # second half of the hidden layers
    n_avg = hidden.stop - hidden.start
    q_meas = float(np.mean(meas.q[hidden]))
    # χ^l measured layer by layer (ratio of backpropagated norms); its geometric mean over the
    # same deep layers estimates χ₁ with the per-layer finite-width noise averaged out.
    chi_meas = float(np.exp(np.mean(np.log(meas.chi[hidden]))))
    q_pred_net = float(np.mean(pred.q[hidden]))
    # Tolerance: one network of width N has per-layer relative fluctuations of order
    # s = √(2/N) in q^l and χ^l (a mean of N squared, nearly Gaussian pre-activations);
    # successive layers are correlated over ≈ ξ_q ≤ 2 layers, so a mean over n layers has
    # about n/2 independent terms. We accept two standard errors: 2·s/√(n/2).
    tol = 2.0 * math.sqrt(2.0 / cfg.width) / math.sqrt(n_avg / 2.0)
    q_err = abs(q_meas - eoc.q_star) / eoc.q_star
    numbers = {
        "activation": cfg.activation,
        "eoc": eoc.to_dict(),
        "phases": phases,
        "measured": {
            "q_deep_layers": q_meas,
            "q_deep_layers_predicted_for_this_draw": q_pred_net,
            "q_rel_err_vs_q_star": q_err,
            "chi1_geometric_mean": chi_meas,
            "chi1_abs_err": abs(chi_meas - 1.0),
            "layers": [hidden.start + 1, hidden.stop],
        },
    }
    tol_q = tol_chi = tol
    ok = q_err <= tol_q and abs(chi_meas - 1.0) <= tol_chi
    hayou = None
    if cfg.activation == "tanh" and math.isclose(cfg.sigma_b, _HAYOU_TANH["sigma_b"]):
        hayou = {
            "sigma_w": _HAYOU_TANH["sigma_w"],
            "rel_diff": abs(eoc.sigma_w - _HAYOU_TANH["sigma_w"]) / eoc.sigma_w,
            "chi1_at_their_sigma_w": float(
                theory.chi1(cfg.activation, _HAYOU_TANH["sigma_w"], cfg.sigma_b)
            ),
        }
        numbers["hayou_constant"] = hayou
    numbers["tolerance"] = {"q_rel": tol_q, "chi1_abs": tol_chi}
    numbers["agree"] = bool(ok)

    from sigprop.plotting.report import markdown_table

    rows = [
        (
            name,
            p["sigma_w2"],
            p["q_star"],
            p["chi1"],
            p["c_star"],
            p["xi_q"],
            "∞" if not math.isfinite(p["xi_c"]) else p["xi_c"],
            "∞" if not math.isfinite(p["xi_c"]) else 6 * p["xi_c"],
        )
        for name, p in phases.items()
    ]
    md = [
        f"**Prediction.** For φ = {cfg.activation} and σ_b = {cfg.sigma_b} the mean-field "
        f"theory (Poole et al., arXiv 1606.05340, eq. 3–5; Schoenholz et al., arXiv "
        f"1611.01232, §3) puts the edge of chaos at σ_w = {eoc.sigma_w:.6f} "
        f"(σ_w² = {eoc.sigma_w**2:.6f}), with fixed point q* = {eoc.q_star:.6f} and "
        f"χ₁ = {eoc.chi1:.12f}. The comparison phases scale σ_w² by the factors below; "
        "ξ_c diverges on the EOC, and Schoenholz et al. find networks trainable up to about "
        "6ξ_c layers.",
        "",
        markdown_table(
            ["phase", "σ_w²", "q*", "χ₁", "c*", "ξ_q", "ξ_c", "6ξ_c"],
            rows,
        ),
        "",
        f"**Measurement.** The dense {cfg.depth}-layer network at the EOC "
        f"(width {cfg.width}, {cfg.n_probe} inputs): mean q^l over layers "
        f"{hidden.start + 1}–{hidden.stop} = {q_meas:.4f} (q* = {eoc.q_star:.4f}, relative "
        f"error {numbers['measured']['q_rel_err_vs_q_star']:.2%}); geometric mean of the "
        f"measured χ^l over hidden layers = {chi_meas:.4f} (prediction 1).",
        "",
    ]
    if hayou is not None:
        md += [
            f"Hayou et al.'s code uses σ_w = {hayou['sigma_w']} at σ_b = 0.2: "
            f"{hayou['rel_diff']:.2%} from the exact value, χ₁ = "
            f"{hayou['chi1_at_their_sigma_w']:.4f} there.",
            "",
        ]
    verdict = (
        f"{'agree' if ok else 'DISAGREE'}: deep-layer q within {q_err:.1%} of q* "
        f"(tolerance {tol_q:.1%}), χ₁ measured {chi_meas:.3f} (tolerance ±{tol_chi:.3f}; "
        "two standard errors of the finite-width noise)"
    )
    md += [f"**Agreement.** {verdict}."]
    return _Section("eoc", "a. Edge of chaos", "\n".join(md), numbers, (), verdict)


# --------------------------------------------------------------------------------------------
# (b) Signal and gradient flow: dense, pruned, rescaled in three phases
# --------------------------------------------------------------------------------------------

_VARIANTS = ("dense", "pruned", "rescaled")


def _log_ratio_err(measured, predicted) -> float:
    """max_l |log10(measured_l / predicted_l)|: the error in decades of a quantity that
    spans many orders of magnitude (gradient ratios); nan when no layer is comparable."""
    import numpy as np

    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    ok = (m > 0) & (p > 0) & np.isfinite(m) & np.isfinite(p)
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(np.log10(m[ok] / p[ok]))))


def _median_log_ratio_err(measured, predicted) -> float:
    """median_l |log10(measured_l / predicted_l)| over comparable layers (nan if none)."""
    import numpy as np

    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    ok = (m > 0) & (p > 0) & np.isfinite(m) & np.isfinite(p)
    if not ok.any():
        return float("nan")
    return float(np.median(np.abs(np.log10(m[ok] / p[ok]))))


def _section_signal(ctx: _Context) -> _Section:
    import numpy as np

    from sigprop.diagnostics import compare, describe, gradient_flow, input_moments, measure
    from sigprop.diagnostics import predict as predict_fn
    from sigprop.plotting.report import markdown_table

    cfg = ctx.cfg
    x, _ = ctx.probe(cfg.n_probe)
    q0, c0 = input_moments(x[: 2 * cfg.n_pairs])
    # Tolerances, in units of the finite-size noise s = √(2/K), K = ρN the number of kept
    # connections per hidden unit (N for dense layers): a layer's q^l is a mean over N units
    # of pre-activations that each sum K weighted inputs of ONE network, so its relative
    # error is ≈ s; a correlation's absolute error ≈ (1 − c²)/√K ≤ s/√2; gradient ratios
    # compound one such factor per layer, so ‖δ¹‖²/‖δᴸ‖² is off by ≈ s·√L/ln 10 decades.
    # Medians over layers (robust to single fluctuations) must stay within one s-unit, the
    # compounded first-layer ratio within two.
    n_layers = cfg.depth + 1

    def tolerances(density: float) -> dict:
        s_noise = math.sqrt(2.0 / (density * cfg.width))
        return {
            "finite_size_noise_s": s_noise,
            "q_median_rel": s_noise,
            "c_median_abs": s_noise / math.sqrt(2.0),
            "grad_decades": 2.0 * s_noise * math.sqrt(n_layers) / math.log(10.0),
        }

    tol = {"dense": tolerances(1.0), "sparse": tolerances(cfg.density)}
    results: dict = {"q0": q0, "c0": c0, "tolerance": tol, "phases": {}}
    rows = []
    all_ok = True
    bad = []
    for phase, _factor in cfg.phase_factors:
        results["phases"][phase] = {}
        for variant, model in _variants(ctx, phase).items():
            spec = describe(model)
            pred = predict_fn(spec, q0=q0, c0=c0)
            meas = measure(
                model, x[: 2 * cfg.n_pairs], spec=spec, seed=_derive_seed(ctx.seed, phase)
            )
            agr = compare(pred, meas)
            t = tol["dense" if variant == "dense" else "sparse"]
            flow = gradient_flow(
                model,
                x[: cfg.n_probe],
                spec=spec,
                seed=_derive_seed(ctx.seed, phase, "flow"),
                predict_kwargs={"q0": q0, "c0": c0},
                progress=False,
            )
            q_med = float(np.median(agr.q_rel_err))
            q_max = float(np.max(agr.q_rel_err))
            c_med = float(np.median(agr.c_abs_err))
            c_max = float(np.max(agr.c_abs_err))
            g_dec = _log_ratio_err(meas.grad_ratio[:1], pred.grad_ratio[:1])
            w_dec = _median_log_ratio_err(flow.grad_ratio, flow.theory_grad_ratio)
            ok = (
                q_med <= t["q_median_rel"]
                and c_med <= t["c_median_abs"]
                and g_dec <= t["grad_decades"]
                and w_dec <= t["grad_decades"]
            )
            all_ok &= ok
            if not ok:
                bad.append(f"{phase}/{variant}")
            results["phases"][phase][variant] = {
                "density": float(spec.density),
                "q_predicted": pred.q,
                "q_measured": meas.q,
                "c_predicted": pred.c,
                "c_measured": meas.c,
                "chi_predicted": pred.chi,
                "chi_measured": meas.chi,
                "delta_ratio_predicted": pred.grad_ratio,
                "delta_ratio_measured": meas.grad_ratio,
                "weight_grad_ratio_predicted": flow.theory_grad_ratio,
                "weight_grad_ratio_measured": flow.grad_ratio,
                "q_rel_err_median": q_med,
                "q_rel_err_max": q_max,
                "c_abs_err_median": c_med,
                "c_abs_err_max": c_max,
                "first_layer_delta_ratio_err_decades": g_dec,
                "weight_grad_ratio_median_err_decades": w_dec,
                "agree": bool(ok),
            }
            rows.append(
                (
                    phase,
                    variant,
                    float(pred.q[-2]),
                    float(meas.q[-2]),
                    q_med,
                    c_med,
                    float(pred.grad_ratio[0]),
                    float(meas.grad_ratio[0]),
                    g_dec,
                    w_dec,
                    "yes" if ok else "**no**",
                )
            )
    results["agree"] = bool(all_ok)
    fig_path = _plot_signal(ctx, results)
    n_runs = len(rows)
    verdict = f"agree in {n_runs - len(bad)}/{n_runs} (phase, variant) cases" + (
        f"; outside tolerance: {', '.join(bad)}" if bad else ""
    )
    md = [
        f"**Prediction.** `sigprop.diagnostics.predict` iterates the variance and covariance "
        f"maps layer by layer with each layer's measured σ_w² (Poole et al., arXiv "
        f"1606.05340, eq. 3–5) and multiplies the per-layer χ^l backwards for the gradient "
        f"ratio ‖δ^l‖²/‖δ^L‖² (Schoenholz et al., arXiv 1611.01232, §4). A random mask of "
        f"density ρ = {cfg.density} without rescaling turns σ_w² into ρσ_w² (Hayou et al., "
        f"arXiv 2002.08797, §3): the pruned network falls deep into the ordered phase, "
        f"signal variance collapses to ≈ σ_b² and gradients vanish like (ρχ₁)^(L−l). The "
        f"rescaling trick (ibid., §4) restores the dense σ_w², so the rescaled network "
        f"should follow the dense prediction.",
        "",
        f"**Measurement.** Forward hooks on {2 * cfg.n_pairs} inputs ({cfg.n_pairs} pairs for "
        "c^l; input moments q0 = "
        f"{q0:.3f}, c0 = {c0:.3f}); backpropagated norms with Gaussian output probes; "
        "weight-gradient norms of a random-projection loss (`gradient_flow`).",
        "",
        markdown_table(
            [
                "phase",
                "network",
                "q^(L−1) pred",
                "q^(L−1) meas",
                "median rel. err q",
                "median abs. err c",
                "‖δ¹‖²/‖δᴸ‖² pred",
                "meas",
                "err (decades)",
                "median weight-grad err (decades)",
                "agree",
            ],
            rows,
        ),
        "",
        "**Agreement.** Tolerances come from the finite-size noise s = √(2/K), K = ρN kept "
        "connections per unit (s = "
        f"{tol['dense']['finite_size_noise_s']:.3f} dense, "
        f"{tol['sparse']['finite_size_noise_s']:.3f} at ρ = {cfg.density}): median relative "
        "error of q ≤ s, median absolute error of c ≤ s/√2, first-layer gradient ratio and "
        f"median weight-gradient ratio within 2s√L/ln 10 decades "
        f"({tol['dense']['grad_decades']:.2f} dense, {tol['sparse']['grad_decades']:.2f} "
        f"sparse). Result: {verdict}.",
    ]
    return _Section(
        "signal", "b. Signal and gradient flow", "\n".join(md), results, (fig_path,), verdict
    )


def _plot_signal(ctx: _Context, results: dict) -> Path:
    import numpy as np

    from sigprop.plotting.report import PHASE_COLORS, VARIANT_COLORS, figure, save, style

    phases = list(results["phases"])
    with style():
        fig, axes = figure(len(phases), 3, width=3.0, height=2.3)
        for j, phase in enumerate(phases):
            for variant, r in results["phases"][phase].items():
                color = VARIANT_COLORS[variant]
                layers = np.arange(1, len(r["q_predicted"]) + 1)
                for i, (key, ylog) in enumerate(
                    (("q", True), ("c", False), ("weight_grad_ratio", True))
                ):
                    ax = axes[i, j]
                    pred, meas = r[f"{key}_predicted"], r[f"{key}_measured"]
                    if pred is None or meas is None:
                        continue
                    ax.plot(layers, pred, "-", color=color, lw=1.2, label=f"{variant} (theory)")
                    ax.plot(
                        layers,
                        meas,
                        "o",
                        color=color,
                        ms=3,
                        mfc="none",
                        label=f"{variant} (measured)",
                    )
                    if ylog:
                        ax.set_yscale("log")
            axes[0, j].set_title(
                f"{phase} (σ_w² = {ctx.sigma_w[phase] ** 2:.3g})", color=PHASE_COLORS.get(phase)
            )
            axes[0, j].set_ylabel(r"$q^l$ (pre-activation variance)")
            axes[1, j].set_ylabel(r"$c^l$ (correlation of an input pair)")
            axes[2, j].set_ylabel(
                r"$\|\partial L/\partial W^l\|^2\,/\,\|\partial L/\partial W^L\|^2$"
            )
            axes[2, j].set_xlabel("layer $l$")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="lower center", ncol=6, frameon=False, bbox_to_anchor=(0.5, -0.04)
        )
        fig.suptitle(
            f"Signal and gradient flow, {ctx.cfg.depth}-layer {ctx.cfg.activation} MLP, "
            f"width {ctx.cfg.width}; pruned: random mask ρ = {ctx.cfg.density} "
            "(lines: mean-field theory, circles: measured)",
            fontsize=9,
        )
        return save(fig, ctx.out / "demo_signal_flow.png")


# --------------------------------------------------------------------------------------------
# (c) Layer collapse across pruning methods
# --------------------------------------------------------------------------------------------


#: Run label of SynFlow with biases in its objective, as the official code linearises them.
SYNFLOW_OFFICIAL = "synflow, biases in R"


def _section_collapse(ctx: _Context) -> _Section:
    from tqdm.auto import tqdm

    from sigprop.diagnostics import check_collapse
    from sigprop.experiments.data import class_balanced_batch
    from sigprop.plotting.report import markdown_table
    from sigprop.prune import prune_at_init

    cfg = ctx.cfg
    # SNIP / GraSP protocol: 10 samples per class (REFERENCES §6).
    xb, yb = class_balanced_batch(ctx.dataset, 10, generator=ctx.generator("collapse-batch"))
    base = _build(ctx, "eoc")
    names = [n for n, m in base.named_modules() if hasattr(m, "weight_mask")]
    fan_in = [int(base.get_submodule(n).weight[0].numel()) for n in names]
    sizes = [int(base.get_submodule(n).weight.numel()) for n in names]
    runs = {}
    # SynFlow twice: with the bias-free objective R = 1ᵀ Π|W^l| 1 of Tanaka et al.'s
    # conservation theorem (the setting of the claim tested below), and with |b| in R as
    # their official code linearises it (biases inject flow that favours the last layers).
    variants = [(m, {}) for m in cfg.methods if m != "synflow"]
    if "synflow" in cfg.methods:
        variants += [("synflow", {"include_bias": False}), (SYNFLOW_OFFICIAL, {})]
    grid = [(m, kw, d) for m, kw in variants for d in cfg.collapse_densities]
    for label, kw, density in tqdm(grid, desc="pruning", leave=False, disable=not ctx.progress):
        method = "synflow" if label == SYNFLOW_OFFICIAL else label
        model = _copy(base)
        prune_at_init(
            model,
            method,
            density,
            data=(xb, yb),
            generator=ctx.generator("collapse", method, density),
            progress=False,
            **kw,
        )
        rep = check_collapse(model)
        runs[f"{label}@{density:g}"] = {
            "method": label,
            "density": density,
            "layer_density": [float(layer.density) for layer in rep.layers],
            "layer_kept": [int(layer.kept) for layer in rep.layers],
            "collapsed_layers": list(rep.collapsed_layers),
            "effectively_collapsed_layers": list(rep.effectively_collapsed_layers),
            "sparsity": float(rep.sparsity),
            "effective_sparsity": None
            if rep.effective_sparsity is None
            else float(rep.effective_sparsity),
            "connected": rep.connected,
            "dead_units": int(rep.n_dead_units),
        }
    agree_items, theory = _collapse_theory(ctx, runs, base, xb, yb)
    results = {
        "layers": names,
        "fan_in": fan_in,
        "sizes": sizes,
        "runs": runs,
        "theory": theory,
    }
    rows = []
    for r in runs.values():
        first = (
            f"layer {names.index(r['collapsed_layers'][0]) + 1}" if r["collapsed_layers"] else "—"
        )
        rows.append(
            (
                r["method"],
                r["density"],
                len(r["collapsed_layers"]),
                first,
                r["sparsity"],
                r["effective_sparsity"],
                r["dead_units"],
                "yes" if r["connected"] else "**no**",
            )
        )
    results["comparisons"] = agree_items
    n_ok = sum(1 for it in agree_items if it["agree"])
    verdict = f"{n_ok}/{len(agree_items)} predictions confirmed" + "".join(
        f"; {it['claim']}: predicted {it['predicted']}, measured {it['measured']}"
        for it in agree_items
        if not it["agree"]
    )
    results["agree"] = n_ok == len(agree_items)
    fig_path = _plot_collapse(ctx, results)
    md = [
        "**Prediction.** Global magnitude pruning ignores σ_w and compares |W| across layers; "
        "with weights N(0, σ_w²/fan_in) a layer keeps P(|W| > t) = erfc(t·√(fan_in/2)/σ_w), so "
        "the layers with the largest fan-in are emptied first (Hayou et al., arXiv "
        "2002.08797, §3). Sensitivity scores (SNIP) scale with the gradient, ∝ χ₁^(L−l): on "
        "the EOC the layers are comparable and SNIP avoids collapse to high sparsity "
        "(ibid.), except that the gradient is a sum over the batch which adds up coherently "
        "where its examples' representations are correlated: by 1 + (B − 1)r_l in variance, "
        "r_l from the mean-field correlations of same-class and different-class pairs "
        "(`sparse.snip_batch_coherence`), so the first layers, where the examples are still "
        "decorrelated, are pruned hardest; iterative SynFlow conserves the synaptic flow "
        "layer by layer and so avoids collapse (Tanaka et al., arXiv 2006.05467, Thm. 3) -- "
        "for its bias-free objective "
        "R = 1ᵀ Π|W^l| 1. Their official code also puts |b| into R; that variant "
        f"(`{SYNFLOW_OFFICIAL}`, `prune_at_init(..., include_bias=True)`, sigprop's default for "
        "fidelity to that code) is measured alongside and is not covered by the theorem.",
        "",
        markdown_table(
            ["claim", "predicted", "measured", "agree"],
            [(it["claim"], it["predicted"], it["measured"], it["agree"]) for it in agree_items],
        ),
        "",
        "**Measurement.** Each method prunes the same EOC network (SNIP and GraSP from 10 "
        "samples per class, SynFlow in 100 rounds); `check_collapse` counts fully pruned "
        "layers and the effective sparsity (kept weights on no input→output path count as "
        "pruned; Vysogorets & Kempe, arXiv 2107.02306).",
        "",
        markdown_table(
            [
                "method",
                "density ρ",
                "collapsed layers",
                "first collapsed",
                "sparsity",
                "effective sparsity",
                "dead units",
                "connected",
            ],
            rows,
        ),
        "",
        f"**Agreement.** {verdict}.",
    ]
    return _Section("collapse", "c. Layer collapse", "\n".join(md), results, (fig_path,), verdict)


def _copy(model):
    import copy

    return copy.deepcopy(model)


# --------------------------------------------------------------------------------------------
# (d) Jacobian spectra of the hidden chain
# --------------------------------------------------------------------------------------------


def _hidden_chain(model):
    """Split the MLP into (stem, chain): ``stem`` = first weight layer and its activation,
    ``chain`` = hidden layers 2..depth with their activations. The chain is square
    (width → width), the setting of the free-probability theory (Pennington et al. 2017,
    arXiv 1711.04735, §2), while the full network maps 40 inputs to 10 logits."""
    from torch import nn

    mods = list(model.children())
    weights = [i for i, m in enumerate(mods) if hasattr(m, "weight")]
    if len(weights) < 3 or weights[0] != 0:
        raise InvalidInput("the demo's Jacobian section needs a flat sequential MLP")
    stem = nn.Sequential(*mods[: weights[1]])
    chain = nn.Sequential(*mods[weights[1] : weights[-1]])
    return stem, chain


def _section_spectra(ctx: _Context) -> _Section:
    import numpy as np
    import torch

    from sigprop.diagnostics import describe, input_moments, measure, predict
    from sigprop.diagnostics.compare import spectral_distances
    from sigprop.plotting.report import markdown_table

    cfg = ctx.cfg
    x, _ = ctx.probe(max(cfg.n_jacobian, 2))
    results: dict = {"variants": {}}
    # Tolerances: m₁ = (1/N) tr JJᵀ is the same product of per-layer χ^l as the gradient
    # ratio of section b, so it carries the same compounded finite-size noise: within
    # 2s√L/ln 10 decades, s = √(2/K), K = ρN kept connections per unit; m₂ ~ m₁² within
    # twice that. W1 (relative to m₁) and KS against the predicted law are reported, not
    # judged: pooled over a few inputs of one network they measure the finite-size
    # distortion of the bulk rather than a pass/fail criterion.
    n_chain = cfg.depth - 2

    def tolerance(density: float) -> float:
        return 2.0 * math.sqrt(2.0 / (density * cfg.width)) * math.sqrt(n_chain) / math.log(10)

    tol = {"dense_m1_decades": tolerance(1.0), "sparse_m1_decades": tolerance(cfg.density)}
    results["tolerance"] = tol
    rows, bad = [], []
    for variant, model in _variants(ctx, "eoc").items():
        stem, chain = _hidden_chain(model)
        with torch.no_grad():
            h = stem.to(torch.float64)(x.to(torch.float64))
        spec = describe(chain)
        q0, c0 = input_moments(h)
        pred = predict(spec, q0=q0, c0=c0, density=True)
        meas = measure(
            chain,
            h,
            spec=spec,
            seed=_derive_seed(ctx.seed, "spectra"),
            jacobian=True,
            jacobian_inputs=cfg.n_jacobian,
            progress=False,
        )
        sq = meas.spectrum.squared
        m_meas = [float(np.mean(sq)), float(np.mean(sq**2))]
        m_pred = [float(v) for v in pred.jacobian_moments]
        law = pred.jacobian_density
        w1 = ks = float("nan")
        if law is not None:
            w1, ks = spectral_distances(sq, law.cdf, dtype=meas.spectrum.dtype)
        w1_rel = w1 / m_pred[0]
        e1 = abs(math.log10(m_meas[0] / m_pred[0]))
        e2 = abs(math.log10(m_meas[1] / m_pred[1]))
        t1 = tol["dense_m1_decades" if variant == "dense" else "sparse_m1_decades"]
        ok = e1 <= t1 and e2 <= 2 * t1
        if not ok:
            bad.append(variant)
        results["variants"][variant] = {
            "depth": len(spec.layers),
            "m1_predicted": m_pred[0],
            "m2_predicted": m_pred[1],
            "m1_measured": m_meas[0],
            "m2_measured": m_meas[1],
            "m1_err_decades": e1,
            "m2_err_decades": e2,
            "m1_tolerance_decades": t1,
            "wasserstein1": w1,
            "wasserstein1_rel": w1_rel,
            "ks": ks,
            "squared_singular_values": sq,
            "dtype": meas.spectrum.dtype,
            "law_x": None if law is None else law.x,
            "law_density": None if law is None else law.density,
            "law_atoms": None if law is None else law.atoms,
            "law_atom_masses": None if law is None else law.atom_masses,
            "agree": bool(ok),
        }
        rows.append((variant, m_pred[0], m_meas[0], e1, m_pred[1], m_meas[1], e2, w1_rel, ks, ok))
    results["agree"] = not bad
    fig_path = _plot_spectra(ctx, results)
    n = len(rows)
    verdict = f"agree for {n - len(bad)}/{n} networks" + (
        f"; outside tolerance: {', '.join(bad)}" if bad else ""
    )
    depth = results["variants"]["dense"]["depth"]
    md = [
        f"**Prediction.** The Jacobian of the square hidden chain (layers 2–{cfg.depth}, "
        f"{depth} weight layers of width {cfg.width}) is J = Π D^l W^l. Free probability "
        "gives the law of its squared singular values from the S-transforms of W Wᵀ "
        "(Gaussian) and of D² = φ′(h)² at each layer's q^l (Pennington et al., arXiv "
        "1711.04735, eq. 8–15): mean m₁ = Π χ^l, and a spread that grows linearly with depth "
        "even at the EOC for Gaussian weights. Unrescaled pruning multiplies every σ_w² by ρ, "
        "so m₁ collapses by ≈ ρ^L; rescaling restores the dense law.",
        "",
        f"**Measurement.** Exact singular values (float64) of the chain's Jacobian at "
        f"{cfg.n_jacobian} inputs.",
        "",
        markdown_table(
            [
                "network",
                "m₁ pred",
                "m₁ meas",
                "err (decades)",
                "m₂ pred",
                "m₂ meas",
                "err (decades)",
                "W1 / m₁",
                "KS",
                "agree",
            ],
            rows,
        ),
        "",
        "**Agreement.** m₁ within 2s√L/ln 10 decades of the prediction "
        f"({tol['dense_m1_decades']:.2f} dense, {tol['sparse_m1_decades']:.2f} at ρ = "
        f"{cfg.density}; s = √(2/ρN) as in section b), m₂ within twice that; W1/m₁ and KS "
        f"are reported only. Result: {verdict}.",
    ]
    return _Section("spectra", "d. Jacobian spectra", "\n".join(md), results, (fig_path,), verdict)


def _plot_spectra(ctx: _Context, results: dict) -> Path:
    """Histograms of log10 λ (λ = squared singular value) with the predicted law mapped to
    log10 λ: p(log10 λ) = ln(10) λ ρ(λ)."""
    import numpy as np

    from sigprop.diagnostics.compare import resolution_floor
    from sigprop.plotting.report import VARIANT_COLORS, figure, save, style

    variants = results["variants"]
    with style():
        fig, axes = figure(len(variants), 1, width=3.0, height=2.5)
        for j, (variant, r) in enumerate(variants.items()):
            ax = axes[0, j]
            lam = np.asarray(r["squared_singular_values"], dtype=float)
            # squared values below the SVD's resolution floor are round-off and are left
            # out of the histogram, which stays normalised to all values (like the law)
            floor = resolution_floor(lam, dtype=r["dtype"])
            lam = lam.ravel()
            n_all = lam.size
            lam = lam[lam > floor]
            color = VARIANT_COLORS[variant]
            if lam.size:
                counts, edges = np.histogram(np.log10(lam), bins=40)
                ax.stairs(
                    counts / (n_all * np.diff(edges)),
                    edges,
                    fill=True,
                    color=color,
                    alpha=0.35,
                    label="measured",
                )
            if r["law_x"] is not None:
                x = np.asarray(r["law_x"], dtype=float)
                rho = np.asarray(r["law_density"], dtype=float)
                ok = (x > floor) & np.isfinite(rho)
                ax.plot(
                    np.log10(x[ok]),
                    np.log(10) * x[ok] * rho[ok],
                    "-",
                    color=color,
                    lw=1.3,
                    label="free probability",
                )
            ax.axvline(np.log10(r["m1_predicted"]), color="0.3", ls=":", lw=1, label="m₁ predicted")
            ax.set_title(f"{variant}: m₁ pred {r['m1_predicted']:.3g}, meas {r['m1_measured']:.3g}")
            ax.set_xlabel(r"$\log_{10}\lambda$ ($\lambda$: squared singular value of $J$)")
            ax.set_ylabel(r"density of $\log_{10}\lambda$")
            ax.legend(frameon=False, loc="upper left")
        fig.suptitle(
            f"Hidden-chain Jacobian at the EOC, width {ctx.cfg.width}; pruned: ρ = "
            f"{ctx.cfg.density} without rescaling (λ below float64 round-off, (Nε)² λ_max, not "
            "shown)",
            fontsize=9,
        )
        return save(fig, ctx.out / "demo_jacobian_spectra.png")


# --------------------------------------------------------------------------------------------
# (e) Training comparison
# --------------------------------------------------------------------------------------------


def _section_training(ctx: _Context) -> _Section:
    from sigprop.diagnostics import describe, input_moments, predict
    from sigprop.experiments.train import train
    from sigprop.plotting.report import markdown_table

    cfg = ctx.cfg
    models = _variants(ctx, "eoc")
    models["dct"] = _build(ctx, "eoc", layer="dct")
    x, _ = ctx.probe(cfg.n_probe)
    q0, c0 = input_moments(x)
    chance = 1.0 / ctx.dataset.n_classes
    results: dict = {"chance": chance, "runs": {}}
    for name, model in models.items():
        pred = predict(describe(model), q0=q0, c0=c0)
        res = train(
            model,
            ctx.dataset,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            optimizer="sgd",
            lr=cfg.lr,
            momentum=cfg.momentum,
            device=ctx.device,
            seed=_derive_seed(ctx.seed, "train"),
            progress=ctx.progress,
        )
        results["runs"][name] = {
            "density": float(describe(model).density),
            "predicted_first_layer_grad_ratio": float(pred.grad_ratio[0]),
            "train_loss": res.train_loss,
            "train_accuracy": res.train_accuracy,
            "test_accuracy": res.test_accuracy,
            "final_test_accuracy": res.final_test_accuracy,
            "diverged": res.diverged,
        }
    # Prediction: a network trains when its gradients reach the first layer, i.e. the
    # predicted ‖δ¹‖²/‖δᴸ‖² is within 3 decades of 1 (Schoenholz et al., arXiv 1611.01232,
    # §4: vanishing gradients in the ordered phase). Measurement: "trained" when the final
    # test accuracy exceeds chance by more than 5 binomial standard errors of a chance-level
    # classifier on the test set (the question is whether it learns at all, not how fast).
    n_test = int(ctx.dataset.y_test.shape[0])
    threshold = chance + 5.0 * math.sqrt(chance * (1.0 - chance) / n_test)
    rows, bad = [], []
    for name, r in results["runs"].items():
        g = r["predicted_first_layer_grad_ratio"]
        predicted = 1e-3 <= g <= 1e3
        measured = r["final_test_accuracy"] >= threshold
        r["predicted_trainable"] = bool(predicted)
        r["trained"] = bool(measured)
        r["agree"] = bool(predicted == measured)
        if predicted != measured:
            bad.append(name)
        rows.append(
            (
                name,
                r["density"],
                g,
                "trainable" if predicted else "gradients vanish",
                r["final_test_accuracy"],
                "yes" if measured else "no",
                "yes" if predicted == measured else "**no**",
            )
        )
    results["threshold_accuracy"] = threshold
    results["agree"] = not bad
    fig_path = _plot_training(ctx, results)
    n = len(rows)
    verdict = f"agree for {n - len(bad)}/{n} networks" + (
        f"; disagree: {', '.join(bad)}" if bad else ""
    )
    md = [
        f"**Prediction.** Gradients must reach the first layer: the theory's "
        f"‖δ¹‖²/‖δᴸ‖² = Π χ^l (Schoenholz et al., arXiv 1611.01232, §4) within 10^±3 means "
        f"trainable. Dense, rescaled (Hayou et al., arXiv 2002.08797, §4) and DCT-plus-sparse "
        f"(Price & Tanner, arXiv 2102.07655; α·D orthogonal with α = σ_w at the EOC, S = 0) "
        f"keep χ^l ≈ 1; the unrescaled random mask (ρ = {cfg.density}) has χ^l ≈ ρχ₁.",
        "",
        f"**Measurement.** SGD (lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}) "
        f"for {cfg.epochs} epochs on `{cfg.dataset}`; 'trained' = final test accuracy ≥ "
        f"{threshold:.3f} (chance {chance:.2f} plus 5 binomial standard errors on "
        f"{n_test} test samples).",
        "",
        markdown_table(
            [
                "network",
                "density",
                "‖δ¹‖²/‖δᴸ‖² pred",
                "prediction",
                "test accuracy",
                "trained",
                "agree",
            ],
            rows,
        ),
        "",
        f"**Agreement.** {verdict}.",
    ]
    return _Section("training", "e. Training", "\n".join(md), results, (fig_path,), verdict)


def _plot_training(ctx: _Context, results: dict) -> Path:
    import numpy as np

    from sigprop.plotting.report import VARIANT_COLORS, figure, save, style

    labels = {
        "dense": "dense",
        "pruned": f"random mask ρ = {ctx.cfg.density}",
        "rescaled": "random mask + rescaling",
        "dct": "DCT + sparse",
    }
    with style():
        fig, axes = figure(2, 1, width=3.3, height=2.5)
        for name, r in results["runs"].items():
            epochs = np.arange(1, len(r["test_accuracy"]) + 1)
            color = VARIANT_COLORS[name]
            axes[0, 0].plot(epochs, r["train_loss"], "-o", color=color, ms=3, label=labels[name])
            axes[0, 1].plot(epochs, r["test_accuracy"], "-o", color=color, ms=3, label=labels[name])
        axes[0, 1].axhline(results["chance"], color="0.5", ls=":", lw=1, label="chance")
        axes[0, 0].set_ylabel("training loss (cross-entropy)")
        axes[0, 1].set_ylabel("test accuracy")
        for ax in axes[0]:
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = axes[0, 1].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="lower center", ncol=5, frameon=False, bbox_to_anchor=(0.5, -0.08)
        )
        fig.suptitle(
            f"Training a {ctx.cfg.depth}-layer {ctx.cfg.activation} MLP on {ctx.cfg.dataset} "
            f"at density {ctx.cfg.density}",
            fontsize=9,
        )
        return save(fig, ctx.out / "demo_training.png")


def _plot_collapse(ctx: _Context, results: dict) -> Path:
    import numpy as np

    from sigprop.plotting.report import METHOD_COLORS, figure, save, style

    runs = results["runs"]
    densities = sorted({r["density"] for r in runs.values()})
    lowest = densities[0]
    with style():
        fig, axes = figure(2, 1, width=3.8, height=2.9)
        ax = axes[0, 0]
        layers = np.arange(1, len(results["layers"]) + 1)
        floor = 0.5 / max(results["sizes"])  # where an empty layer is drawn on the log axis
        for r in runs.values():
            if r["density"] != lowest:
                continue
            d = np.maximum(np.asarray(r["layer_density"], dtype=float), floor)
            ax.plot(layers, d, "-o", ms=3, color=METHOD_COLORS.get(r["method"]), label=r["method"])
        curve = results["theory"]["magnitude_layer_density"].get(f"{lowest:g}")
        if curve is not None:
            ax.plot(layers, np.maximum(curve, floor), "k--", lw=1, label="magnitude (theory)")
        ax.axhline(floor, color="0.5", lw=0.8, ls=":")
        ax.text(layers[0], floor * 1.3, "layer empty", fontsize=7, color="0.4")
        ax.set_yscale("log")
        ax.set_xlabel("layer $l$")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("fraction of layer $l$ kept")
        ax.set_title(f"per-layer density at global density {lowest:g}")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[0, 1]
        for method in dict.fromkeys(r["method"] for r in runs.values()):
            pts = [
                (r["density"], 1.0 - r["effective_sparsity"])
                for r in runs.values()
                if r["method"] == method and r["effective_sparsity"] is not None
            ]
            if not pts:
                continue
            x, y = np.array(sorted(pts)).T
            ax.plot(
                x, np.maximum(y, floor), "-o", ms=3, color=METHOD_COLORS.get(method), label=method
            )
        lim = [min(densities) / 2, 1.0]
        ax.plot(lim, lim, color="0.6", lw=0.8, ls="--", label="effective = direct")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("density ρ (fraction kept)")
        ax.set_ylabel("effective density")
        ax.set_title("kept and on an input→output path")
        ax.legend(frameon=False, fontsize=7)
        fig.suptitle(
            f"Layer collapse at initialisation on the EOC, {ctx.cfg.depth}-layer "
            f"{ctx.cfg.activation} MLP, width {ctx.cfg.width}",
            fontsize=9,
        )
        return save(fig, ctx.out / "demo_layer_collapse.png")


def _collapse_theory(ctx: _Context, runs: dict, base, xb, yb) -> tuple[list[dict], dict]:
    """Predicted per-layer kept fractions and first-collapse densities under global
    magnitude and SNIP pruning (``sigprop.theory.sparse``; Hayou et al., arXiv 2002.08797,
    §3), held against the pruned networks of ``runs``.

    The kept count of a layer under a global threshold is a sum of independent Bernoulli
    draws, so a measured count is accepted within 3√(expected) + 1 of the expected count;
    a first-collapse density is confirmed when every tested density more than a factor 2
    away from it is on the predicted side (collapse below, none above).
    """
    import numpy as np

    from sigprop.diagnostics import describe, input_moments, predict
    from sigprop.theory import sparse

    cfg = ctx.cfg
    spec = describe(base)
    q0, _ = input_moments(xb)
    pred = predict(spec, q0=q0)
    fan_in = np.array([layer.fan_in for layer in spec.layers], dtype=float)
    numel = np.array([int(np.prod(layer.shape)) for layer in spec.layers], dtype=float)
    units = np.array([layer.n_units for layer in spec.layers], dtype=float)
    sw2 = np.asarray(pred.sigma_w2)
    sb2 = np.asarray(pred.sigma_b2)
    # E[(x^{l-1})²]: the data's for layer 1, then (q^{l-1} − σ_b²)/σ_w² read off the q-map.
    second = np.concatenate([[q0], (pred.q[:-1] - sb2[:-1]) / sw2[:-1]])
    # backward gain from layer k+1 to k: χ^{k+1} (n_{k+1}/n_k)
    gain = pred.chi[1:] * units[1:] / units[:-1]
    # SNIP's batch of 10 samples per class adds up coherently where the representations of
    # its examples are correlated: forward correlations within and across classes from the
    # data's cosines, backward ones from the cross-entropy gradient (snip_batch_coherence)
    labels = yb.detach().cpu().numpy()
    c0 = sparse.class_cosines(xb.detach().double().cpu().numpy(), labels)
    by_kind = [predict(spec, q0=q0, c0=c) for c in c0]
    coherence = sparse.snip_batch_coherence(
        [layer.activation for layer in spec.layers[:-1]],
        pred.q,
        by_kind[0].c,
        by_kind[1].c,
        c0,
        labels=labels,
        classes=spec.layers[-1].n_units,
    )
    scales = {
        "magnitude": sparse.magnitude_score_scales(fan_in, np.sqrt(sw2)),
        "snip": sparse.snip_score_scales(
            sw2 / fan_in, second, gain, coherence=coherence, batch_size=labels.size
        ),
    }
    score_kind = {"magnitude": "magnitude", "snip": "sensitivity"}
    index = {layer.name: i + 1 for i, layer in enumerate(spec.layers)}
    theory: dict = {
        "magnitude_layer_density": {},
        "first_collapse": {},
        "snip_input_cosine": {"same_class": c0[0], "different_class": c0[1]},
        "snip_batch_coherence": coherence,
    }
    items: list[dict] = []
    tested = sorted({r["density"] for r in runs.values()})
    for method in ("magnitude", "snip"):
        if method not in cfg.methods:
            continue
        fc = sparse.first_collapse(scales[method], numel, score_kind[method], min_kept=math.log(2))
        theory["first_collapse"][method] = {
            "layer": fc.layer + 1,
            "layer_name": spec.layers[fc.layer].name,
            "density": fc.density,
            "order": [int(i) + 1 for i in fc.order[:3]],
        }
        consistent = []
        for d in tested:
            r = runs[f"{method}@{d:g}"]
            if d < fc.density / 2:
                consistent.append(bool(r["collapsed_layers"]))
            elif d > fc.density * 2:
                consistent.append(not r["collapsed_layers"])
        measured_first = [d for d in tested if runs[f"{method}@{d:g}"]["collapsed_layers"]]
        items.append(
            {
                "claim": f"{method}: first layer emptied",
                "predicted": f"layer {fc.layer + 1} below ρ ≈ {fc.density:.2g}",
                "measured": (
                    f"layer {index[runs[f'{method}@{max(measured_first):g}']['collapsed_layers'][0]]}"
                    f" at ρ = {max(measured_first):g}"
                    if measured_first
                    else f"no collapse down to ρ = {min(tested):g}"
                ),
                "agree": all(consistent),
            }
        )
        if method == "magnitude":
            worst = 0.0
            for d in tested:
                gp = sparse.global_pruning(scales[method], numel, d, "magnitude")
                theory["magnitude_layer_density"][f"{d:g}"] = gp.kept_fraction
                kept = np.asarray(runs[f"magnitude@{d:g}"]["layer_kept"], dtype=float)
                z = np.abs(kept - gp.expected_kept) / (3 * np.sqrt(gp.expected_kept) + 1)
                worst = max(worst, float(z.max()))
            items.append(
                {
                    "claim": "magnitude: kept count per layer (erfc law)",
                    "predicted": "numel·erfc(τ√(n_l/2)/σ_w)",
                    "measured": f"worst layer at {worst:.2f} of the 3√n+1 tolerance",
                    "agree": worst <= 1.0,
                }
            )
    if "synflow" in cfg.methods:
        collapsed = [d for d in tested if runs[f"synflow@{d:g}"]["collapsed_layers"]]
        items.append(
            {
                "claim": "synflow (bias-free R): no layer collapse (Tanaka et al., arXiv "
                "2006.05467, Thm. 3)",
                "predicted": f"none down to ρ = {min(tested):g}",
                "measured": "none" if not collapsed else f"collapse at ρ = {collapsed}",
                "agree": not collapsed,
            }
        )
    return items, theory
