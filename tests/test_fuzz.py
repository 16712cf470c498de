"""The atheris fuzz targets in ``fuzz/`` run in CI for a bounded number of inputs.

Each target runs in its own process (libFuzzer owns the process and exits on a finding),
with ``-runs=2000`` here and 50,000 behind ``VOICEBOT_SLOW=1``. A finding fails the test with
the reproducer's path and the fuzzer's traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[1]
SLOW = os.environ.get("VOICEBOT_SLOW") == "1"
RUNS = 50_000 if SLOW else 2_000


@pytest.mark.parametrize("target", ["fuzz_audio_decode", "fuzz_twilio_form", "fuzz_meta_event"])
@pytest.mark.timeout(900 if SLOW else 120)
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / f"{target}.py"),
            f"-runs={RUNS}",
            "-seed=1",  # reproducible in CI; VOICEBOT_SLOW runs explore more
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=880 if SLOW else 110,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"Done {RUNS} runs" in log, log[-2000:]
    assert not list(tmp_path.glob("crash-*"))


def test_fuzz_target_reports_a_planted_bug(tmp_path: Path) -> None:
    """The harness fails when a target does: a target that raises on a byte is caught."""
    target = tmp_path / "planted.py"
    target.write_text(
        "import sys, atheris\n"
        "def one(data: bytes) -> None:\n"
        "    if data[:1] == b'!':\n"
        "        raise ValueError('planted')\n"
        "atheris.Setup(sys.argv, one)\n"
        "atheris.Fuzz()\n"
    )
    proc = subprocess.run(
        [sys.executable, str(target), "-runs=100000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode != 0 and "planted" in proc.stdout + proc.stderr
    assert list(tmp_path.glob("crash-*"))
