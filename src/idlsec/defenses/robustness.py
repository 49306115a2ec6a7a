"""Robustness evaluation of a classifier and of the IDLS built on it: AutoAttack-grade robust
accuracy plus the interpretation attacks' success and the map similarity they keep.

- :func:`autoattack_accuracy`: the standard AutoAttack ensemble (Croce & Hein, ICML 2020):
  APGD-CE, APGD-T (9 target classes), FAB-T, Square (5,000 queries), each run only on the points
  every earlier attack failed on, through torchattacks' implementations (``torchattacks`` is the
  ``robustness`` extra). ``version="standard"`` uses the reference settings (100 iterations,
  one restart, 5,000 Square queries); ``version="fast"`` keeps the same four attacks with
  ``steps``/``queries`` reduced for CPU budgets and is labelled as such in every record (it is an
  upper bound on the standard figure, not the standard figure).
- :func:`pgd_accuracy`: untargeted PGD-k with a random start (Madry et al., 2018), the figure
  most training papers quote beside AutoAttack.
- the interpretation attacks beside them: :func:`idlsec.bench.robustness.idls_attack_summary`
  (in the experiment layer, since it builds attacks from specs).
- :func:`evaluate_robustness`: all of the above for one model, the unit of ``idlsec robustness``.

Every figure is on the first ``n`` images of a seeded permutation of the test split (not only the
correctly classified ones: robust accuracy counts a misclassified clean image as a failure, as
RobustBench does)."""

from __future__ import annotations

import time

import torch

from ..errors import ConfigError, ResourceError
from ..validation import check_choice, check_int, check_positive

AA_VERSIONS = ("standard", "fast")


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - torchattacks is in the dev and robustness extras
        raise ResourceError("AutoAttack needs torchattacks: pip install 'idlsec[robustness]'") from e
    return torchattacks


def autoattack_components(model, *, eps: float, version: str = "standard", steps: int | None = None,
                          queries: int | None = None, n_classes: int = 10, seed: int = 0) -> list:
    """The four attacks of standard AutoAttack as ``(name, attack)`` pairs (torchattacks)."""
    ta = _torchattacks()
    check_choice("version", version, AA_VERSIONS)
    steps = 100 if steps is None else check_int("steps", steps, minimum=1)
    queries = 5000 if queries is None else check_int("queries", queries, minimum=1)
    if version == "standard" and (steps != 100 or queries != 5000):
        raise ConfigError("version='standard' is AutoAttack's reference setting (100 steps, 5000 "
                          "queries); use version='fast' to change them")
    return [
        ("apgd-ce", ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)),
        ("apgd-t", ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=n_classes,
                            seed=seed)),
        ("fab-t", ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                         n_classes=n_classes, seed=seed)),
        ("square", ta.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, seed=seed)),
    ]


@torch.no_grad()
def _correct(model, x, y, batch_size):
    return torch.cat([model(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]
                      for s in range(0, x.shape[0], batch_size)])


def autoattack_accuracy(model, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                        version: str = "standard", steps: int | None = None, queries: int | None = None,
                        batch_size: int = 256, seed: int = 0, log=None, per_image: bool = False) -> dict:
    """Robust accuracy under AutoAttack on (x, y): the share of images that every attack of the
    ensemble fails on (and that are correct clean). Returns clean and robust accuracy, the robust
    accuracy after each attack, and the seconds each took; ``per_image``: also ``"correct"``,
    per attack the list of images still correctly classified after it (``"clean"`` first)."""
    check_positive("eps", eps, upper=1.0)
    model.eval()
    robust = _correct(model, x, y, batch_size)
    n = x.shape[0]
    out = {"n": n, "eps": eps, "version": version, "clean_accuracy": float(robust.float().mean()),
           "after": {}, "seconds": {}}
    n_classes = int(model(x[:1]).shape[1])
    comps = autoattack_components(model, eps=eps, version=version, steps=steps, queries=queries,
                                  n_classes=n_classes, seed=seed)
    out["steps"], out["queries"] = comps[0][1].steps, comps[3][1].n_queries
    if per_image:
        out["correct"] = {"clean": robust.tolist()}
    for name, atk in comps:
        start = time.perf_counter()
        idx = robust.nonzero().flatten()
        for s in range(0, idx.numel(), batch_size):
            b = idx[s:s + batch_size]
            x_adv = atk(x[b], y[b]).clamp(x[b] - eps, x[b] + eps).clamp(0, 1)
            robust[b] = _correct(model, x_adv, y[b], batch_size)
        out["after"][name] = float(robust.float().mean())
        out["seconds"][name] = round(time.perf_counter() - start, 2)
        if per_image:
            out["correct"][name] = robust.tolist()
        if log is not None:
            log(f"  AutoAttack ({version}) after {name}: robust accuracy {out['after'][name]:.3f} "
                f"({out['seconds'][name]:.1f} s)")
    out["robust_accuracy"] = float(robust.float().mean())
    return out


def pgd_accuracy(model, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, steps: int = 20,
                 alpha: float = 2 / 255, batch_size: int = 256, seed: int = 0, per_image: bool = False) -> dict:
    """Clean accuracy and accuracy under untargeted PGD-``steps`` (random start, step ``alpha``;
    Madry et al., 2018). The one PGD robust-accuracy function of idlsec (training cards, suites,
    ``idlsec robustness``, benchmarks/robust_zoo.py).

    Rule: an image counts as robust only if it is classified correctly both clean and after the
    attack (RobustBench's rule, as in :func:`autoattack_accuracy`: the clean image is itself a
    point of the eps-ball, so a clean mistake is an adversarial example), hence
    ``robust_accuracy <= clean_accuracy`` always. Defaults: eps 8/255, 20 steps of 2/255 (training
    cards quote ``steps=10``). ``per_image``: also the lists ``"clean_correct"`` and
    ``"robust_correct"``. The model is evaluated in eval mode and left in the mode it was in."""
    from ..attacks import PGD

    check_positive("eps", eps, upper=1.0)
    atk = PGD(model, eps=eps, alpha=alpha, steps=check_int("steps", steps, minimum=1), random_start=True,
              seed=seed)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    clean = _correct(model, x, y, batch_size)
    robust = torch.cat([_correct(model, atk(x[s:s + batch_size], y[s:s + batch_size]), y[s:s + batch_size],
                                 batch_size) for s in range(0, x.shape[0], batch_size)]) & clean
    model.train(was_training)
    out = {"n": int(x.shape[0]), "eps": eps, "steps": steps, "attack": f"PGD-{steps} eps={eps:.4f}",
           "rule": "robust = correct clean and correct after the attack",
           "clean_accuracy": float(clean.float().mean()), "robust_accuracy": float(robust.float().mean())}
    if per_image:
        out["clean_correct"], out["robust_correct"] = clean.tolist(), robust.tolist()
    return out


__all__ = ["AA_VERSIONS", "autoattack_accuracy", "autoattack_components", "pgd_accuracy"]
