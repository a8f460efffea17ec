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

from attackgen.access import ScoreOracle, WhiteBoxAccess
from attackgen.attacks.base import Budget
from attackgen.attacks.detection import DetectionPGD, DetectorPatch
from attackgen.attacks.metzen import MetzenIterative, MetzenUniversal
from attackgen.attacks.square import SquareLinf
from attackgen.objectives import build_objective
from attackgen.zoo.dense_models import load_street_det, load_street_seg
from attackgen.zoo.scenes import CLASSES, PERSON, generate_scene, load_street_scenes
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


def universal(n: int, fit: int = 1000, epochs: int = 10) -> dict[str, Any]:
    model = load_street_seg()
    train = load_street_scenes("train", "segmentation", count=min(fit * 2, 4000))
    pred = batched(model, train.x).argmax(1)
    rows = [i for i in range(len(train)) if int((pred[i] == PERSON).sum()) > 0][:fit]
    train = train.take(rows)
    clean_fit = batched(model, train.x)
    s = spec("segmentation", {"kind": "dynamic_target", "remove_classes": ["person"]}, scope="universal")
    obj_fit = build_objective(s, train.y, clean_fit)
    uap = MetzenUniversal(epochs=epochs, batch_size=32, rel_stepsize=0.2)
    t = time.perf_counter()
    uap.fit(WhiteBoxAccess(model, len(train)), train.x, obj_fit, Budget(epsilon=EPS))
    seconds = time.perf_counter() - t
    test = scenes_with_persons("test", n, model)
    clean = batched(model, test.x)
    obj = build_objective(s, test.y, clean)
    adv = batched(model, verify(test.x, uap.apply(test.x, Budget(epsilon=EPS))))
    held = summarise(obj.metrics(clean, adv), obj.success(adv), seconds)
    fit_adv = batched(model, verify(train.x, uap.apply(train.x, Budget(epsilon=EPS))))
    fit_metrics = obj_fit.metrics(clean_fit, fit_adv)
    wide = MetzenUniversal(epochs=epochs, batch_size=32, rel_stepsize=0.2)
    wide.fit(WhiteBoxAccess(model, len(train)), train.x, obj_fit, Budget(epsilon=16 / 255))
    adv16 = batched(model, verify(test.x, wide.apply(test.x, Budget(epsilon=16 / 255)), 16 / 255))
    m16 = obj.metrics(clean, adv16)
    held["at_16/255"] = {"success_rate": round(float(obj.success(adv16).float().mean()), 4),
                         "mean_removal_rate": round(float(m16["removal_rate"].mean()), 4),
                         "mean_background_preservation": round(float(m16["background_preservation"].mean()), 4)}
    return {"attack": f"metzen_uap ({epochs} epochs on {len(train)} training scenes)", "heldout": held,
            "fit_mean_removal_rate": round(float(fit_metrics["removal_rate"].mean()), 4),
            "fit_mean_background_preservation": round(float(fit_metrics["background_preservation"].mean()), 4),
            "loss_per_epoch": [round(v, 5) for v in uap.info["loss_per_epoch"]]}


def static(n: int, target: str = "scene:101") -> dict[str, Any]:
    model = load_street_seg()
    data = load_street_scenes("test", "segmentation", count=n)
    clean = batched(model, data.x)
    obj = build_objective(spec("segmentation", {"kind": "static_target", "target_map": target}), data.y, clean)
    t = time.perf_counter()
    cand = MetzenIterative(steps=200, step_size=2 / 255, final_step_size=0.1 / 255).run(
        WhiteBoxAccess(model, len(data)), data.x, obj, Budget(epsilon=EPS)).x_adv
    seconds = time.perf_counter() - t
    adv = batched(model, verify(data.x, cand))
    res = {"attack": f"metzen_seg static {target} (200 steps, cosine 2/255 -> 0.1/255)",
           **summarise(obj.metrics(clean, adv), obj.success(adv), seconds)}
    # which pixels resist: those whose clean label differs from the target
    differ = (clean.argmax(1) != obj.target)
    flipped = ((adv.argmax(1) == obj.target) & differ).sum() / differ.sum().clamp_min(1)
    res["share_of_differing_pixels_flipped"] = round(float(flipped), 4)
    res["curve"] = eps_curve(model, data.x, obj, clean, "pixel_agreement", steps=200)
    return res


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
        out[name] = {"attack": "det_vanishing PGD (100 steps, cosine 2/255 -> 0.1/255)", **summarise(sub.metrics(sub_clean, adv),
                                                                             sub.success(adv), seconds)}
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
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    _ = generate_scene  # the scenes are generated on the fly; nothing is downloaded
    main()
