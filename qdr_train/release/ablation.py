"""One command, one table: QDR against the usual ways to get an INT8 model, same data and budget.

Every INT8 variant is trained by the same trainer from the same FP32 teacher with the same
step budget, exported to Q/DQ ONNX and scored through ONNX Runtime (the deployed path).

At a few hundred QAT steps the spread between seeds is as large as the gaps between variants,
so a variant is run once per seed and the table reports the mean and spread over seeds. Each
(task, seed, variant) is an independent job: ``jobs`` of them run in parallel processes (on one
GPU, several small runs keep it busier than one), and each job leaves ``result.json`` in its
folder, so an interrupted ablation reruns only what is missing and ``report_only`` tables what
is there. Every run and the teacher are scored on the same frames (``eval_seed``), whatever seed trained
the run. An ``auto`` run is trained once and scored on each of its six conditions; each
condition gets its own table (``auto/<condition>``) and the summary is the mean over the six.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Callable

from tqdm import tqdm

from qdr_train.config import AUTO, CONFIG_DIR, TASKS, eval_tasks, load_config
from qdr_train.data.datasets import data_root
from qdr_train.evaluation.evaluator import evaluate, write_json
from qdr_train.engine.trainer import Trainer
from qdr_train.export.onnx import export_model_file
from qdr_ros.core.atomic import atomic_write
from qdr_ros.core.model_info import file_sha256
from qdr_ros.inference.onnxruntime import physical_cores

VARIANTS = {
    "ptq": "PTQ (calibration only)",
    "qat": "QAT, reconstruction loss",
    "qat_out": "QAT + output distillation",
    "qat_dec": "QAT + decoder-feature distillation",
    "qdr_fixed": "QDR without LMR (fixed weights)",
    "qdr": "QDR (self-distillation + DFD + LMR)",
}
METRICS = ("psnr", "ssim", "psnr_ratio", "gain_recovery")
UNDISTILLED = ("ptq", "qat")  # variants whose result no distill.* setting can change
LEARNED_WEIGHTS = ("qdr",)  # the only variants whose result the distill.lmr* settings can change
RECOVERY_TARGET = 0.98  # QDR's mean gain recovery over tasks must reach this, and lead every other variant
RUN_PLACE_KEYS = ("device", "threads", "progress", "log_every", "save_every", "val_every")  # never change a result


def default_teacher(task: str) -> Path:
    return Path("models") / task / "efm_fp32.pt"


def _scores(report: dict[str, Any], kind: str) -> dict[str, float]:
    return {"psnr": report["mean"][kind]["psnr"], "ssim": report["mean"][kind]["ssim"]}


def gain_recovery(psnr: float, input_psnr: float, fp32_psnr: float) -> float:
    """Share of the FP32 model's gain over the degraded input that an INT8 model keeps."""
    return (psnr - input_psnr) / (fp32_psnr - input_psnr)


def condition_reports(cfg: dict[str, Any], model: str | Path, clean: Path, limit: int,
                      threads: int) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on each condition that ``cfg["task"]`` is scored on (auto: its six); one report each."""
    return {condition: evaluate({**cfg, "task": condition}, model, clean_dir=clean, limit=limit, baseline=False,
                                threads=threads, progress=False)
            for condition in eval_tasks(cfg["task"])}


def _same_settings(path: Path, settings: dict[str, Any]) -> bool:
    return path.is_file() and json.loads(path.read_text()).get("settings") == settings


def _relevant(settings: dict[str, Any], variant: str) -> dict[str, Any]:
    """Drop the distill.* keys ``variant`` never reads from ``settings`` (results stored with them still count)."""
    cfg = dict(settings.get("config", {}))
    if variant in UNDISTILLED:
        cfg.pop("distill", None)
    elif "distill" in cfg and variant not in LEARNED_WEIGHTS:
        cfg["distill"] = {k: v for k, v in cfg["distill"].items() if not k.startswith("lmr")}
    return {**settings, "config": cfg}


def reference_scores(task: str, teacher: Path, out: Path, overrides: list[str], limit: int,
                     threads: int) -> dict[str, dict[str, Any]]:
    """Input and FP32 scores per scored condition of one task (cached in ``out/fp32/result.json``)."""
    path = out / "fp32" / "result.json"
    cfg = load_config(task, CONFIG_DIR / "int8.yaml", overrides)
    levels = {t: cfg["levels"][t] for t in eval_tasks(task)}
    settings = {"teacher_sha256": file_sha256(teacher), "data": cfg["data"], "levels": levels, "limit": limit,
                "eval_seed": cfg["eval_seed"]}
    if _same_settings(path, settings):
        return json.loads(path.read_text())["conditions"]
    clean = data_root(cfg["data"]["root"]) / cfg["data"]["val"]
    export_model_file(teacher, out / "fp32")
    reports = condition_reports(cfg, out / "fp32" / "efm_fp32.onnx", clean, limit, threads)
    conditions = {condition: {"input": _scores(report, "input"), "fp32": _scores(report, "output"),
                              "images": len(report["images"]), "data": cfg["data"]["val"],
                              "level": cfg["levels"][condition]}
                  for condition, report in reports.items()}
    write_json({"settings": settings, "conditions": conditions}, path)
    return conditions


class AblationError(RuntimeError):
    """Some runs of an ablation failed; the message lists them."""


@dataclass(frozen=True)
class Job:
    """One (task, seed, variant) of an ablation: what ``run_variant`` trains, exports and scores."""

    task: str
    teacher: Path
    out: Path
    overrides: tuple[str, ...]
    variant: str
    seed: int
    limit: int
    threads: int

    @property
    def folder(self) -> Path:
        return self.out / f"seed{self.seed}"

    def config(self) -> dict[str, Any]:
        extra = [f"stage={self.variant}", f"quant.teacher={self.teacher}", f"out={self.folder / 'runs'}",
                 f"name={self.variant}", f"seed={self.seed}"] + (["train.iters=0"] if self.variant == "ptq" else [])
        return load_config(self.task, CONFIG_DIR / "int8.yaml", list(self.overrides) + extra)

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the result: the resolved config (not where it runs or logs) and the images scored."""
        cfg = {k: v for k, v in self.config().items() if k not in ("out", "name")}
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in RUN_PLACE_KEYS}
        settings = {"config": cfg, "teacher_sha256": file_sha256(self.teacher), "limit": self.limit}
        return _relevant(settings, self.variant)

    def done(self) -> bool:
        """Whether this run's result exists for these settings."""
        path = self.folder / self.variant / "result.json"
        if not path.is_file():
            return False
        return _relevant(json.loads(path.read_text()).get("settings", {}), self.variant) == self.settings

    def __str__(self) -> str:
        return f"{self.task}/{self.variant} seed {self.seed}"


def run_variant(job: Job) -> dict[str, Any]:
    """Train, export and score one variant for one seed; writes ``<task>/seed<seed>/<variant>/result.json``."""
    cfg = job.config()
    trainer = Trainer(cfg)
    run = trainer.fit()
    if trainer.step < cfg["train"]["iters"]:
        raise RuntimeError(f"{job} stopped at step {trainer.step} of {cfg['train']['iters']}; not scored")
    onnx_path = export_model_file(run / "model.pt", job.folder / job.variant, cfg)[0]
    clean = data_root(cfg["data"]["root"]) / cfg["data"]["val"]
    reports = condition_reports(cfg, onnx_path, clean, job.limit, job.threads)
    scores = {condition: _scores(report, "output") for condition, report in reports.items()}
    result = {"settings": job.settings, "scores": scores, "iters": cfg["train"]["iters"],
              "device": str(trainer.device), "onnx": str(onnx_path)}
    write_json(result, job.folder / job.variant / "result.json")
    return result


def run_ablation(tasks: list[str], out: str | Path, overrides: list[str] | None = None,
                 variants: list[str] | None = None, seeds: list[int] | None = None, teacher: str | Path | None = None,
                 limit: int = 0, threads: int = 0, jobs: int = 1, report_only: bool = False) -> list[dict[str, Any]]:
    """Run every (task, seed, variant) still missing, then write per-task and summary tables in ``out``.

    ``out/<task>/ablation.{md,json}`` hold one task, ``out/summary.{md,json}`` the mean over tasks.
    ``teacher`` defaults to ``models/<task>/efm_fp32.pt``.
    """
    variants = variants or list(VARIANTS)
    for kind, given, known in (("task", tasks, TASKS + (AUTO,)), ("variant", variants, VARIANTS)):
        unknown = [v for v in given if v not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}; known: {' '.join(known)} (key=value "
                             f"overrides go before --{kind}{'s' * (kind == 'variant')}, or after another option)")
    if teacher and len(tasks) > 1:
        raise ValueError("--teacher names one model; with several tasks leave it out (models/<task>/efm_fp32.pt)")
    out, overrides, seeds = Path(out), list(overrides or []), list(seeds or [0])
    if jobs > 1 and not threads:
        threads = max(1, physical_cores() // jobs)
    if threads and not any(o.startswith("train.threads=") for o in overrides):
        overrides.append(f"train.threads={threads}")
    teachers = {t: Path(teacher) if teacher else default_teacher(t) for t in tasks}
    references = {t: reference_scores(t, teachers[t], out / t, overrides, limit, threads) for t in tasks}
    failed: list[str] = []
    if not report_only:
        every = [Job(t, teachers[t], out / t, tuple(overrides), v, s, limit, threads)
                 for s in seeds for t in tasks for v in variants]
        failed = _run_jobs([j for j in every if not j.done()], jobs)
    results = []
    for task in tasks:
        for condition, reference in references[task].items():
            name = task if condition == task else f"{task}/{condition}"
            result = collect(name, out / task, reference, seeds, variants, condition)
            write_json(result, out / name / "ablation.json")
            atomic_write(out / name / "ablation.md", format_ablation(result))
            results.append(result)
    if len(results) > 1:
        summary = summarize(results)
        write_json(summary, out / "summary.json")
        atomic_write(out / "summary.md", format_summary(summary))
    if failed:
        raise AblationError(f"{len(failed)} run(s) failed; the tables hold the others, and running the same "
                            "command again retries only these:\n  " + "\n  ".join(failed))
    return results


def _run_jobs(todo: list[Job], jobs: int) -> list[str]:
    """Run the jobs here (``jobs`` 1) or in fresh processes (spawned: CUDA cannot be forked); returns the failures."""
    failed: list[str] = []

    def wait(job: Job, result: Callable[[], Any]) -> None:
        try:
            result()
        except Exception as exc:  # one broken run must not lose the others' results
            failed.append(f"{job}: {type(exc).__name__}: {exc}")

    if jobs <= 1:
        for job in tqdm(todo, desc="ablation", unit="run"):
            wait(job, lambda: run_variant(job))
        return failed
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_variant, job) for job in todo]
        try:
            for job, future in tqdm(zip(todo, futures), total=len(todo), desc="ablation", unit="run"):
                wait(job, future.result)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return failed


def collect(task: str, folder: Path, reference: dict[str, Any], seeds: list[int],
            variants: list[str], condition: str | None = None) -> dict[str, Any]:
    """Per-variant mean and spread over the seeds that have a result (missing seeds are listed).

    ``condition`` picks the scores of one scored condition (auto runs hold six); default ``task``.
    """
    condition = condition or task
    p_in, p_fp = reference["input"]["psnr"], reference["fp32"]["psnr"]
    rows: dict[str, Any] = {"input": reference["input"], "fp32": reference["fp32"]}
    for variant in variants:
        per_seed = {}
        for seed in seeds:
            path = folder / f"seed{seed}" / variant / "result.json"
            if path.is_file():
                stored = json.loads(path.read_text())
                r = {**stored, **stored["scores"][condition]}
                per_seed[seed] = {"psnr": r["psnr"], "ssim": r["ssim"], "psnr_ratio": r["psnr"] / p_fp,
                                  "gain_recovery": gain_recovery(r["psnr"], p_in, p_fp), "iters": r["iters"],
                                  "device": r.get("device", "")}
        if per_seed:
            rows[variant] = {**{m: mean(s[m] for s in per_seed.values()) for m in METRICS},
                             **{f"{m}_std": stdev(s[m] for s in per_seed.values()) if len(per_seed) > 1 else 0.0
                                for m in METRICS},
                             "seeds": sorted(per_seed), "missing_seeds": [s for s in seeds if s not in per_seed],
                             "iters": next(iter(per_seed.values()))["iters"], "per_seed": per_seed}
    return {"task": task, "data": reference["data"], "images": reference["images"], "level": reference["level"],
            "evaluated_with": "ONNX Runtime on the exported ONNX", "seeds": seeds, "rows": rows}


def format_ablation(result: dict[str, Any]) -> str:
    """Markdown table: PSNR/SSIM, PSNR ratio and gain recovery per variant (mean ± std over seeds)."""
    rows = result["rows"]
    lines = [f"### {result['task']} ({result['images']} images of {result['data']}, level {result['level']}, "
             f"seeds {', '.join(map(str, result['seeds']))})", "",
             "| model | PSNR | SSIM | PSNR ratio INT8/FP32 | gain recovery (± std over seeds) | seeds |",
             "|---|---|---|---|---|---|",
             f"| degraded input | {rows['input']['psnr']:.2f} | {rows['input']['ssim']:.4f} | | | |",
             f"| FP32 EFM (teacher) | {rows['fp32']['psnr']:.2f} | {rows['fp32']['ssim']:.4f} | 100% | 100% | |"]
    for name, label in VARIANTS.items():
        if name in rows:
            r = rows[name]
            lines.append(f"| INT8 {label} | {r['psnr']:.2f} | {r['ssim']:.4f} | {100 * r['psnr_ratio']:.2f}% | "
                         f"{100 * r['gain_recovery']:.2f}% ± {100 * r['gain_recovery_std']:.2f} | "
                         f"{len(r['seeds'])} |")
    return "\n".join(lines) + "\n"


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over tasks of each variant's gain recovery and PSNR ratio (tasks where it ran on every seed)."""
    summary: dict[str, Any] = {"tasks": [r["task"] for r in results], "variants": {}}
    for variant in VARIANTS:
        per_task = {r["task"]: r["rows"][variant] for r in results if variant in r["rows"]}
        if not per_task:
            continue
        complete = len(per_task) == len(results) and not any(v["missing_seeds"] for v in per_task.values())
        summary["variants"][variant] = {
            "gain_recovery": mean(v["gain_recovery"] for v in per_task.values()),
            "psnr_ratio": mean(v["psnr_ratio"] for v in per_task.values()),
            "per_task": {t: v["gain_recovery"] for t, v in per_task.items()},
            "complete": complete}
    for variant, v in summary["variants"].items():
        v["paired_vs_qdr"] = _paired_difference(results, variant, "qdr") if variant != "qdr" else None
    ranked = [v for v in summary["variants"] if summary["variants"][v]["complete"]]
    summary["best"] = max(ranked, key=lambda v: summary["variants"][v]["gain_recovery"]) if ranked else None
    return summary


def _paired_difference(results: list[dict[str, Any]], variant: str, reference: str) -> dict[str, Any] | None:
    """Mean over tasks of ``variant`` minus ``reference`` gain recovery, per seed; mean and standard error.

    Both runs of a seed saw the same crops and calibration batches, so the per-seed difference
    cancels much of the seed-to-seed spread that the per-variant ± std includes.
    """
    per_seed = []
    for seed in results[0]["seeds"]:
        rows = [(r["rows"].get(variant, {}).get("per_seed", {}), r["rows"].get(reference, {}).get("per_seed", {}))
                for r in results]
        if all(seed in a and seed in b for a, b in rows):
            per_seed.append(mean(a[seed]["gain_recovery"] - b[seed]["gain_recovery"] for a, b in rows))
    if not per_seed:
        return None
    sem = stdev(per_seed) / len(per_seed) ** 0.5 if len(per_seed) > 1 else None
    return {"mean": mean(per_seed), "sem": sem, "seeds": len(per_seed)}


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown: gain recovery per task and the mean over tasks, one row per variant."""
    tasks = summary["tasks"]
    lines = ["| variant | " + " | ".join(tasks) + " | mean recovery | mean PSNR ratio | minus QDR, paired by seed |",
             "|---|" + "---|" * (len(tasks) + 3)]
    for variant, v in summary["variants"].items():
        cells = [f"{100 * v['per_task'][t]:.2f}%" if t in v["per_task"] else "-" for t in tasks]
        mark = "" if v["complete"] else " (incomplete)"
        best = "**" if variant == summary["best"] else ""
        paired = v["paired_vs_qdr"]
        diff = ""
        if paired:
            spread = f" ± {100 * paired['sem']:.2f}" if paired["sem"] is not None else ""
            diff = f"{100 * paired['mean']:+.2f}{spread} ({paired['seeds']} seed{'s' * (paired['seeds'] > 1)})"
        lines.append(f"| {variant}{mark} | " + " | ".join(cells) +
                     f" | {best}{100 * v['gain_recovery']:.2f}%{best} | {100 * v['psnr_ratio']:.2f}% | {diff} |")
    lines += ["", "Paired column: per seed, the mean over tasks of (variant - QDR) gain recovery; mean ± standard "
              "error over seeds. Positive: the variant keeps more of the FP32 gain than QDR."]
    verdict = target_verdict(summary)
    if verdict:
        lines += ["", verdict]
    return "\n".join(lines) + "\n"


def target_verdict(summary: dict[str, Any]) -> str | None:
    """Say whether QDR meets its two targets in this table (None when the table has no complete QDR row)."""
    variants = summary["variants"]
    qdr = variants.get("qdr")
    if qdr is None or not qdr["complete"]:
        return None
    recovery = qdr["gain_recovery"]
    baselines = {name: v["gain_recovery"] for name, v in variants.items() if name != "qdr" and v["complete"]}
    ahead = [f"{name} {100 * value:.2f}%" for name, value in baselines.items() if value >= recovery]
    lead = ("no baseline in this table" if not baselines else
            f"NOT met ({', '.join(ahead)} at or above QDR)" if ahead else "met")
    return (f"Targets: QDR's mean gain recovery >= {100 * RECOVERY_TARGET:.0f}%: {100 * recovery:.2f}%, "
            f"{'met' if recovery >= RECOVERY_TARGET else 'NOT met'}. QDR ahead of every baseline on the mean: {lead}.")
