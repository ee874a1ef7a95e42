"""Data-parallel training: two CPU processes over gloo, started by torchrun (what `accelerate launch
--multi_gpu` runs on several GPUs); the trainer's Accelerator picks the process group up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_trainer import SMALL

CHECK = Path(__file__).resolve().parent / "distributed_check.py"


def test_two_processes_roll_out_their_own_questions_and_stay_in_sync(bm25_server, tmp_path):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, str(CHECK), bm25_server.url, str(tmp_path / "run"), *SMALL],
                          capture_output=True, text=True, timeout=600, env=env, cwd=CHECK.parent.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "DISTRIBUTED OK processes=2" in done.stdout
