"""The one training loop every task runs through. Read it top to bottom: `fit` is the whole story."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeplab.engine.distributed import Dist
from sweeplab.engine.progress import EpochProgress, fmt_metrics, say
from sweeplab.engine.schedule import get_lr
from sweeplab.engine.watchdog import Watchdog
from sweeplab.errors import Diverged
from sweeplab.io import DamagedFile
from sweeplab.models.device import autocast, synchronize
from sweeplab.store import Metric, Store, checkpoint
from sweeplab.tasks.base import Part, StepOutput, Task


@dataclass
class TrainState:
    epoch: int = 0  # last completed epoch
    step: int = 0  # optimizer steps taken
    best: float = math.inf  # best value of the task's monitor metric
    best_epoch: int = 0
    plateau_drops: int = 0  # times the plateau rule divided the lr


class Recorder:
    """Metrics go to the store (append-only) and to TensorBoard event files; `last` holds the latest values.
    Under DDP only rank 0 writes, but every rank keeps `last` (it picks the best epoch on all of them)."""

    def __init__(self, store: Store, run_id: str, run_dir: Path, *, write: bool = True):
        self.store, self.run_id, self.write = store, run_id, write
        if write:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

            self.tb = SummaryWriter(str(run_dir / "tb"))
        self.last: dict[str, float] = {}

    def seed(self, history: list[Metric]) -> None:
        """Start `last` from the stored history (in logging order), as a resumed run's summary needs: the
        epochs trained before the interruption were logged by another process."""
        self.last.update({m.key: m.value for m in history})

    def log(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        self.last.update({f"{split}/{name}": float(value) for name, value in values.items()})
        if not self.write:
            return
        self.store.log_metrics(self.run_id, [Metric(step, epoch, split, k, float(v)) for k, v in values.items()])
        for name, value in values.items():
            self.tb.add_scalar(f"{split}/{name}", value, step)

    def sync(self) -> None:
        """After a checkpoint: events and checkpoints reach the artifact storage (a no-op for a folder, written
        in place; an object store gets the new files), so a resume on another machine starts from here."""
        self.tb.flush()
        self.store.push_artifacts(self.run_id)

    def close(self) -> None:
        if self.write:
            self.tb.close()


class Trainer:
    def __init__(self, task: Task, model: nn.Module, *, store: Store, run_id: str, run_dir: Path, quiet: bool = False,
                 dist: Dist = Dist(), watchdog: Watchdog | None = None):
        self.task, self.model, self.dist = task, model, dist
        self.store, self.run_id = store, run_id
        self.watchdog = watchdog or Watchdog.off()
        self.cfg = task.cfg.train
        self.device = task.device
        self.run_dir, self.quiet = run_dir, quiet
        self.optimizer = task.create_optimizer(model)
        self.base_lr = task.cfg.optim.lr
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        wrapped = dist.wrap(model, self.device)  # DistributedDataParallel averages the gradients of the ranks
        self.forward_model = torch.compile(wrapped) if self.cfg.compile else wrapped
        # Evaluation is sharded over the ranks, each scoring its own part with the plain model: a forward through
        # DistributedDataParallel is a collective (it broadcasts buffers), and the parts may differ in batches.
        self.eval_model = model if dist.active else self.forward_model
        self.part = Part(dist.rank, dist.world)
        self.recorder = Recorder(store, run_id, run_dir, write=dist.is_main)
        self.state = TrainState()
        self.epochs = task.num_epochs()
        self.total_steps = self.epochs * task.batches_per_epoch()
        if self.cfg.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Train to the end, evaluating and checkpointing each epoch. Raises Diverged or KeyboardInterrupt."""
        for epoch in range(self.state.epoch + 1, self.epochs + 1):
            if self.out_of_steps():  # a run resumed after its last step: nothing more to train
                break
            lr = self.train_epoch(epoch)
            if epoch % self.task.eval_interval() == 0 or epoch == self.epochs or self.out_of_steps():
                self.evaluate(epoch, lr)
            self.state.epoch = epoch
            self.save_checkpoint(epoch)
            if self.out_of_steps():
                break
        return self.state

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        progress = EpochProgress(epoch=epoch, total=self.task.batches_per_epoch(), unit=self.task.batch_name,
                                 epoch_name=self.task.epoch_name, quiet=self.quiet)
        epoch_sums: dict[str, Any] = {}
        interval_sums: dict[str, Any] = {}
        epoch_start = interval_start = time.perf_counter()
        batches = interval_batches = 0
        lr = self.lr_for(epoch)
        try:
            for batch in self.task.train_batches(epoch):
                weight = 1.0
                if self.dist.active:  # this rank's mean loss, weighted by its share: the ranks' average is the batch's
                    batch, share = self.task.shard(batch, self.part)
                    weight = share * self.dist.world
                lr = self.set_lr(epoch)
                out = self.train_step(batch, weight)
                self.watchdog.beat()
                _accumulate(epoch_sums, out)
                _accumulate(interval_sums, out)
                batches += 1
                interval_batches += 1
                progress.advance()
                if batches % self.cfg.log_every == 0:  # the only host synchronisation in the loop
                    synchronize(self.device)
                    ms = (time.perf_counter() - interval_start) * 1000 / interval_batches
                    sums = self.dist.all_sum(interval_sums, self.device)  # summed over the ranks under DDP
                    metrics = self.check_finite(self.task.metrics_of(sums), epoch)
                    progress.log(batches, lr, ms, metrics)
                    self.recorder.log(step=self.state.step, epoch=epoch, split="step",
                                      values={**metrics, "lr": lr, "ms_per_batch": ms})
                    interval_sums, interval_batches, interval_start = {}, 0, time.perf_counter()
                if self.out_of_steps():
                    break
        finally:
            progress.close()
        synchronize(self.device)
        elapsed = time.perf_counter() - epoch_start
        sums = self.dist.all_sum(epoch_sums, self.device)
        metrics = self.check_finite(self.task.metrics_of(sums), epoch)
        metrics.update({"lr": lr, "ms_per_batch": elapsed * 1000 / max(batches, 1),
                        f"{self.task.item_name}_per_s": sums.get("n", 0) / max(elapsed, 1e-9),
                        "epoch_time_s": elapsed})
        self.recorder.log(step=self.state.step, epoch=epoch, split="train", values=metrics)
        return lr

    def train_step(self, batch: Any, weight: float = 1.0) -> StepOutput:
        """One optimizer step. `weight` scales the loss that is backpropagated (a DDP rank's share of the batch,
        times the number of ranks); 0 for a rank whose part is empty, which still joins the gradient all-reduce."""
        with autocast(self.device, self.cfg.precision):
            out = self.task.train_step(self.forward_model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if out.loss.requires_grad:
            self.scaler.scale(out.loss if weight == 1.0 else out.loss * weight).backward()
        if self.cfg.clip > 0:  # global-norm clipping (Pascanu et al., 2013)
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return out

    def evaluate_split(self, split: str) -> dict[str, float]:
        """A split's metrics: each rank scores its part, the sums are added up (one collective)."""
        sums = self.task.evaluate_sums(self.eval_model, split, self.part)
        self.watchdog.beat()
        return self.task.metrics_of(self.dist.all_sum(sums, self.device))

    def evaluate(self, epoch: int, lr: float) -> None:
        start = time.perf_counter()
        for split in self.task.eval_splits:
            values = self.evaluate_split(split)
            self.recorder.log(step=self.state.step, epoch=epoch, split=split, values=values)
            self.check_finite(values, epoch, split)
        line = fmt_metrics({k.replace("/", " "): v for k, v in self.recorder.last.items()
                            if k.split("/")[0] in self.task.eval_splits})
        say(f"| end of {self.task.epoch_name} {epoch:3d} | time: {time.perf_counter() - start:5.2f}s eval | {line}", self.quiet)
        value = self.recorder.last.get(self.task.monitor, math.nan)
        if value < self.state.best:
            self.state.best, self.state.best_epoch = value, epoch
        elif self.task.monitor in self.recorder.last:
            self.state.plateau_drops += 1  # the plateau schedule reads this; the others ignore it

    def evaluate_final(self) -> dict[str, float]:
        """Final splits with the best weights (word_language_model: test the best saved model)."""
        if self.state.best_epoch and self.state.best_epoch != self.state.epoch:
            path = checkpoint.epoch_path(self.run_dir, self.state.best_epoch)
            try:
                self.model.load_state_dict(checkpoint.load(path)["model"])
            except DamagedFile as exc:  # the last epoch's weights, in memory, are tested instead: said and recorded
                say(f"warning: {exc}; the final splits are scored with the last epoch's weights", quiet=False)
                self.state.best_epoch = self.state.epoch
                self.state.best = self.recorder.last.get(self.task.monitor, math.nan)
        if self.state.best_epoch:  # what chose these weights, on record: `best/<monitor>` at the best epoch
            self.recorder.log(step=self.state.step, epoch=self.state.best_epoch, split="best",
                              values={self.task.monitor: self.state.best})
        for split in self.task.final_splits:
            values = self.evaluate_split(split)
            self.recorder.log(step=self.state.step, epoch=self.state.epoch, split=split, values=values)
            self.check_finite(values, self.state.epoch, split)
            say(f"| end of training | {split} | {fmt_metrics(values)}", self.quiet)
        return self.recorder.last

    # -- helpers ----------------------------------------------------------------------------------
    def lr_for(self, epoch: int) -> float:
        return get_lr(self.cfg, self.base_lr, epoch=epoch, step=self.state.step, total_steps=self.total_steps,
                      plateau_drops=self.state.plateau_drops)

    def set_lr(self, epoch: int) -> float:
        lr = self.lr_for(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def out_of_steps(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    def check_finite(self, metrics: dict[str, float], epoch: int, split: str = "train") -> dict[str, float]:
        """Any NaN or infinite metric ends the run as diverged, the loss first: an LM's perplexity can
        overflow to inf while its loss is still a (huge) finite number. Training values are logged
        before raising so the history shows the point of divergence (evaluation values already are)."""
        bad = [name for name in sorted(metrics, key=lambda n: n != "loss") if not math.isfinite(metrics[name])]
        if not bad:
            return metrics
        if split == "train":
            self.recorder.log(step=self.state.step, epoch=epoch, split="train", values=metrics)
        name = bad[0]
        raise Diverged(f"{SPLIT_WORDS.get(split, split)} {name} became {metrics[name]} ({split}/{name}) "
                       f"at step {self.state.step} (epoch {epoch})")

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        rng = self.dist.gather(checkpoint.get_rng_state())  # every rank's generators (rank 0 receives them)
        if self.dist.is_main:
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "train_state": asdict(self.state), "rng": rng[0]}
            if self.dist.active:
                state["rank_rng"] = rng
            previous = checkpoint.list_epochs(self.run_dir)
            # Fenced: a process that lost the run to another (it stalled past its lease) does not replace the
            # new owner's file, nor prune its checkpoints.
            checkpoint.save_atomic(state, checkpoint.epoch_path(self.run_dir, epoch), before_replace=self.check_lease)
            if self.cfg.keep_checkpoints != "all":  # only now that the new one is on disk
                # The previous one stays until the next is written, whatever keep_checkpoints says: if this
                # file turns out unreadable, a resume falls back to it (prune_final applies the policy).
                kept_before = [e for e in previous if e < epoch][-1:]
                checkpoint.prune(self.run_dir, {epoch, self.state.best_epoch, *kept_before})
            self.recorder.sync()
        self.dist.barrier()  # every rank may read it (best weights at the end) once it is there

    def check_lease(self) -> None:
        """Raises LeaseLost when another process has taken this run over."""
        if self.dist.is_main:
            self.store.check_lease(self.run_id)

    def restore_latest(self) -> int:
        """Continue from the newest checkpoint that loads; returns its epoch, 0 when training starts afresh.

        A damaged checkpoint (truncated, garbage: it will never load) is set aside under a new name, said in
        one line, and the previous one tried. Any other failure to read (an I/O error, permission denied, out of
        memory) is raised: the run fails with its history and checkpoints untouched, and the next attempt
        resumes normally."""
        epochs = checkpoint.list_epochs(self.run_dir)
        for epoch in reversed(epochs):
            try:
                self.restore(epoch)
                return epoch
            except DamagedFile as exc:
                then = "trying the previous one" if epoch != epochs[0] else "none left: training restarts from scratch"
                self.dist.barrier()  # rank 0 renames it once every rank has read it
                if self.dist.is_main:
                    kept = checkpoint.set_aside(checkpoint.epoch_path(self.run_dir, epoch))
                    then = f"set aside as {kept.name}; {then}"
                say(f"warning: {exc}; {then}", not self.dist.is_main)
        return 0

    def restore(self, epoch: int) -> None:
        """Continue after `epoch`: weights, optimizer, schedule state and the generators, as they were. The file
        loads onto the CPU; the state dicts are copied to the run's device, wherever it was saved."""
        state = checkpoint.load(checkpoint.epoch_path(self.run_dir, epoch), keys=checkpoint.STATE_KEYS)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["train_state"])
        ranks = state.get("rank_rng", [])
        checkpoint.set_rng_state(ranks[self.dist.rank] if self.dist.rank < len(ranks) else state["rng"])

    def prune_final(self) -> None:
        """Apply `keep_checkpoints`; the best epoch's checkpoint, whose weights scored the final splits, stays."""
        best = self.state.best_epoch or self.state.epoch
        keep = {"all": None, "last": {self.state.epoch, best}, "best": {best}}
        if keep[self.cfg.keep_checkpoints] is not None and self.dist.is_main:
            self.check_lease()
            checkpoint.prune(self.run_dir, keep[self.cfg.keep_checkpoints])


SPLIT_WORDS = {"train": "training", "valid": "validation"}  # for Diverged messages


def _accumulate(sums: dict[str, Any], out: StepOutput) -> None:
    """Running sums stay tensors on the device: no host synchronisation per batch."""
    # An empty DDP part's mean loss is NaN, and counts for nothing.
    sums["loss"] = sums.get("loss", 0) + (out.loss.detach().float() * out.n if out.n else 0)
    sums["n"] = sums.get("n", 0) + out.n
    for key, value in out.sums.items():
        sums[key] = sums.get(key, 0) + value.detach()

