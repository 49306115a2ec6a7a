"""Detection experiments: what ``idlsec detect`` and ``benchmarks/defenses.yaml`` run.

Protocol (one seeded run):
1. Benign images: 3·n_benign test images in a seeded order (misclassified ones included), three
   disjoint parts: *fit* trains the learned combinations (and the Mahalanobis class statistics),
   *calibrate* sets every threshold at ``fpr``, *report* gives the AUROC, the TPR at ``fpr`` and
   the FPR actually measured at the calibrated threshold.
2. Attacked images: 2·n other test images the model classifies correctly (train and test
   halves), each with a seeded random target class. Every attack runs on both halves (crafted
   sets are reused from ``cache_dir`` when given).
3. Protocol "unseen" (detector ``ensemble``): the logistic combination is trained on benign-fit vs
   the ``train_attacks``' examples of the train half (the benchmark: PGD, ``pgd-weak`` = PGD with
   eps/4 and two eps/8 steps, whose examples sit near the decision boundary, and ADV^2); every
   attack is scored on the test half.
   Protocol "seen" (``seen_detector``, detector ``ensemble-seen``): trained on the train half of
   every attack (known attack families, held-out images). Only successful adversarial examples
   count as positives.
4. Optionally (``adaptive``) ADV^2/AdvEdge(+) are re-run on the test half against the fitted
   ensemble (``ensemble-seen`` when there is one: all its interpreters and its score) and against
   feature squeezing.

Protocol "lofo" (``protocol="lofo"``, the suite's): leave-one-family-out, fitted, calibrated and
trained (PGD family only) on the validation split, reported on test; see ``detection_lofo``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data import load_dataset_for
from ..defenses import EnsembleDetector, FeatureSqueezing
from ..defenses.adaptive import make_adaptive
from ..defenses.detector import ENSEMBLE_SQUEEZERS
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..metrics import map_l1, topk_iou_curve
from ..metrics.detection import detection_summary
from ..models import load_model
from ..spec import AttackSpec, build_attack, model_card
from .detection_lofo import IDLS_ATTACKS, check_lofo, run_lofo_job

UNTARGETED = ("pgd", "pgd-weak", "quscore")


@dataclass
class DetectionJob:
    model: str = "cifar10-resnet20"
    interpreters: tuple = ("cam", "gradcam", "grad")
    attacks: tuple = ("pgd", "adv2", "advedge", "advedge+")
    train_attacks: tuple = ("pgd", "adv2")
    attack_interpreter: str = "cam"        # the interpreter the IDLS attacks target
    n: int = 64                            # attacked images per half
    n_benign: int = 200                    # benign images per half
    fpr: float = 0.05
    eps: float = 8 / 255
    steps: int | None = None               # IDLS joint-stage steps (None: the attack's default)
    warmup_steps: int | None = None
    pgd_steps: int = 10
    quscore_queries: int = 1000
    adaptive: bool = False
    adaptive_n: int | None = None          # test images for the adaptive attacks (default n)
    adaptive_steps: int | None = None
    adaptive_attacks: tuple | None = None  # default: every IDLS attack among ``attacks``
    features_out: str | None = None        # save every feature matrix here (.safetensors) for analysis
    cache_dir: str | None = None           # reuse/save the crafted (non-adaptive) adversarial sets here
    seen_detector: bool = False            # also an "ensemble-seen" detector trained on every attack's train half
    protocol: str = "halves"               # "halves" (below) or "lofo": fit/calibrate/train on val, PGD family only
    adaptive_detectors: tuple | None = None  # lofo: the detectors the adaptive attacker descends
    harden: bool = False                   # lofo: also ensemble-hardened, refitted on adaptive examples (val)
    harden_n: int | None = None            # lofo: validation images for the hardening examples (default n)
    harden_attacks: tuple = ("adv2",)      # lofo: the adaptive attacks that make them
    harden_detector: str = "ensemble"      # lofo: the detector refitted on them (a registered name)
    harden_rounds: int = 1                 # lofo: refit rounds, the attacker re-aiming at each refit
    detectors: tuple = ()                  # lofo: further registered detectors (defenses.get_detector)
    adaptive_eot: int = 1                  # lofo: draws of a random detector's score per attack step
    squeezers: tuple = ENSEMBLE_SQUEEZERS  # the ensemble's squeezers
    reference_squeezers: tuple = ("bits:5", "median:3")  # feature squeezing, the reference point
    l2: float = 1e-2                       # the logistic combination's L2 penalty
    time_cap: float | None = None          # seconds: past it, no new attack is started (but the train_attacks)
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    dataset: str | None = None             # default: the model's
    weights: str | None = None
    model_options: dict = field(default_factory=dict)   # load_model options the user set
    data_options: dict = field(default_factory=dict)    # load_dataset options the user set
    params: dict = field(default_factory=dict)

    def config(self) -> dict:
        return asdict(self)


def _check(job: DetectionJob):
    card = model_card(job.model, **job.model_options)
    if job.dataset and card.dataset and not job.dataset.startswith("folder:") and job.dataset != card.dataset:
        raise ConfigError(f"model {job.model} is trained on {card.dataset}, not {job.dataset}")
    if not job.attacks:
        raise ConfigError("give at least one attack")
    for a in job.train_attacks:
        if a not in job.attacks:
            raise ConfigError(f"train attack {a!r} is not among the attacks {list(job.attacks)}")
    for name in ("n", "n_benign"):
        if getattr(job, name) < 2:
            raise ConfigError(f"{name} must be >= 2, got {getattr(job, name)}")
    if not 0 < job.fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {job.fpr}")
    if job.time_cap is not None and not job.time_cap >= 0:
        raise ConfigError(f"time_cap must be >= 0 seconds, got {job.time_cap}")
    if job.protocol not in ("halves", "lofo"):
        raise ConfigError(f"protocol must be 'halves' or 'lofo', got {job.protocol!r}")
    if job.protocol == "lofo":
        check_lofo(job)
    elif job.harden or job.adaptive_detectors:
        raise ConfigError("harden and adaptive_detectors need protocol: lofo")


def _images(dataset, model, job, log=print):
    """Disjoint benign (3·n_benign, any: fit / calibrate / report) and attacked (2·n, correctly
    classified: train / test) images; returns (xb, xa, ya, targets, attack_idx)."""
    gen = torch.Generator().manual_seed(job.seed)
    order = torch.randperm(len(dataset), generator=gen)
    nb = 3 * job.n_benign
    benign_idx, rest = order[:nb], order[nb:]
    kept, labels, count, examined, k = [], [], 0, 0, dataset.num_classes
    for s in range(0, len(rest), 512):
        idx = rest[s:s + 512]
        x, y = dataset.get(idx)
        with torch.no_grad():
            logits = model(x.to(job.device))
        k, pred = int(logits.shape[1]), logits.argmax(1).cpu()
        if not dataset.labeled:  # unlabeled images: the prediction is the label
            y = pred
        kept.append(idx[pred == y])
        labels.append(y[pred == y])
        count += len(kept[-1])
        examined += len(idx)
        if count >= 2 * job.n:
            break
    attack_idx = torch.cat(kept)[:2 * job.n] if kept else torch.zeros(0, dtype=torch.long)
    job_images = (f"{len(dataset)} images of {dataset.name}: {len(benign_idx)} benign (of "
                  f"{nb} wanted), {count} of {examined} others correctly classified (of {2 * job.n} "
                  "wanted for the attacks)" + ("" if dataset.labeled else
                                                "; labels are the model's predictions"))
    log(f"images: {job_images}")
    if len(attack_idx) < 2 * job.n or len(benign_idx) < nb:
        raise ConfigError(f"not enough test images for this n / n_benign: {job_images}; the "
                          "detector needs 3*n_benign benign images and 2*n correctly classified "
                          "ones (lower --n-benign / --n)")
    xb, _ = dataset.get(benign_idx)
    xa, _ = dataset.get(attack_idx)
    ya = torch.cat(labels)[:2 * job.n]
    targets = (ya + torch.randint(1, k, (len(ya),), generator=gen)) % k
    return xb, xa, ya, targets, attack_idx


def _attack(name, model, interp, x, y, t, job, *, detector=None, adaptive=False, **extra):
    """Run one attack in batches; returns (x_adv, success, iou, map_l1) on the CPU."""
    p = dict(job.params.get(name, {}))
    spec = None
    common = {"model": job.model, "model_options": dict(job.model_options), "weights": job.weights,
              "interpreter": job.attack_interpreter, "seed": job.seed, "device": job.device}
    if name in IDLS_ATTACKS:
        steps = job.adaptive_steps if adaptive and job.adaptive_steps is not None else job.steps
        if steps is not None:
            p.setdefault("steps", steps)
        if job.warmup_steps is not None:
            p.setdefault("warmup_steps", job.warmup_steps)
        labels = t
        if adaptive:  # the detector-aware variants live with the defenses
            atk = make_adaptive(name, model, interp, detector=detector, eps=job.eps, seed=job.seed, **{**p, **extra})
        else:
            spec = AttackSpec(**common, attack=name, params=p,
                              eps=job.eps, targeted=True)
    elif name in ("pgd", "pgd-weak"):
        # pgd-weak: near-boundary training examples (eps/4, two eps/8 steps)
        eps, p = (job.eps, {"steps": job.pgd_steps, **p}) if name == "pgd" else \
            (job.eps / 4, {"alpha": job.eps / 8, "steps": 2, **p})
        spec = AttackSpec(**common, attack="pgd", params=p, eps=eps,
                          targeted=False)
        labels = y
    elif name == "quscore":
        surrogate = "cifar10-resnet32" if job.model != "cifar10-resnet32" else "cifar10-resnet20"
        spec = AttackSpec(**common, attack="quscore", params=p,
                          eps=job.eps, targeted=False, surrogates=(surrogate,),
                          max_queries=job.quscore_queries)
        labels = y
    else:
        raise ConfigError(f"the detection benchmark does not know how to run attack {name!r}; valid: "
                          f"pgd, pgd-weak, quscore, {', '.join(IDLS_ATTACKS)}")
    if spec is not None:
        atk = build_attack(spec, model=model, interpreter=interp)
    outs = []
    for s in range(0, x.shape[0], job.batch_size):
        sl = slice(s, s + job.batch_size)
        r = atk.run(x[sl].to(job.device), labels[sl].to(job.device))
        iou = topk_iou_curve(r.adv_map, r.benign_map).mean(1) if r.adv_map is not None else torch.full((len(r),), float("nan"))
        l1 = map_l1(r.adv_map, r.benign_map) if r.adv_map is not None else torch.full((len(r),), float("nan"))
        outs.append((r.x_adv.cpu(), r.success.cpu(), iou.cpu(), l1.cpu()))
    return tuple(torch.cat([o[i] for o in outs]) for i in range(4))


def _cache_path(job, name, half, idx):
    """A file name keyed by everything that determines the crafted set (attack settings, images)."""
    import hashlib
    import json

    key = {k: getattr(job, k) for k in ("model", "attack_interpreter", "eps", "steps", "warmup_steps",
                                          "pgd_steps", "quscore_queries", "seed", "batch_size")}
    key["params"] = job.params.get(name, {})
    for k in ("dataset", "weights", "model_options", "data_options"):  # when set (older keys kept)
        if getattr(job, k):
            key[k] = getattr(job, k)
    digest = hashlib.sha256((json.dumps(key, sort_keys=True, default=str) + str(idx.tolist())).encode())
    return Path(job.cache_dir) / f"{name}-{half}-{digest.hexdigest()[:12]}.safetensors"


def craft(name, model, interp, x, y, t, job, idx, half):
    """``_attack`` through the adversarial-set cache (``job.cache_dir``) when there is one."""
    if job.cache_dir is None:
        return _attack(name, model, interp, x, y, t, job)
    from safetensors.torch import load_file, save_file

    path = _cache_path(job, name, half, idx)
    if path.is_file():
        d = load_file(str(path))
        return d["x_adv"], d["success"].bool(), d["iou"], d["map_l1"]
    out = _attack(name, model, interp, x, y, t, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"x_adv": out[0].contiguous(), "success": out[1].to(torch.uint8), "iou": out[2].float(),
               "map_l1": out[3].float(), "idx": idx}, str(tmp))
    tmp.replace(path)
    return out


def run_detection_job(job: DetectionJob, *, log=print, on_rows=None) -> dict:
    """Run the protocol; returns {"config", "rows", "coefficients", "seconds", ...}.

    ``on_rows(partial_result)`` is called whenever rows were added (a benchmark writes its table
    there, so a run stopped by ``job.time_cap`` or killed keeps what it measured). Past
    ``time_cap`` seconds no new attack is started (except the training attacks, which the
    detector needs and reports first); the result says what was skipped."""
    _check(job)
    if job.protocol == "lofo":
        return run_lofo_job(job, craft=craft, attack=_attack, log=log, on_rows=on_rows)
    start = time.perf_counter()
    over = (lambda: job.time_cap is not None and time.perf_counter() - start > job.time_cap)
    torch.manual_seed(job.seed)
    model = load_model(job.model, weights=job.weights, device=job.device, **job.model_options)
    dataset = load_dataset_for(model, job.dataset or model.card.dataset, "test", **job.data_options)
    xb, xa, ya, ta, idx = _images(dataset, model, job, log)
    nb, n = job.n_benign, job.n
    interp = get_interpreter(job.attack_interpreter, model)
    det = EnsembleDetector(model, list(job.interpreters), squeezers=list(job.squeezers), l2=job.l2)
    fs = FeatureSqueezing(model, squeezers=list(job.reference_squeezers))
    log(f"features of {3 * nb} benign images")
    fb = det.features(xb)
    fb_fit, fb_cal, fb_test = fb[:nb], fb[nb:2 * nb], fb[2 * nb:]
    sb_fs = fs.score(xb)
    fs.calibrate(sb_fs[nb:2 * nb], job.fpr)
    skipped: list[str] = []
    crafted: dict[str, list] = {}
    halves = {"train": (slice(0, n), "train"), "test": (slice(n, 2 * n), "test")}

    def make(name, half):
        sl, key = halves[half]
        t0 = time.perf_counter()
        r = craft(name, model, interp, xa[sl], ya[sl], ta[sl], job, idx[sl], key)
        f = det.features(r[0])
        log(f"{name} ({half}): {time.perf_counter() - t0:.1f}s, ASR {float(r[1].float().mean()):.2f}")
        return r, f

    # train halves first: the combinations are fitted before any test row is reported; the
    # training attacks always run, the time cap only drops the others
    for name in job.attacks:
        needed = name in job.train_attacks or job.seen_detector
        if over() and name not in job.train_attacks:
            skipped.append(f"{name} (time cap)")
            continue
        crafted[name] = [make(name, "train") if needed else None, None]
    attacks = [a for a in job.attacks if a in crafted]
    train_attacks = list(job.train_attacks)

    def positives(names):
        return torch.cat([crafted[a][0][1][crafted[a][0][0][1].bool()] for a in names])

    det.fit_features(fb_fit, positives(train_attacks), fpr=job.fpr, f_calib=fb_cal)
    det_seen = None
    if job.seen_detector:
        det_seen = EnsembleDetector(model, list(det.interpreters.values()), squeezers=list(job.squeezers),
                                    l2=job.l2)
        det_seen.fit_features(fb_fit, positives(attacks), fpr=job.fpr, f_calib=fb_cal)
    base = EnsembleDetector.__new__(EnsembleDetector)
    base.__dict__.update(det.__dict__)
    base.score_kind = "disagreement"
    rows: list[dict] = []

    def result():
        return {"config": job.config(), "rows": rows, "coefficients": det.coefficients(),
                "coefficients_seen": det_seen.coefficients() if det_seen is not None else {},
                "threshold": det.threshold, "squeeze_threshold": fs.threshold, "skipped": skipped,
                "seconds": round(time.perf_counter() - start, 1)}

    def add_rows(attack, x_adv, success, iou, l1, f_adv, adaptive_against=None):
        ok = success.bool()
        row = {"attack": attack, "n": len(success), "asr": float(ok.float().mean()),
               "iou": float(iou[ok].nanmean()) if ok.any() else None,
               "map_l1": float(l1[ok].nanmean()) if ok.any() else None,
               "trained_on": attack in train_attacks, "adaptive": adaptive_against is not None}
        if not ok.any():
            rows.append({**row, "detector": "-"})
            return
        dets = {"ensemble": (det.score_features(fb_test), det.score_features(f_adv[ok]), det.threshold)}
        if det.pairs:  # the disagreement baseline needs two interpreters
            dets["disagreement"] = (base.score_features(fb_test), base.score_features(f_adv[ok]), None)
        dets["squeeze"] = (sb_fs[2 * nb:], fs.score(x_adv[ok]), fs.threshold)
        if det_seen is not None:
            dets["ensemble-seen"] = (det_seen.score_features(fb_test), det_seen.score_features(f_adv[ok]),
                                     det_seen.threshold)
        if adaptive_against is not None:
            dets = {adaptive_against: dets[adaptive_against]}
        for dname, (sb, sa, thr) in dets.items():
            trained = {"trained_on": (dname == "ensemble-seen" and not row["adaptive"])
                       or (dname == "ensemble" and row["trained_on"])}
            rows.append({**row, **trained, "detector": dname,
                         **detection_summary(sb, sa, fpr=job.fpr, threshold=thr)})

    for name in attacks:
        if over() and name not in train_attacks:
            skipped.append(f"{name} test half (time cap)")
            continue
        crafted[name][1] = make(name, "test")
        add_rows(name, *crafted[name][1][0], crafted[name][1][1])
        if on_rows is not None:
            on_rows(result())
    if job.features_out:
        from safetensors.torch import save_file

        tensors = {"benign": fb, "squeeze_benign": sb_fs}
        for name, parts in crafted.items():
            for half, part in zip(("train", "test"), parts):
                if part is not None:
                    tensors[f"{name}.{half}"], tensors[f"{name}.{half}.success"] = part[1], part[0][1].to(torch.uint8)
        save_file({k: v.contiguous() for k, v in tensors.items()}, job.features_out,
                  metadata={"feature_names": ";".join(det.feature_names)})
    if job.adaptive:
        m = job.adaptive_n or n
        xs, ys, ts = xa[n:n + m], ya[n:n + m], ta[n:n + m]
        chosen = job.adaptive_attacks if job.adaptive_attacks is not None else job.attacks
        target = ("ensemble-seen", det_seen) if det_seen is not None else ("ensemble", det)
        for name in [a for a in chosen if a in IDLS_ATTACKS]:
            for dname, d in (target, ("squeeze", fs)):
                if over():
                    skipped.append(f"adaptive-{name} vs {dname} (time cap)")
                    continue
                t0 = time.perf_counter()
                r = _attack(name, model, interp, xs, ys, ts, job, detector=d, adaptive=True)
                add_rows(f"adaptive-{name}", *r, det.features(r[0]), adaptive_against=dname)
                log(f"adaptive-{name} vs {dname}: {time.perf_counter() - t0:.1f}s")
                if on_rows is not None:
                    on_rows(result())
    return result()
