"""Pick the INT8 student to ship: of an ablation's seeds of one variant, the one that keeps most of its teacher.

A few hundred QAT steps land each seed somewhere different (auto_f1's three QDR seeds kept 97.3-99.4% of
their teacher's gain on CBSD68), so shipping seed 0 ships a draw. A release instead scores every seed's
exported ONNX on a selection set that the student never trained on and that no reported number uses
(CBSD68 for ``auto``; Kodak24 stays held out), takes the seed with the highest gain recovery on the mean
over the task's conditions, and records every seed's score beside the choice.

``against`` makes the same set decide whether a new teacher ships at all: its picked student must
score a higher mean PSNR there than the shipped student's pick report says. The shipped file is the
INT8 model, so a teacher that is better in FP32 but whose student is not better is not a release. Nor is
one that changes a clean photo of the set the shipped student passed: the picked student's clean frames
(the set's photos as input) are counted, and fewer of them coming back bit for bit stops the release. A
mean over degraded frames cannot see that (auto_w2f4 brightened a mid-grey sand photo that auto_w1 passed).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

from qdr_train.config import CONFIG_DIR, load_config
from qdr_train.data.datasets import data_root
from qdr_train.evaluation.evaluator import evaluate
from qdr_train.release.ablation import condition_reports, gain_recovery, reference_scores


MAX_DROP_DB = 0.3  # how far one condition may fall below the shipped student's on the selection set


def _students(folder: Path, variant: str) -> dict[int, dict[str, Any]]:
    """Seed -> the stored result of every finished run of ``variant`` under an ablation's task folder."""
    found = {}
    for path in sorted(folder.glob(f"seed*/{variant}/result.json")):
        found[int(path.parent.parent.name.removeprefix("seed"))] = json.loads(path.read_text())
    if not found:
        raise FileNotFoundError(f"no finished {variant} run under {folder} (seed*/{variant}/result.json); "
                                f"run qdr-train ablate --variants {variant} first")
    return found


def pick_student(folder: str | Path, task: str, variant: str, teacher: str | Path, selection: str,
                 overrides: list[str] | None = None, limit: int = 0, threads: int = 0) -> dict[str, Any]:
    """Score each seed of ``variant`` in ``folder`` (``<ablate --out>/<task>``) on ``selection``; return the pick.

    The report holds input, teacher and per-seed PSNR per condition, each seed's gain recovery (mean over
    conditions of (INT8 - input) / (FP32 - input), as the ablation tables it) and ``run``, the picked seed's
    run folder for ``qdr-train release``.
    """
    folder = Path(folder)
    students = _students(folder, variant)
    cfg = load_config(task, CONFIG_DIR / "int8.yaml", list(overrides or []) + [f"data.val={selection}"])
    clean = data_root(cfg["data"]["root"]) / selection
    if not clean.is_dir():
        raise FileNotFoundError(f"selection set {clean} not found; pass a folder under the data root")
    runs = {seed: folder / f"seed{seed}" / "runs" / variant for seed in students}
    for seed, run in runs.items():
        trained_on = yaml.safe_load((run / "config.yaml").read_text())["data"]["train"]
        if selection in trained_on:
            raise ValueError(f"selection set {selection} is in the data.train of {run}; pick on a set the "
                             "students never trained on (e.g. ablate with a data.train that leaves it out)")
    reference = reference_scores(task, Path(teacher), folder / "pick",
                                 list(overrides or []) + [f"data.val={selection}"], limit, threads)
    conditions = list(reference)
    seeds: dict[int, dict[str, Any]] = {}
    for seed, stored in students.items():
        reports = condition_reports(cfg, stored["onnx"], clean, limit, threads)
        psnr = {c: report["mean"]["output"]["psnr"] for c, report in reports.items()}
        recovery = {c: gain_recovery(psnr[c], reference[c]["input"]["psnr"], reference[c]["fp32"]["psnr"])
                    for c in conditions}
        seeds[seed] = {"psnr": psnr, "mean_psnr": mean(psnr.values()), "gain_recovery": mean(recovery.values()),
                       "per_condition_recovery": recovery}
    best = max(seeds, key=lambda s: seeds[s]["gain_recovery"])
    return {"task": task, "variant": variant, "selection": selection, "images": reference[conditions[0]]["images"],
            "input": {c: reference[c]["input"]["psnr"] for c in conditions},
            "fp32": {c: reference[c]["fp32"]["psnr"] for c in conditions},
            "seeds": seeds, "seed": best, "run": str(runs[best]),
            "clean": clean_frames(cfg, students[best]["onnx"], clean, limit, threads)}


def clean_frames(cfg: dict[str, Any], model: str | Path, clean: Path, limit: int, threads: int) -> dict[str, Any]:
    """How ``model`` treats the set's photos given as they are: how many come back bit for bit, and which do not."""
    report = evaluate({**cfg, "task": "clean"}, model, clean_dir=clean, limit=limit, baseline=False, threads=threads,
                      progress=False)
    changed = [image["name"] for image in report["images"] if image["mse"] > 0]
    return {"images": len(report["images"]), "exact": len(report["images"]) - len(changed), "changed": changed,
            "psnr_pooled": report["psnr_pooled"], "changed_pixels": report["changed_pixels"]}


def compare_to_shipped(report: dict[str, Any], shipped: dict[str, Any], max_drop: float = MAX_DROP_DB
                       ) -> tuple[bool, str]:
    """Whether the picked student beats the shipped one's pick report on the same selection set, and why.

    Better means a higher mean PSNR over the degraded conditions, no condition more than ``max_drop`` dB
    below the shipped student's (a mean can buy one condition with another: auto_n2 gained on noise
    and lost 0.6-0.8 dB on haze on Kodak24) and at least as many clean photos passed bit for bit. A
    shipped report of another set or task, or without a clean count, is an error, not a pass.
    """
    if "clean" not in shipped:
        raise ValueError("the shipped pick report has no 'clean' block (made before pick counted clean photos), so "
                         "the gate cannot compare clean frames; rerun qdr-train pick --json on the shipped "
                         "student's ablation to rewrite it")
    same = ("task", "selection", "images")
    if any(report[k] != shipped.get(k) for k in same) or set(report["input"]) != set(shipped.get("input", {})):
        raise ValueError("the shipped pick report was made on another set or task ("
                         + ", ".join(f"{k} {shipped.get(k)!r} vs {report[k]!r}" for k in same)
                         + "); rerun qdr-train pick for the shipped model on the same set")
    picked, before_row = report["seeds"][report["seed"]], shipped["seeds"][str(shipped["seed"])]
    new, old = picked["mean_psnr"], before_row["mean_psnr"]
    ok = new > old
    lines = [f"picked seed {report['seed']}: mean PSNR {new:.3f} dB on {report['images']} images "
             f"of {report['selection']} against the shipped student's {old:.3f} dB ({new - old:+.3f}): "
             f"{'better' if ok else 'NOT better'}"]
    fell = {c: picked["psnr"][c] - before_row["psnr"][c] for c in picked["psnr"]
            if picked["psnr"][c] < before_row["psnr"][c] - max_drop}
    ok = ok and not fell
    lines.append(f"no condition more than {max_drop:.2f} dB below the shipped student's: "
                 + ("kept" if not fell else "FELL: " + ", ".join(f"{c} {d:+.2f} dB" for c, d in fell.items())))
    now, before = report["clean"], shipped["clean"]
    kept = now["exact"] >= before["exact"]
    lost = sorted(set(now["changed"]) - set(before["changed"]))
    lines.append(f"clean frames passed bit for bit: {now['exact']} of {now['images']} against the shipped "
                 f"student's {before['exact']} of {before['images']}: {'kept' if kept else 'FEWER'}"
                 + (f" (now changed: {', '.join(lost)})" if lost else ""))
    return ok and kept, "\n".join(lines)


def format_pick(report: dict[str, Any]) -> str:
    """Markdown: PSNR per condition for input, teacher and each seed, with each seed's gain recovery."""
    conditions = list(report["input"])
    lines = [f"### {report['task']} INT8 {report['variant']}: seed picked on {report['images']} images of "
             f"{report['selection']}", "",
             "| model | " + " | ".join(conditions) + " | mean | gain recovery |",
             "|---|" + "---|" * (len(conditions) + 2)]
    for name, psnr in (("degraded input", report["input"]), ("FP32 teacher", report["fp32"])):
        lines.append(f"| {name} | " + " | ".join(f"{psnr[c]:.2f}" for c in conditions)
                     + f" | {mean(psnr.values()):.2f} | |")
    for seed, row in sorted(report["seeds"].items()):
        mark = "**" if seed == report["seed"] else ""
        lines.append(f"| {mark}seed {seed}{mark} | " + " | ".join(f"{row['psnr'][c]:.2f}" for c in conditions)
                     + f" | {row['mean_psnr']:.2f} | {mark}{100 * row['gain_recovery']:.2f}%{mark} |")
    clean = report["clean"]
    lines += ["", f"Clean photos as input, seed {report['seed']}: {clean['exact']} of {clean['images']} come back "
              f"bit for bit (pooled PSNR {clean['psnr_pooled']:.2f} dB, {100 * clean['changed_pixels']:.3f}% of "
              "pixels changed)" + (f"; changed: {', '.join(clean['changed'])}" if clean["changed"] else "")]
    return "\n".join(lines) + "\n"
