"""The training loop: one class for every stage, the stage only decides the model and objective.

Owns devices and DDP, the optimizer and schedule, an optional exponential moving average of the
weights (``train.ema``), checkpoints with exact resume, logs (CSV, TensorBoard, tqdm) and periodic
validation with sample grids.
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from qdr_ros.core.atomic import atomic_write
from qdr_ros.core.model_info import file_sha256
from qdr_train.config import AUTO, save_config
from qdr_train.data.datasets import build_train_batches, data_root, list_images, read_rgb, to_tensor
from qdr_train.data.degradations import synthesize
from qdr_train.data.prefetch import step_batches
from qdr_train.engine.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, atomic_save, cpu_state, safe_load,
                                         save_model_file)
from qdr_train.engine.stages import Stage, build_stage
from qdr_train.metrics import psnr_torch
from qdr_train.models import resolved_model_config


LOG = logging.getLogger(__name__)
PSNR_CAP = 99.0  # dB: an unchanged clean frame scores this, not infinity


def pick_device(name: str) -> torch.device:
    """``auto`` -> this process's GPU when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio`` (a multiplier of the peak lr)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class Trainer:
    """Train one stage of one task; ``fit()`` runs or resumes it."""

    def __init__(self, cfg: dict[str, Any], resume: bool = False) -> None:
        self.cfg = cfg
        self.distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
        self.device = pick_device(cfg["train"]["device"])
        if self.distributed:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.main = self.rank == 0
        if cfg["train"]["threads"]:
            torch.set_num_threads(cfg["train"]["threads"])
        torch.manual_seed(cfg["seed"])
        self.run_dir = Path(cfg["out"]) / (cfg["name"] or f"{cfg['task']}_{cfg['stage']}")
        self.batches = build_train_batches(cfg, self.rank)
        self.stage: Stage = build_stage(cfg, self.device, self.batches)
        # the teacher this INT8 run distils, as loaded now: a resume must find the same file
        self.teacher_sha256 = None if cfg["stage"] == "fp32" else file_sha256(Path(cfg["quant"]["teacher"]))
        self.model = self.stage.model
        self.net: nn.Module = self.model
        if self.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        o = cfg["optim"]
        self.optimizer = torch.optim.AdamW(self._param_groups(o), lr=o["lr"], betas=tuple(o["betas"]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_lr(s, cfg["train"]["iters"], o["warmup"], o["min_lr_ratio"]))
        decay = cfg["train"]["ema"]
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
                    if decay else None)
        self.step = 0
        if resume:
            self._resume()
        self._stop = False

    @property
    def shipped(self) -> nn.Module:
        """The weights that are validated and written as the model file: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def _param_groups(self, o: dict[str, Any]) -> list[dict[str, Any]]:
        """Optimizer groups: weight decay on weights only; modules in ``optim.slow`` at ``slow_lr_ratio`` of the lr.

        A slow part keeps what it learned elsewhere (a specialist's encoder, say) while the rest adapts.
        """
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        named += [(f"objective.{n}", p) for n, p in self.stage.objective.named_parameters() if p.requires_grad]
        module_of = {n: next((m for m in o["slow"] if n == m or n.startswith(f"{m}.")), None) for n, _ in named}
        unknown = sorted(set(o["slow"]) - set(module_of.values()))
        if unknown:
            raise ValueError(f"optim.slow names no trainable module: {unknown} (top-level modules: "
                             f"{sorted({n.split('.')[0] for n, _ in named})})")
        groups = []
        for slow in (False, True):
            part = [p for n, p in named if (module_of[n] is not None) == slow]
            lr = o["lr"] * (o["slow_lr_ratio"] if slow else 1.0)
            groups += [{"params": [p for p in part if p.dim() > 1], "weight_decay": o["weight_decay"], "lr": lr},
                       {"params": [p for p in part if p.dim() <= 1], "weight_decay": 0.0, "lr": lr}]
        return [g for g in groups if g["params"]]

    def _resume(self) -> None:
        if not self.last_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {self.last_path}; start without --resume")
        ckpt = safe_load(self.last_path)
        if ckpt["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{self.last_path} is a model file, not a resumable checkpoint")
        # an INT8 stage's objective also holds the teacher and the distillation terms and their weighting
        keys = ("task", "stage", "model") + (("quant", "distill") if self.cfg["stage"] != "fp32" else ())
        for key in keys:
            if _comparable(key, ckpt["config"][key]) != _comparable(key, self.cfg[key]):
                raise CheckpointError(f"{self.last_path} was written for {key}={ckpt['config'][key]!r}, "
                                      f"this run has {key}={self.cfg[key]!r}; use another run name")
        if self.teacher_sha256 is not None and "teacher_sha256" not in ckpt:
            raise CheckpointError(f"{self.last_path} does not record its teacher (an older qdr wrote it), so an exact "
                                  "resume cannot be checked; start the INT8 stage again under another run name")
        if ckpt.get("teacher_sha256") != self.teacher_sha256:
            raise CheckpointError(f"{self.last_path} was distilled from another teacher than "
                                  f"{self.cfg['quant']['teacher']} holds now (a release may have replaced it); "
                                  "resume with the teacher the run started from, or use another run name")
        self.model.load_state_dict(ckpt["model_state"])
        self.stage.objective.load_state_dict(ckpt["objective_state"])
        if self.ema is not None:
            if ckpt.get("ema_state") is None:
                raise CheckpointError(f"{self.last_path} has no weight average but this run has train.ema="
                                      f"{self.cfg['train']['ema']}; resume with train.ema=0 or use another run name")
            self.ema.load_state_dict(ckpt["ema_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["torch_rng"])

    def save(self) -> None:
        """Write ``last.pt`` (resumable) and the model file; only the main process writes."""
        if not self.main:
            return
        atomic_save({
            "format": CHECKPOINT_FORMAT, "config": self.cfg, "step": self.step,
            "model_state": cpu_state(self.model),
            "objective_state": self.stage.objective.state_dict(),
            "ema_state": None if self.ema is None else cpu_state(self.ema),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "teacher_sha256": self.teacher_sha256,
        }, self.last_path)
        save_model_file(self.shipped, self.cfg["model"], self.run_dir / "model.pt", task=self.cfg["task"],
                        stage=self.cfg["stage"], step=self.step)

    def _handle_signal(self, signum: int, frame: Any) -> None:
        self._stop = True

    def fit(self) -> Path:
        """Train to ``train.iters`` (from the resumed step); returns the run folder."""
        t = self.cfg["train"]
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
        logger = _RunLog(self.run_dir, enabled=self.main, resumed_at=self.step)
        previous = signal.signal(signal.SIGTERM, self._handle_signal)
        bar = tqdm(total=t["iters"], initial=self.step, disable=not (self.main and t["progress"]),
                   desc=f"{self.cfg['task']}/{self.cfg['stage']}", dynamic_ncols=True)
        self.net.train()
        started = time.time()
        cuda = self.device.type == "cuda"
        batches = step_batches(self.batches, self.step, t["iters"], t["workers"], pin_memory=cuda)
        try:
            for batch in batches:
                if self._stop:
                    break
                lq, gt, labels = (x.to(self.device, non_blocking=cuda) for x in batch)
                loss, logs = self.stage.objective(self.net, lq, gt, labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg["optim"]["grad_clip"]:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["optim"]["grad_clip"])
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if self.step % t["log_every"] == 0:
                    logs = {"loss": float(loss.detach()), "lr": self.scheduler.get_last_lr()[0], **logs,
                            "sec_per_step": (time.time() - started) / t["log_every"]}
                    started = time.time()
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    logger.log(self.step, logs)
                if self.step % t["save_every"] == 0:
                    self.save()
                if self.step % t["val_every"] == 0 or self.step == t["iters"]:
                    logger.log(self.step, self.validate())
        except KeyboardInterrupt:
            self._stop = True
        finally:
            batches.close()  # stops the workers, if any
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            self.save()
            logger.close()
            self._shutdown_distributed()
        return self.run_dir

    def _shutdown_distributed(self) -> None:
        """Leave the process group cleanly (gloo can abort at exit while DDP buffers are alive)."""
        if not self.distributed:
            return
        dist.barrier()
        self.net = self.model
        gc.collect()
        dist.destroy_process_group()
        self.distributed = False

    def val_condition(self, index: int) -> str:
        """Return the condition of monitoring image ``index``: the task, or for ``auto`` each in turn."""
        if self.cfg["task"] != AUTO:
            return self.cfg["task"]
        names = [k for k, v in self.cfg["data"]["mixture"].items() if v > 0]
        return names[index % len(names)]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR of input and output on the centre crops of the monitoring images; saves a PNG grid."""
        if not self.main:
            return {}
        d, c = self.cfg["data"], self.cfg["data"]["val_crop"]
        files = list_images(data_root(d["root"]) / d["val"])[: d["val_images"]]
        model = self.shipped
        model.eval()
        rows, psnr_in, psnr_out = [], [], []
        per_condition: dict[str, list[float]] = {}
        for index, path in enumerate(files):
            img = read_rgb(path)
            h, w = img.shape[:2]
            y, x = (h - c) // 2, (w - c) // 2
            gt = to_tensor(img[y:y + c, x:x + c])
            condition = self.val_condition(index)
            lq = synthesize(gt, condition, self.cfg["levels"], self.cfg["eval_seed"], path.name)
            out = model(lq.to(self.device)).clamp(0, 1).cpu()
            score = min(float(psnr_torch(torch.round(out * 255) / 255, gt)), PSNR_CAP)
            per_condition.setdefault(condition, []).append(score)
            if condition != "clean":
                psnr_in.append(float(psnr_torch(lq, gt)))
                psnr_out.append(score)
            rows.append(torch.cat([lq, out, gt], dim=3)[0])
        model.train()
        grid = (torch.cat(rows[:3], dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(self.run_dir / f"val_{self.step:06d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        logs = {"val_psnr_input": float(np.mean(psnr_in)), "val_psnr": float(np.mean(psnr_out))} if psnr_in else {}
        if self.cfg["task"] == AUTO:
            logs.update({f"val_psnr_{name}": float(np.mean(v)) for name, v in per_condition.items()})
        return logs


def _comparable(key: str, value: Any) -> Any:
    return resolved_model_config(value) if key == "model" else value


class _RunLog:
    """CSV + TensorBoard logging of scalars, on the main process only.

    The CSV is the record; TensorBoard is a view of it, skipped with a warning where the ``tensorboard``
    package is missing (a lent GPU machine's stock Python), so a run never fails for want of it.
    """

    def __init__(self, run_dir: Path, enabled: bool, resumed_at: int = 0) -> None:
        """Open the logs; a run resumed at step ``resumed_at`` first drops what was logged after it.

        A killed run logged steps past its last checkpoint; the resumed run logs them again.
        """
        self.enabled = enabled
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            LOG.warning("no TensorBoard log (%s): the scalars go to %s only", exc, run_dir / "log.csv")
        else:
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resumed_at or None)
        self.csv_path = run_dir / "log.csv"
        if resumed_at and self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                rows = list(csv.reader(f))
            text = io.StringIO()
            csv.writer(text).writerows(rows[:1] + [row for row in rows[1:] if int(row[0]) <= resumed_at])
            atomic_write(self.csv_path, text.getvalue())

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled or not values:
            return
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            w.writerows([step, k, f"{v:.6g}"] for k, v in values.items())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
