"""The documentation's examples are true: the ten-line watch loop runs, the getting-started
page shows the README's two commands."""

import re
import runpy
from pathlib import Path

from sigprop.cli import main
from sigprop.watcher import read_log

ROOT = Path(__file__).resolve().parents[1]


def test_the_getting_started_watch_loop_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "docs" / "examples" / "watch_loop.py"), run_name="__main__")
    log = read_log(tmp_path / "runs" / "digits")
    steps = 3 * -(-1438 // 64)  # 3 epochs of the digits training set in batches of 64
    assert list(log.steps) == list(range(0, steps + 1, 10))
    assert log.layers == ("0", "2", "4", "6")
    assert main(["plot-watch", "runs/digits", "--out", "watch.png"]) == 0
    assert (tmp_path / "watch.png").stat().st_size > 0


def test_getting_started_shows_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "getting-started.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)[:2]
    assert len(commands) == 2
    for command in commands:
        assert command in page
    assert '--8<-- "docs/examples/watch_loop.py"' in page
    lines = (ROOT / "docs" / "examples" / "watch_loop.py").read_text().splitlines()
    loop = lines[lines.index(next(x for x in lines if "sigprop.watch(" in x)) :]
    assert len(loop) <= 10  # "a ten-line plain loop"
