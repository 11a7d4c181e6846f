"""Hostile watch logs given to ``sigprop plot-watch``: refused with exit 2 and one line, in
bounded memory and time, without writing the figure."""

import pytest

from tests.security.harness import assert_refused


def _cases():
    ok = b'{"step":1,"layers":{"0":{"grad_norm":1.0}}}\n'
    return {
        "deep-nesting": b"[" * 200_000 + b"]" * 200_000 + b"\n",
        "over-long-line": b'{"step":1,"layers":{"' + b"a" * (5 << 20) + b'":{}}}\n',
        "nan-literal": b'{"step":1,"layers":{"0":{"grad_norm":NaN}}}\n',
        "huge-exponent": b'{"step":1,"layers":{"0":{"grad_norm":1e99999}}}\n',
        "huge-integer": b'{"step":' + b"7" * 100_000 + b',"layers":{}}\n',
        "not-utf8": ok + b"\xc3\x28\n",
        "binary": bytes(range(256)) * 64 + b"\n",
        "wrong-types": ok + b'{"step":"2","layers":{}}\n',
        "python-payload": b"__import__('os').system('touch CANARY')\n",
        "only-torn": b'{"step":1,"layers":{"0":{"grad_norm":1.0}}',
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_hostile_log_is_refused(tmp_path, name):
    log = tmp_path / "sigprop.jsonl"
    log.write_bytes(_cases()[name])
    out = tmp_path / "fig.png"
    canary = tmp_path / "CANARY"
    assert_refused(
        ["plot-watch", str(tmp_path), "--out", str(out)], canary=canary, cwd=tmp_path, timeout=20
    )
    assert not out.exists()


def test_too_many_records_is_refused(tmp_path):
    line = b'{"step":%d,"layers":{"0":{"grad_norm":1.0}}}\n'
    (tmp_path / "sigprop.jsonl").write_bytes(b"".join(line % i for i in range(50)))
    assert_refused(
        ["plot-watch", str(tmp_path), "--out", str(tmp_path / "f.png"), "--max-records", "10"],
        match="more than 10 records",
    )


def test_missing_log_is_refused(tmp_path):
    assert_refused(["plot-watch", str(tmp_path), "--out", str(tmp_path / "f.png")])
