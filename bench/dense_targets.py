"""Measure the dense-task targets of issue 5 on the built-in street models (CPU, 2 threads).

    python bench/dense_targets.py [--n 32] [--only dynamic,static,...] [--json out.json]

Every figure is verified the way the executor verifies: the candidate is clipped to [0, 1], rounded
to 8 bits (only where the attack changed it, never past epsilon), re-run through the model, and the
objective's predicate decides on that re-run. Inputs: the first N test scenes the consequence applies
to (a pedestrian in the clean prediction for 'remove pedestrians', a person detection for vanishing).

Targets (Linf 8/255): dynamic 'remove pedestrians' >= 90 % of pedestrian pixels removed and >= 90 % of
the other pixels keep their clean label, image by image (universal variant: both on held-out scenes);
static target >= 80 % pixel agreement; detector vanishing >= 80 % of person detections gone.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from attackgen.models.zoo.dense_models import load_street_det, load_street_seg
from attackgen.models.zoo.scenes import CLASSES, PERSON, generate_scene, load_street_scenes
from attackgen.run.access import ScoreOracle, WhiteBoxAccess
from attackgen.run.attacks.base import Budget
from attackgen.run.attacks.detection import DetectionPGD, DetectorPatch
from attackgen.run.attacks.metzen import MetzenIterative, MetzenUniversal
from attackgen.run.attacks.square import SquareLinf
from attackgen.run.objectives import build_objective
from attackgen.run.objectives.segmentation import SegStatic
from taxonomy.spec import parse_spec

EPS = 8 / 255


def spec(task: str, consequence: dict[str, Any], scope: str = "individual") -> Any:
    return parse_spec({"name": "bench", "task": task, "classes": CLASSES,
                       "threat": {"consequence": consequence, "scope": scope,
                                  "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": EPS}],
                                  "model_knowledge": "white_box"}})


def verify(x: torch.Tensor, cand: torch.Tensor, eps: float | None = EPS) -> torch.Tensor:
    """Clip, quantise the changed elements to 8 bits (staying inside the ball), as the executor does."""
    cand = cand.clamp(0, 1)
    q = torch.round(cand * 255) / 255
    if eps is not None:
        q = torch.where(q > x + eps, q - 1 / 255, q)
        q = torch.where(q < x - eps, q + 1 / 255, q)
    changed = (cand - x).abs() > 1e-6
    return torch.where(changed, q, x).clamp(0, 1)


def batched(model: Any, x: torch.Tensor, size: int = 64) -> Any:
    with torch.no_grad():
        outs = [model(x[i : i + size]) for i in range(0, len(x), size)]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    first = outs[0]
    merged = first._like([d for o in outs for d in o])
    return merged


def summarise(metrics: dict[str, torch.Tensor], success: torch.Tensor, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(success.numel()), "success_rate": round(float(success.float().mean()), 4),
                           "seconds": round(seconds, 1)}
    for k, v in metrics.items():
        if k in ("applicable",):
            continue
        out[f"mean_{k}"] = round(float(v.float().mean()), 4)
        out[f"min_{k}"] = round(float(v.float().min()), 4)
    return out


def scenes_with_persons(split: str, n: int, seg: Any, det: Any | None = None, start: int = 0) -> Any:
    data = load_street_scenes(split, "segmentation" if det is None else "detection")
    if det is None:
        pred = batched(seg, data.x).argmax(1)
        ok = [i for i in range(len(data)) if int((pred[i] == PERSON).sum()) > 0]
    else:
        out = batched(det, data.x).kept()
        ok = [i for i in range(len(data)) if bool((out[i]["labels"] == PERSON).any())]
    return data.take(ok[start : start + n])


def dynamic(n: int) -> dict[str, Any]:
    model = load_street_seg()
    data = scenes_with_persons("test", n, model)
    clean = batched(model, data.x)
    obj = build_objective(spec("segmentation", {"kind": "dynamic_target", "remove_classes": ["person"]}), data.y, clean)
    t = time.perf_counter()
    attack = MetzenIterative(steps=60, step_size=1 / 255)
    cand = attack.run(WhiteBoxAccess(model, len(data)), data.x, obj, Budget(epsilon=EPS)).x_adv
    seconds = time.perf_counter() - t
    adv = batched(model, verify(data.x, cand))
    res = {"attack": "metzen_seg (60 steps, alpha 1/255)",
           **summarise(obj.metrics(clean, adv), obj.success(adv), seconds)}
    # Metzen's original loss (CE towards the nearest-fill label only), for comparison
    original = obj.configure(fill_weight=None)
    cand = MetzenIterative(steps=60, step_size=1 / 255).run(WhiteBoxAccess(model, len(data)), data.x, original,
                                                            Budget(epsilon=EPS)).x_adv
    adv = batched(model, verify(data.x, cand))
    m = obj.metrics(clean, adv)
    res["metzen_original_loss"] = {"success_rate": round(float(obj.success(adv).float().mean()), 4),
                                   "mean_removal_rate": round(float(m["removal_rate"].mean()), 4),
                                   "mean_background_preservation": round(float(m["background_preservation"].mean()), 4)}
    # the ceiling: removal alone, no background term, 200 steps
    free = obj.configure(background_weight=1 - 1e-9)
    cand = MetzenIterative(steps=200, step_size=2 / 255, final_step_size=0.1 / 255).run(
        WhiteBoxAccess(model, len(data)), data.x, free, Budget(epsilon=EPS)).x_adv
    m = obj.metrics(clean, batched(model, verify(data.x, cand)))
    share = round(float((m["removal_rate"] >= 0.9).float().mean()), 4)
    res["removal_only_ceiling"] = {"share_of_scenes_removal_ge_0.9": share,
                                   "mean_removal_rate": round(float(m["removal_rate"].mean()), 4)}
    res["curve"] = eps_curve(model, data.x, obj, clean, "removal_rate", steps=60)
    return res


def dynamic_figures(obj: Any, clean: torch.Tensor, adv: torch.Tensor) -> dict[str, Any]:
    """Success, mean removal and preservation, and the share of scenes meeting each criterion."""
    m = obj.metrics(clean, adv)
    removal, keep = m["removal_rate"], m["background_preservation"]
    return {"n": int(removal.numel()), "success_rate": round(float(obj.success(adv).float().mean()), 4),
            "mean_removal_rate": round(float(removal.mean()), 4),
            "mean_background_preservation": round(float(keep.mean()), 4),
            "share_removal_ge_0.9": round(float((removal >= 0.9).float().mean()), 4),
            "share_preservation_ge_0.9": round(float((keep >= 0.9).float().mean()), 4)}


def universal(n: int, fit: int = 1000, epochs: int = 10) -> dict[str, Any]:
    """One perturbation fitted on ``fit`` training scenes with pedestrians, measured held out and on the fit set."""
    model = load_street_seg()
    train = load_street_scenes("train", "segmentation", count=min(fit * 2, 4000))
    pred = batched(model, train.x).argmax(1)
    rows = [i for i in range(len(train)) if int((pred[i] == PERSON).sum()) > 0][:fit]
    train = train.take(rows)
    clean_fit = batched(model, train.x)
    s = spec("segmentation", {"kind": "dynamic_target", "remove_classes": ["person"]}, scope="universal")
    obj_fit = build_objective(s, train.y, clean_fit)
    test = scenes_with_persons("test", n, model)
    clean = batched(model, test.x)
    obj = build_objective(s, test.y, clean)
    res: dict[str, Any] = {"attack": f"metzen_uap ({epochs} epochs, batch 32, rel_stepsize 0.2 cosine to a tenth, "
                                     f"fit on {len(train)} training scenes with pedestrians)"}
    for e in (8, 16):
        eps = e / 255
        uap = MetzenUniversal(epochs=epochs, batch_size=32, rel_stepsize=0.2)
        t = time.perf_counter()
        uap.fit(WhiteBoxAccess(model, len(train)), train.x, obj_fit, Budget(epsilon=eps))
        seconds = time.perf_counter() - t
        held = batched(model, verify(test.x, uap.apply(test.x, Budget(epsilon=eps)), eps))
        fitted = batched(model, verify(train.x, uap.apply(train.x, Budget(epsilon=eps)), eps))
        res[f"{e}/255"] = {"heldout": dynamic_figures(obj, clean, held),
                           "fit_set": dynamic_figures(obj_fit, clean_fit, fitted),
                           "fit_seconds": round(seconds, 1),
                           "loss_per_epoch": [round(v, 5) for v in uap.info["loss_per_epoch"]]}
    return res


def print_universal(res: dict[str, Any]) -> None:
    """The universal figures as the table of docs/dense-tasks.md."""
    print(f"\nuniversal 'remove pedestrians': {res['attack']}")
    print("| epsilon | scenes | n | success (90/90) | mean removal | removal >= 0.9 | mean preservation "
          "| preservation >= 0.9 |\n|---|---|---|---|---|---|---|---|")
    for e in ("8/255", "16/255"):
        for where in ("heldout", "fit_set"):
            r = res[e][where]
            print(f"| {e} | {where.replace('_', ' ')} | {r['n']} | {r['success_rate']:.0%} "
                  f"| {r['mean_removal_rate']:.2f} "
                  f"| {r['share_removal_ge_0.9']:.0%} | {r['mean_background_preservation']:.2f} "
                  f"| {r['share_preservation_ge_0.9']:.0%} |")


class _MarginStatic(SegStatic):
    """Static target with a per-pixel logit margin, max_{c != t} z_c - z_t floored at -kappa (ablation)."""

    kappa = 2.0

    def pixel_loss(self, logp: torch.Tensor, tgt: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        target = logp.gather(1, tgt.unsqueeze(1)).squeeze(1)
        other = logp.scatter(1, tgt.unsqueeze(1), float("-inf")).amax(1)
        return (other - target).clamp_min(-self.kappa)


def resisting_pairs(clean_pred: torch.Tensor, target: torch.Tensor, adv_pred: torch.Tensor, min_share: float = 0.01
                    ) -> list[dict[str, Any]]:
    """For each (clean label -> target label) pair of the pixels that must change: their share and how many flipped."""
    differ = (clean_pred != target) & (target >= 0)
    total = int(differ.sum())
    rows = []
    for c in range(len(CLASSES)):
        for t in range(len(CLASSES)):
            m = differ & (clean_pred == c) & (target == t)
            count = int(m.sum())
            if c != t and count >= min_share * total:
                rows.append({"pair": f"{CLASSES[c]}->{CLASSES[t]}", "pixels": count,
                             "share_of_differing": round(count / max(total, 1), 3),
                             "flipped": round(float(((adv_pred == target) & m).sum()) / count, 3)})
    return sorted(rows, key=lambda r: -r["pixels"])


def static(n: int, target: str = "scene:101", steps: int = 200) -> dict[str, Any]:
    """Static target at 8, 12 and 16/255; which class pairs resist; loss and steps ablation at 8/255."""
    model = load_street_seg()
    data = load_street_scenes("test", "segmentation", count=n)
    clean = batched(model, data.x)
    obj = build_objective(spec("segmentation", {"kind": "static_target", "target_map": target}), data.y, clean)
    clean_pred = clean.argmax(1)
    res: dict[str, Any] = {"attack": f"metzen_seg static {target} ({steps} steps, cosine 2/255 -> 0.1/255; each "
                                     "input's last success, else its best-agreement iterate)",
                           "mean_clean_agreement": round(float(obj.metrics(clean, clean)["clean_agreement"].mean()), 4)}

    def attack(o: Any, eps: float, k: int = steps) -> tuple[torch.Tensor, float]:
        t = time.perf_counter()
        cand = MetzenIterative(steps=k, step_size=2 / 255, final_step_size=0.1 / 255).run(
            WhiteBoxAccess(model, len(data)), data.x, o, Budget(epsilon=eps)).x_adv
        return batched(model, verify(data.x, cand, eps)), time.perf_counter() - t

    def figures(adv: torch.Tensor, seconds: float) -> dict[str, Any]:
        agree = obj.metrics(clean, adv)["pixel_agreement"]
        return {"success_rate": round(float(obj.success(adv).float().mean()), 4),
                "mean_pixel_agreement": round(float(agree.mean()), 4),
                "min_pixel_agreement": round(float(agree.min()), 4),
                "seconds": round(seconds, 1)}

    pairs: dict[str, list[dict[str, Any]]] = {}
    for e in (8, 12, 16):
        adv, seconds = attack(obj, e / 255)
        res[f"{e}/255"] = figures(adv, seconds)
        pairs[f"{e}/255"] = resisting_pairs(clean_pred, obj.target, adv.argmax(1))
        if e == 8:
            keep = (clean_pred == obj.target) & (obj.target >= 0)
            res["already_agreeing_pixels_kept_8/255"] = round(float(((adv.argmax(1) == obj.target) & keep).sum()
                                                                    / keep.sum().clamp_min(1)), 4)
    # one table: each pair's share of the pixels that must change and the share flipped at each epsilon
    table = {row["pair"]: {"share_of_differing": row["share_of_differing"]} for row in pairs["8/255"]}
    for e, rows in pairs.items():
        for row in rows:
            if row["pair"] in table:
                table[row["pair"]][f"flipped_{e}"] = row["flipped"]
    res["class_pairs"] = table
    # the limit is the model: a longer run and another loss end at the same agreement
    ablation: dict[str, Any] = {}
    adv, seconds = attack(obj, EPS, k=5 * steps)
    ablation[f"{5 * steps} steps"] = figures(adv, seconds)
    margin = _MarginStatic(obj.target, obj.clean_pred, confidence_threshold=None, num_classes=obj.num_classes)
    adv, seconds = attack(margin, EPS)
    ablation[f"per-pixel logit margin (kappa 2), {steps} steps"] = figures(adv, seconds)
    res["ablation_8/255"] = ablation
    return res


def print_static(res: dict[str, Any]) -> None:
    """The static-target figures as the tables of docs/dense-tasks.md."""
    print(f"\nstatic target: {res['attack']}; clean agreement {res['mean_clean_agreement']:.2f}")
    print("| epsilon | success (>= 0.8) | mean agreement | min | seconds |\n|---|---|---|---|---|")
    for e in ("8/255", "12/255", "16/255"):
        r = res[e]
        print(f"| {e} | {r['success_rate']:.0%} | {r['mean_pixel_agreement']:.3f} | {r['min_pixel_agreement']:.3f} "
              f"| {r['seconds']:.0f} |")
    print("\n| clean -> target | share of the pixels to change | flipped 8/255 | 12/255 | 16/255 |")
    print("|---|---|---|---|---|")
    for pair, row in res["class_pairs"].items():
        cells = " | ".join(f"{row.get(f'flipped_{e}', float('nan')):.0%}" for e in ("8/255", "12/255", "16/255"))
        print(f"| {pair} | {row['share_of_differing']:.0%} | {cells} |")
    print("\n| ablation at 8/255 | success | mean agreement |\n|---|---|---|")
    for name, r in res["ablation_8/255"].items():
        print(f"| {name} | {r['success_rate']:.0%} | {r['mean_pixel_agreement']:.3f} |")


def eps_curve(model: Any, x: torch.Tensor, obj: Any, clean: Any, metric: str, steps: int = 100) -> dict[str, Any]:
    """Success rate and mean metric at larger epsilons (to show where a target becomes reachable)."""
    out = {}
    for e in (10, 12, 16):
        eps = e / 255
        cand = MetzenIterative(steps=steps, step_size=2 / 255, final_step_size=0.1 / 255).run(
            WhiteBoxAccess(model, len(x)), x, obj, Budget(epsilon=eps)).x_adv
        adv = batched(model, verify(x, cand, eps))
        out[f"{e}/255"] = {"success_rate": round(float(obj.success(adv).float().mean()), 4),
                           f"mean_{metric}": round(float(obj.metrics(clean, adv)[metric].mean()), 4)}
    return out


def confusing(n: int) -> dict[str, Any]:
    model = load_street_seg()
    data = load_street_scenes("test", "segmentation", count=n)
    clean = batched(model, data.x)
    s = spec("segmentation", {"kind": "confusing_target", "classes": ["car"], "shift": [6, 0]})
    obj = build_objective(s, data.y, clean)
    keep = obj.applicable.nonzero().squeeze(1)
    data, clean, obj = data.take(keep), clean[keep], obj.subset(keep)
    t = time.perf_counter()
    cand = MetzenIterative(steps=100, step_size=2 / 255, final_step_size=0.1 / 255).run(
        WhiteBoxAccess(model, len(data)), data.x, obj, Budget(epsilon=EPS)).x_adv
    seconds = time.perf_counter() - t
    adv = batched(model, verify(data.x, cand))
    return {"attack": "metzen_seg confusing (cars +6 px in x)",
            **summarise(obj.metrics(clean, adv), obj.success(adv), seconds)}


def square(n: int, queries: int = 5000) -> dict[str, Any]:
    model = load_street_seg()
    data = scenes_with_persons("test", min(n, 16), model)
    clean = batched(model, data.x)
    out: dict[str, Any] = {}
    for name, cons in (("untargeted", {"kind": "untargeted", "reference": "clean_prediction"}),
                       ("dynamic", {"kind": "dynamic_target", "remove_classes": ["person"]})):
        obj = build_objective(spec("segmentation", cons), data.y, clean)
        oracle = ScoreOracle(model, len(data), "probabilities", budget=queries)
        t = time.perf_counter()
        cand = SquareLinf(n_queries=queries, p_init=0.05).run(oracle, data.x, obj, Budget(epsilon=EPS)).x_adv
        seconds = time.perf_counter() - t
        adv = batched(model, verify(data.x, cand))
        out[name] = {"attack": f"square_linf ({queries} queries, probabilities)",
                     **summarise(obj.metrics(clean, adv), obj.success(adv), seconds),
                     "median_queries": float(oracle.queries.double().median())}
    return out


def vanishing(n: int) -> dict[str, Any]:
    model = load_street_det()
    data = scenes_with_persons("test", n, None, det=model)
    clean = batched(model, data.x)
    obj = build_objective(spec("detection", {"kind": "vanishing", "classes": ["person"]}), data.y, clean)
    t = time.perf_counter()
    cand = DetectionPGD(steps=50, step_size=1 / 255).run(
        WhiteBoxAccess(model, len(data)), data.x, obj, Budget(epsilon=EPS)).x_adv
    seconds = time.perf_counter() - t
    adv = batched(model, verify(data.x, cand))
    m = obj.metrics(clean, adv)
    res = {"attack": "det_vanishing PGD (50 steps, alpha 1/255)", **summarise(m, obj.success(adv), seconds)}
    res["person_detections_clean"] = int(m["clean_detections"].sum())
    res["person_detections_adversarial"] = int(m["adversarial_detections"].sum())
    res["fraction_gone"] = round(1 - res["person_detections_adversarial"] / max(res["person_detections_clean"], 1), 4)
    res["score_threshold"] = clean.score_threshold
    return res


def other_detection(n: int) -> dict[str, Any]:
    model = load_street_det()
    data = load_street_scenes("test", "detection", count=n)
    clean = batched(model, data.x)
    out = {}
    for name, cons in (("fabrication", {"kind": "fabrication", "classes": ["car"], "count": 1}),
                       ("mislabel", {"kind": "mislabel", "from_classes": ["car"], "to_class": "person"}),
                       ("untargeted", {"kind": "untargeted"})):
        obj = build_objective(spec("detection", cons), data.y, clean)
        keep = obj.applicable.nonzero().squeeze(1)
        sub_x, sub_clean, sub = data.x[keep], clean.take(keep), obj.subset(keep)
        t = time.perf_counter()
        cand = DetectionPGD(steps=100, step_size=2 / 255, final_step_size=0.1 / 255).run(
            WhiteBoxAccess(model, len(keep)), sub_x, sub, Budget(epsilon=EPS)).x_adv
        seconds = time.perf_counter() - t
        adv = batched(model, verify(sub_x, cand))
        out[name] = {"attack": "det_vanishing PGD (100 steps, cosine 2/255 -> 0.1/255)",
                     **summarise(sub.metrics(sub_clean, adv), sub.success(adv), seconds)}
    return out


def patch(n: int, fit: int = 800, steps: int = 1000, area: float = 0.04) -> dict[str, Any]:
    model = load_street_det()
    train = scenes_with_persons("train", fit, None, det=model)
    clean_fit = batched(model, train.x)
    s = spec("detection", {"kind": "vanishing", "classes": ["person"]}, scope="universal")
    obj_fit = build_objective(s, train.y, clean_fit)
    attack = DetectorPatch(steps=steps, batch_size=16, eot_samples=2, area_fraction=area, stepsize=0.05)
    none = Budget(norm=None, epsilon=None)
    t = time.perf_counter()
    attack.fit(WhiteBoxAccess(model, len(train)), train.x, obj_fit, none)
    seconds = time.perf_counter() - t
    test = scenes_with_persons("test", n, None, det=model)
    clean = batched(model, test.x)
    obj = build_objective(s, test.y, clean)
    res: dict[str, Any] = {"attack": f"det_patch ({steps} steps, EOT, area {area:.0%}, fit on {len(train)} scenes)",
                           "fit_seconds": round(seconds, 1)}
    for name, x_adv in (("patch", attack.apply(test.x, none)), ("random_patch_control",  # same places
                                                               attack.occlusion_control(test.x, none))):
        adv = batched(model, verify(test.x, x_adv, eps=None))
        m = obj.metrics(clean, adv)
        res[name] = {"success_rate": round(float(obj.success(adv).float().mean()), 4),
                     "fraction_gone": round(1 - float(m["adversarial_detections"].sum())
                                            / max(float(m["clean_detections"].sum()), 1), 4),
                     "other_classes_kept": round(float(m["other_classes_kept"].mean()), 4)}
    return res


EXPERIMENTS = {"dynamic": dynamic, "universal": universal, "static": static, "confusing": confusing,
               "square": square, "vanishing": vanishing, "detection": other_detection, "patch": patch}

PRINTERS = {"static": print_static, "universal": print_universal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="scenes per experiment")
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    results = {}
    for name in args.only.split(","):
        start = time.perf_counter()
        results[name] = EXPERIMENTS[name](args.n)
        print(f"== {name} ({time.perf_counter() - start:.0f} s)\n{json.dumps(results[name], indent=1)}", flush=True)
        if name in PRINTERS:
            PRINTERS[name](results[name])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    _ = generate_scene  # the scenes are generated on the fly; nothing is downloaded
    main()
