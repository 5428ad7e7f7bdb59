"""Screen FP32 candidates before a release: the release gate's rules, applied to the teachers in minutes.

``scripts/release_auto.sh`` trains twelve INT8 students (about 40 minutes on the dev CPU) before its gate
(``qdr-train pick --against``) can refuse a teacher. The same rules on the FP32 models themselves, a
candidate against the shipped teacher on the same selection sets, show most refusals first: runs/auto_h8
led the shipped teacher by 0.18 dB on the first 34 CBSD68 photos, which a helper screened, but by 0.04 on
all 68, and its student lost haze on the COCO photos. A pass here is no release: the file a robot runs
is the INT8 student, and only the gate judges that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdr_train.config import load_config
from qdr_train.data.datasets import data_root
from qdr_train.release.pick import MAX_DROP_DB, check_untrained, holds, require_sets, set_scores


def screen(models: list[str], selection: str, also: list[str] | None = None, against: str | None = None,
           task: str = "auto", limit: int = 0, threads: int = 0) -> dict[str, Any]:
    """Score each model (and ``against``) on ``selection`` and each ``also`` set: PSNR per condition, clean frames.

    A model inside a run folder (a ``config.yaml`` beside it) may not have trained on a set it is screened on;
    a released model file keeps no record of its photos, so that check is the user's for it.
    """
    cfg = load_config(task)
    root = data_root(cfg["data"]["root"])
    sets = [selection, *(also or [])]
    require_sets(root, sets)
    everyone = ([against] if against else []) + [m for m in models if m != against]
    for model in everyone:
        if not Path(model).is_file():
            raise FileNotFoundError(f"model {model} not found: pass a model file (.pt, .onnx) or a run's model.pt")
    check_untrained([Path(m).parent for m in everyone if (Path(m).parent / "config.yaml").is_file()], root, sets)
    scores = {m: {name: set_scores(cfg, m, root / name, limit, threads) for name in sets} for m in everyone}
    return {"task": task, "selection": selection, "sets": sets, "against": against, "models": scores}


def verdicts(report: dict[str, Any], max_drop: float = MAX_DROP_DB) -> tuple[bool, str]:
    """Whether every candidate holds against ``report["against"]`` by the release gate's rules, and why."""
    reference = report["models"][report["against"]]
    ok, lines = True, []
    for model, scores in report["models"].items():
        if model == report["against"]:
            continue
        lines.append(f"{model} against {report['against']}:")
        for name in report["sets"]:
            where = f"{scores[name]['images']} images of {name}"
            kept, more = holds(scores[name], reference[name], where, name == report["selection"], max_drop,
                               whose="the --against model's")
            ok, lines = ok and kept, lines + [f"  {line}" for line in more]
    return ok, "\n".join(lines)


def format_screen(report: dict[str, Any]) -> str:
    """Markdown: per selection set, PSNR per condition, its mean and the clean photos passed, one row per model."""
    lines = []
    for name in report["sets"]:
        rows = {model: scores[name] for model, scores in report["models"].items()}
        first = next(iter(rows.values()))
        conditions = list(first["psnr"])
        lines += [f"### {report['task']} FP32 screen on {first['images']} images of {name}", "",
                  "| model | " + " | ".join(conditions) + " | mean | clean exact |",
                  "|---|" + "---|" * (len(conditions) + 2),
                  "| degraded input | " + " | ".join(f"{first['input'][c]:.2f}" for c in conditions) + " | | |"]
        for model, row in rows.items():
            mark = " (against)" if model == report["against"] else ""
            lines.append(f"| {model}{mark} | " + " | ".join(f"{row['psnr'][c]:.2f}" for c in conditions)
                         + f" | {row['mean_psnr']:.3f} | {row['clean']['exact']} of {row['clean']['images']} |")
        lines.append("")
    return "\n".join(lines)
