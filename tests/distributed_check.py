"""Run by test_trainer_distributed under `torchrun --nproc_per_node 2`: two data-parallel
processes roll out their own questions, and their update rounds leave identical weights."""

from __future__ import annotations

import sys

import torch

from trainer.config import load_config
from trainer.diagnostics import StepMetrics
from trainer.grpo_trainer import GRPOTrainer


def _checksum(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()


def main() -> None:
    retriever_url, out_dir, *overrides = sys.argv[1:]
    config = load_config(None, [f"env.retriever_url={retriever_url}", f"run.out_dir={out_dir}", *overrides])
    trainer = GRPOTrainer(config)
    trainer.setup()
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    start = _checksum(model)
    questions = []
    for step in (1, 2):
        episodes, batch, _ = trainer.collect()
        questions.append(sorted({e.group_id for e in episodes}))
        trainer.update(batch, trainer._loss_options(1.0), StepMetrics(step), step=step)
    end = _checksum(model)
    ends = acc.gather(end.reshape(1).to(acc.device))
    asked = acc.gather(torch.tensor([q for qs in questions for q in qs], device=acc.device).reshape(1, -1))
    if acc.is_main_process:
        assert acc.num_processes == 2, acc.num_processes
        assert torch.equal(ends[0], ends[1]), f"weights differ across processes: {ends.tolist()}"
        assert not torch.equal(ends[0], start.to(ends.device)), "the updates changed nothing"
        assert not torch.equal(asked[0], asked[1]), "both processes rolled out the same questions"
        print(f"DISTRIBUTED OK processes={acc.num_processes} checksum={float(ends[0]):.6f}", flush=True)
    trainer.engine.close()


if __name__ == "__main__":
    main()
