"""plot-watch: the figure of a watch log (gradient flow, density reallocation, theory)."""

import torch

from sigprop.cli import main
from sigprop.plotting.watch import plot_watch
from sigprop.watcher import read_log, watch

PNG = b"\x89PNG\r\n\x1a\n"


def _log(tmp_path, prediction=True):
    from sigprop.diagnostics import describe, predict
    from sigprop.experiments.data import load_dataset
    from sigprop.experiments.train import train
    from sigprop.nn.models import mlp
    from sigprop.prune import DSR

    g = torch.Generator().manual_seed(0)
    ds = load_dataset("digits", seed=0)
    model = mlp(64, 32, 4, 10, "tanh", layer="masked", density=0.3, generator=g)
    pred = predict(describe(model), q0=1.0) if prediction else None
    dsr = DSR(model, prune_interval=4, target_prune_fraction=0.1, generator=g)
    with watch(model, tmp_path, every=2, prediction=pred, tensorboard=False) as w:
        train(model, ds, epochs=1, batch_size=128, dsr=dsr, callbacks=[w], progress=False)
    return tmp_path


def test_plot_watch_draws_a_dsr_run_with_its_prediction(tmp_path):
    folder = _log(tmp_path / "log")
    log = read_log(folder)
    assert len(log.collapse) > 1  # DSR moved the masks: collapse checked again
    density = log.values["density"]
    assert (density[0] != density[-1]).any()  # the reallocation the figure shows
    path = plot_watch(log, tmp_path / "fig.png", title="DSR")
    assert path.read_bytes()[:8] == PNG


def test_cli_plot_watch(tmp_path, capsys):
    folder = _log(tmp_path / "log", prediction=False)
    out = tmp_path / "fig.png"
    assert main(["plot-watch", str(folder), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "records" in capsys.readouterr().out
    assert main(["plot-watch", str(folder / "sigprop.jsonl"), "--out", str(out)]) == 0


def test_cli_plot_watch_without_gradients_is_exit_2(tmp_path, capsys):
    model = torch.nn.Linear(3, 3)
    with watch(model, tmp_path, tensorboard=False):
        pass  # only the step-0 record: nothing to draw
    assert main(["plot-watch", str(tmp_path), "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no gradient norms" in err[0]
