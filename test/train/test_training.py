"""Real short training runs on real photos: loss falls, exact resume, safe checkpoints, DDP, eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qdr_train.cli import main
from qdr_train.config import load_config
from qdr_train.data.datasets import data_root, list_images, read_rgb
from qdr_train.engine.checkpoint import CheckpointError, load_model, safe_load
from qdr_train.engine.stages import losses_of
from qdr_train.engine.trainer import Trainer
from qdr_train.losses.restoration import RestorationLoss, balance_weights
from qdr_train.metrics import image_metrics

if not (data_root() / "clean" / "CBSD68").is_dir():
    pytest.skip(f"training photos not found under {data_root()}", allow_module_level=True)


def tiny(tmp: Path, iters: int, name: str = "run", **extra: object) -> list[str]:
    values = {"model.widths": "[8,8,16]", "model.num_blocks": 1, "data.crop": 32, "data.batch": 4,
              "data.val_images": 1, "data.val_crop": 64, "train.iters": iters, "train.threads": 1,
              "train.progress": "false", "train.log_every": 5, "train.val_every": 1000, "train.save_every": 5,
              "optim.warmup": 5, "out": str(tmp), "name": name, **extra}
    return [f"{k}={v}" for k, v in values.items()]


EMA = {"train.ema": 0.9}


def losses(run: Path) -> list[float]:
    rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
    return [float(v) for _, k, v in rows if k == "rec"]


HELD_OUT_STEP = 10**8  # far from every training step, so these batches are never trained on


def test_loss_falls_and_validation_writes_a_grid(tmp_path: Path) -> None:
    """60 steps lower the loss on fixed held-out batches (the per-step loss of random crops is too noisy)."""
    cfg = load_config("lowlight", overrides=tiny(tmp_path, 60, **{"degradation.lowlight.exposure": "[0.1,0.1]",
                                                                  "optim.lr": 5e-3, "train.val_every": 60,
                                                                  "train.log_every": 10}))
    trainer = Trainer(cfg)
    held_out = [trainer.batches(HELD_OUT_STEP + i, trainer.device) for i in range(4)]

    def held_out_loss() -> float:
        trainer.model.eval()
        with torch.no_grad():
            values = [trainer.stage.objective(trainer.model, lq, gt, labels)[1]["rec"] for lq, gt, labels in held_out]
        trainer.model.train()
        return sum(values) / len(values)

    before = held_out_loss()
    run = trainer.fit()
    after = held_out_loss()
    assert after < 0.6 * before, (before, after)
    val = {k: float(v) for _, k, v in (line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:])
           if k.startswith("val_")}
    assert val["val_psnr"] > val["val_psnr_input"] + 5.0, val
    assert list(run.glob("val_*.png"))
    assert (run / "config.yaml").exists() and (run / "tb").is_dir()


def test_auto_run_logs_every_condition_and_keeps_its_gate_floor(tmp_path: Path) -> None:
    """A short blind run: validation scores each mixture condition; the model file keeps the gate's dead zone.

    auto.yaml's clean_gain must survive into the model file: the INT8 stages read it from there.
    """
    cfg = load_config("auto", overrides=tiny(tmp_path, 10, **{"data.val_images": 7, "train.val_every": 10,
                                                              "model.gate_floor": 0.2}))
    run = Trainer(cfg).fit()
    logged = {k for _, k, _ in (line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:])}
    assert {f"val_psnr_{c}" for c in cfg["data"]["mixture"]} <= logged
    assert {"gate_bce", "condition_bce"} <= logged
    model, _ = load_model(run / "model.pt")
    with torch.no_grad():
        _, feats = model(torch.rand(1, 3, 32, 32), return_features=True)
    assert model.gate_floor == 0.2 and model.clean_shuts_gate and model.clean_gain == cfg["model"]["clean_gain"] > 1
    clean = torch.sigmoid(feats["condition"][:, model.labels.index("clean")]).view(-1, 1, 1, 1)
    torch.testing.assert_close(feats["gate"], torch.relu(feats["gate_prob"] - 0.2 - model.clean_gain * clean))


def test_slow_modules_train_at_their_ratio_and_unknown_names_are_refused(tmp_path: Path) -> None:
    """optim.slow with ratio 0 freezes the named encoder while the rest of the net trains."""
    cfg = load_config("denoise", overrides=tiny(tmp_path, 5, **{"optim.slow": "[enc1]", "optim.slow_lr_ratio": 0.0}))
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and not any(n.startswith("enc1.") for n in moved), sorted(moved)
    assert any(n.startswith("enc2.") for n in moved)
    with pytest.raises(ValueError, match="optim.slow names no trainable module"):
        Trainer(load_config("denoise", overrides=tiny(tmp_path, 5, name="bad", **{"optim.slow": "[encoder9]"})))


def test_reconstruction_loss_terms_and_their_config() -> None:
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    rec, aux = losses_of(load_config("denoise", overrides=["loss.l1=0", "loss.mse=1", "loss.fft=0", "loss.gate=0.5",
                                                           "loss.condition=0"]))
    assert torch.isclose(rec(pred, target), F.mse_loss(pred, target))
    assert (aux.gate, aux.condition) == (0.5, 0.0)
    weights = torch.tensor([1.0, 3.0])
    per_image = F.mse_loss(pred, target, reduction="none").flatten(1).mean(1)
    assert torch.isclose(rec(pred, target, weights), (per_image * weights / weights.mean()).mean())

    both = RestorationLoss(l1=1.0, mse=2.0)(pred, target)
    assert torch.isclose(both, F.l1_loss(pred, target) + 2 * F.mse_loss(pred, target))
    with pytest.raises(ValueError, match="not all zero"):
        RestorationLoss(l1=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        RestorationLoss(mse=-1.0)


def test_killed_run_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILL mid-run, resume from the last checkpoint: same weights, weight average and losses as a straight run."""
    iters = 200  # a window of 190 steps to kill it in, however late busy CPUs let this process poll
    # logged every 5 steps, saved every 10: a kill mostly lands after steps logged past the checkpoint
    settings = {**EMA, "train.save_every": 10}
    cmd = [sys.executable, "-m", "qdr_train.cli", "fit", "--task", "derain",
           *tiny(tmp_path, iters, "split", **settings)]
    log = tmp_path / "split.log"
    with log.open("wb") as out:  # a file, not an unread pipe that fills up and stalls the run
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out)
    last = tmp_path / "split" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists() and safe_load(last)["step"] >= 10:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert last.exists(), f"no checkpoint within 120 s; the run's stderr:\n{log.read_text()[-3000:]}"
    killed_at = safe_load(last)["step"]
    assert 10 <= killed_at < iters, "the run finished before it could be killed; raise iters"
    split = Trainer(load_config("derain", overrides=tiny(tmp_path, iters, "split", **settings)), resume=True).fit()
    straight = Trainer(load_config("derain", overrides=tiny(tmp_path, iters, "straight", **settings))).fit()
    a, b = safe_load(straight / "last.pt"), safe_load(split / "last.pt")
    assert a["step"] == b["step"] == iters
    for state in ("model_state", "ema_state"):
        for key, value in a[state].items():
            assert torch.equal(value, b[state][key]), (state, key)
    assert losses(straight) == losses(split)  # each step once: the killed run's rows past its checkpoint went
    shipped = safe_load(straight / "model.pt")["state_dict"]
    assert all(torch.equal(shipped[k], a["ema_state"][f"module.{k}"]) for k in shipped)
    assert not all(torch.equal(shipped[k], a["model_state"][k]) for k in shipped)  # the average, not the last step


def test_batch_workers_train_on_the_same_batches(tmp_path: Path) -> None:
    """``train.workers``: batches made by two worker processes give the weights of batches made in the loop."""
    alone = Trainer(load_config("auto", overrides=tiny(tmp_path, 12, "alone"))).fit()
    helped = Trainer(load_config("auto", overrides=tiny(tmp_path, 12, "helped", **{"train.workers": 2}))).fit()
    a, b = safe_load(alone / "last.pt"), safe_load(helped / "last.pt")
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(value, b["model_state"][key]) for key, value in a["model_state"].items())
    assert losses(alone) == losses(helped)


def test_a_run_without_tensorboard_logs_to_its_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A lent GPU machine's Python has no tensorboard: the run trains and keeps its CSV log."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now raises ImportError
    run = Trainer(load_config("denoise", overrides=tiny(tmp_path, 5))).fit()
    assert len(losses(run)) == 1 and not (run / "tb").exists() and (run / "model.pt").is_file()
    assert "no TensorBoard log" in caplog.text


def test_corrupt_foreign_and_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    run = Trainer(load_config("denoise", overrides=tiny(tmp_path, 5))).fit()
    torn = tmp_path / "torn.pt"
    torn.write_bytes((run / "last.pt").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_model(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a qdr checkpoint"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="task='denoise'"):
        Trainer(load_config("dehaze", overrides=tiny(tmp_path, 10)), resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(load_config("dehaze", overrides=tiny(tmp_path, 10, "fresh")), resume=True)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "qdr_train.cli", "fit", "--task", "lowlight", *tiny(tmp_path, 6, "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = safe_load(tmp_path / "ddp" / "last.pt")
    assert ckpt["step"] == 6


def test_eval_cli_on_checkpoint_and_onnx(tmp_path: Path) -> None:
    run = Trainer(load_config("dehaze", overrides=tiny(tmp_path, 5))).fit()
    assert main(["export", "--model", str(run / "model.pt"), "--out", str(tmp_path / "export")]) == 0
    reports = {}
    for model in (run / "model.pt", tmp_path / "export" / "efm_fp32.onnx"):
        out = tmp_path / f"{model.suffix[1:]}.json"
        assert main(["eval", "--task", "dehaze", "--model", str(model), "--limit", "2", "--json", str(out)]) == 0
        reports[model.suffix] = json.loads(out.read_text())
    pt, onnx_report = reports[".pt"], reports[".onnx"]
    assert set(pt["mean"]) == {"input", "output", "baseline"}
    assert len(pt["images"]) == 2 and pt["level"] == load_config("dehaze")["levels"]["dehaze"]
    assert pt["mean"]["input"] == onnx_report["mean"]["input"]
    assert abs(pt["mean"]["output"]["psnr"] - onnx_report["mean"]["output"]["psnr"]) < 0.05


def test_release_evaluates_on_the_held_out_set_it_is_given(tmp_path: Path) -> None:
    """A run that watched a training-split set is released on a held-out set; a training set is refused."""
    run = Trainer(load_config("derain", overrides=tiny(tmp_path, 5, **{"data.train": "[clean/CBSD68]",
                                                                       "data.val": "clean/CBSD68"}))).fit()
    models, results = tmp_path / "models", tmp_path / "results"
    release = ["release", "--run", str(run), "--models", str(models), "--results", str(results), "--threads", "1"]
    assert main(release) == 2
    assert main([*release, "--eval-data", "clean/NoSuchSet"]) == 2
    assert not models.exists()
    assert main([*release, "--eval-data", "clean/Set14"]) == 0
    card = json.loads((models / "derain" / "model_card_fp32.json").read_text())
    report = json.loads((results / "derain_fp32.json").read_text())
    assert card["eval_data"] == "clean/Set14" and card["iterations"] == 5
    assert (models / "derain" / "efm_fp32.pt").is_file() and card["files"][0].endswith("efm_fp32.pt")  # QAT's start
    assert len(report["images"]) == len(list_images(data_root() / "clean" / "Set14"))
    assert "clean/Set14 (never trained on)" in (models / "derain" / "MODEL_CARD_fp32.md").read_text()


def test_eval_scores_a_chain_of_models_in_the_given_order(tmp_path: Path, repo_root: Path) -> None:
    """Two models on the command line are one restorer: the second runs on the first one's output."""
    from qdr_train.evaluation.evaluator import degraded_input, load_restorer

    first, second = (repo_root / "models" / task / "efm_int8.onnx" for task in ("lowlight", "denoise"))
    out = tmp_path / "chain.json"
    assert main(["eval", "--task", "night", "--model", str(first), str(second), "--limit", "1", "--no-baseline",
                 "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"].count(" -> ") == 1 and report["model"].index("lowlight") < report["model"].index("denoise")
    cfg = load_config("night")
    clean_path = list_images(data_root() / cfg["data"]["val"])[0]
    clean = read_rgb(clean_path)
    lq = degraded_input(clean, "night", cfg, clean_path.name)
    lowlight, denoise = load_restorer(first, 1), load_restorer(second, 1)
    in_order, reversed_order = denoise(lowlight(lq)), lowlight(denoise(lq))
    assert not np.array_equal(in_order, reversed_order)
    assert report["images"][0]["output"] == image_metrics(in_order, clean)


@pytest.mark.parametrize("task", ["derain", "night"])
def test_test_frames_follow_eval_seed_not_the_training_seed(task: str) -> None:
    """Students of seeds 0-2 and their teacher are scored on the same frames; only ``eval_seed`` redraws them."""
    from qdr_train.evaluation.evaluator import degraded_input

    cfg = load_config(task)
    clean = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame = degraded_input(clean, task, cfg, "x.png")
    assert np.array_equal(frame, degraded_input(clean, task, {**cfg, "seed": 2}, "x.png"))
    assert not np.array_equal(frame, degraded_input(clean, task, {**cfg, "eval_seed": 2}, "x.png"))


def test_eval_scores_the_clean_frames_of_a_compressed_camera(tmp_path: Path, repo_root: Path) -> None:
    """``--jpeg``: the JPEG-decoded photo is input and reference; auto passes it, a fixed low-light model moves it."""
    from qdr_train.evaluation.evaluator import as_jpeg

    reports = {}
    for task in ("auto", "lowlight"):
        out = tmp_path / f"{task}.json"
        assert main(["eval", "--task", "clean", "--model", str(repo_root / "models" / task / "efm_int8.onnx"),
                     "--clean", str(data_root() / "clean" / "CBSD68"), "--limit", "3", "--jpeg", "75",
                     "--threads", "1", "--json", str(out)]) == 0
        reports[task] = json.loads(out.read_text())
    assert reports["auto"]["jpeg_quality"] == 75 and reports["auto"]["changed_pixels"] == 0.0
    assert reports["auto"]["exact_images"] == 3 and reports["lowlight"]["exact_images"] == 0
    assert reports["lowlight"]["psnr_pooled"] < 30 and reports["lowlight"]["mean"]["input"]["psnr"] == float("inf")
    photo = read_rgb(list_images(data_root() / "clean" / "CBSD68")[0])
    decoded = as_jpeg(photo, 75)
    assert 0 < np.abs(decoded.astype(int) - photo).mean() < 10
    assert main(["eval", "--task", "derain", "--model", str(repo_root / "models" / "auto" / "efm_int8.onnx"),
                 "--pairs", str(data_root() / "paired" / "Rain100L_sample"), "--jpeg", "75"]) == 2


def test_eval_on_real_pairs(tmp_path: Path) -> None:
    run = Trainer(load_config("derain", overrides=tiny(tmp_path, 5))).fit()
    pairs = data_root() / "paired" / "Rain100L_sample"
    out = tmp_path / "rain.json"
    assert main(["eval", "--task", "derain", "--model", str(run / "model.pt"), "--pairs", str(pairs),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not report["synthetic"] and len(report["images"]) == 3


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill in the middle of writing never leaves a torn latest checkpoint (temp file + rename)."""
    from qdr_train.engine import checkpoint

    target = tmp_path / "last.pt"
    checkpoint.atomic_save({"format": checkpoint.CHECKPOINT_FORMAT, "step": 1}, target)

    def dies_halfway(obj: object, f: object) -> None:
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_save({"format": checkpoint.CHECKPOINT_FORMAT, "step": 2}, target)
    monkeypatch.undo()
    assert safe_load(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_balance_weights_favour_mild_conditions_and_bound_clean_images() -> None:
    gt = torch.full((3, 3, 8, 8), 0.5)
    lq = gt.clone()
    lq[1] += 4 / 255  # a mild condition: 4 levels of input error
    lq[2] -= 100 / 255  # a severe one: 100 levels
    w = balance_weights(lq, gt, floor=8.0)
    assert torch.allclose(w, torch.tensor([1 / 8, 1 / 8, 1 / 100]))


def test_the_gate_loss_pulls_a_saturated_gate_back() -> None:
    """A gate logit far past the sigmoid's flat ends (open on a clean crop) still gets a gradient toward shut."""
    from qdr_train.losses.auxiliary import AuxiliaryLoss

    clean = torch.rand(1, 3, 8, 8)
    logit = torch.full((1, 1, 4, 4), 20.0, requires_grad=True)
    loss, _ = AuxiliaryLoss(gate=1.0)({"gate_logit": logit}, clean, clean, torch.zeros(1, 5))
    loss.backward()
    assert loss.item() == pytest.approx(20.0, rel=1e-3) and (logit.grad > 0).all()
