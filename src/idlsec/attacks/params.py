"""What each attack hyperparameter is: its type, unit, valid range, choices, whether it is an
advanced option, and a one-line help, for forms (the lab) and checks (``tests/test_attack_params.py``
fails when a registered attack has a keyword without an entry here: a new parameter must be
described).

:data:`PARAM_META` holds one entry per name; :data:`OVERRIDES` holds entries for names that mean
something else in one attack (looked up along the class's MRO, so ADV^2's apply to AdvEdge).
:func:`param_info` gives the typed description of every keyword hyperparameter of a registered
attack, with its default read from the class's signature. Ranges restate the attacks'
``_check_params``; pixel budgets (``unit="1/255"``) are stored in [0, 1] units like the attacks
take them, and shown ×255 by the lab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from .registry import attack_class

Kind = Literal["bool", "int", "float", "choice", "string"]
PIXEL = "1/255"  # a budget or step in [0, 1] pixel units, written in 1/255 as the papers do

#: keywords of the attack signatures that are not hyperparameters (a run's plumbing)
NOT_HYPERPARAMETERS = frozenset({"progress", "callback", "surrogates"})


@dataclass(frozen=True)
class ParamMeta:
    kind: Kind
    help: str
    unit: str | None = None                # "1/255": a pixel budget or step size
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False            # (min, ...] rather than [min, ...]
    max_exclusive: bool = False
    choices: tuple[str, ...] | None = None
    choices_from: str | None = None        # "interpreters": the registry's names, read when asked
    advanced: bool = False
    nullable: bool = False                 # None is a valid value
    none_means: str | None = None          # what None stands for ("the interpreter's profile")


def _pixel(help: str, **kw) -> ParamMeta:
    return ParamMeta("float", help, unit=PIXEL, min=0.0, max=1.0, min_exclusive=True, **kw)


def _int(help: str, lo: int = 0, **kw) -> ParamMeta:
    return ParamMeta("int", help, min=lo, **kw)


def _float(help: str, lo: float = 0.0, hi: float | None = None, **kw) -> ParamMeta:
    return ParamMeta("float", help, min=lo, max=hi, **kw)


def _choice(help: str, *choices: str, **kw) -> ParamMeta:
    return ParamMeta("choice", help, choices=choices, **kw)


_PROFILE = "the interpreter's profile"
_PRESET = "the preset's value"
_ADV = {"advanced": True}
_MASK = {"advanced": True}

PARAM_META: dict[str, ParamMeta] = {
    # --- every attack ----------------------------------------------------------------------------
    "eps": _pixel("L∞ budget: the largest change allowed to any pixel"),
    "targeted": ParamMeta("bool", "push the prediction to a chosen class (else: away from the true one)"),
    "seed": _int("seed of every random choice (start point, targets, search)"),
    "compile": ParamMeta("bool", "white-box: run the model compiled with torch.compile (one-off compile, faster "
                         "steps)", **_ADV),
    "cuda_graph": ParamMeta("bool", "white-box, CUDA: replay each step from a captured CUDA graph (fixed "
                            "shapes; the ordinary step on the CPU)", **_ADV),
    "amp": _choice("white-box: the forward passes in mixed precision (autocast; losses and maps in float32)",
                   "bf16", "fp16", nullable=True, none_means="float32", **_ADV),
    # --- gradient attacks ------------------------------------------------------------------------
    "alpha": _pixel("step size of each signed-gradient step"),
    "steps": _int("gradient steps", lo=1),
    "random_start": ParamMeta("bool", "start from a random point of the ε-ball, not the image"),
    # --- ADV^2 and AdvEdge -----------------------------------------------------------------------
    "warmup_steps": _int("steps on the prediction loss alone, before the joint stage", nullable=True,
                         none_means=_PROFILE, **_ADV),
    "c": _float("weight of the interpretation loss against the prediction loss", nullable=True,
                none_means=_PROFILE, **_ADV),
    "schedule": _choice("how the interpretation weight c changes over the joint stage",
                        "constant", "linear", "staircase", nullable=True, none_means=_PROFILE, **_ADV),
    "select": _choice("return the successful step with the closest map, or the last step", "best", "last", **_ADV),
    "select_confidence": _float("probability of the target a step needs to be kept as the best", hi=1.0,
                                nullable=True, none_means=_PROFILE, **_ADV),
    "check_every": _int("steps between checks for the best example", lo=1, nullable=True,
                        none_means=_PROFILE, **_ADV),
    "encoder_weight": _float("RTS only: weight of the RTS encoder's own classification loss", nullable=True,
                             none_means=_PROFILE, **_ADV),
    "mask_inner_steps": _int("MASK only: unrolled mask-optimisation steps per attack step", lo=1, **_MASK),
    "mask_resolve_every": _int("MASK only: attack steps between full re-solves of the mask", lo=1, **_MASK),
    "mask_step": _float("MASK only: L2 step size (rescaled to the image size)", min_exclusive=True, **_MASK),
    "mask_max_step": _float("MASK only: largest L2 step the bisection tries", min_exclusive=True, **_MASK),
    "mask_margin": _float("MASK only: logit margin the bisection keeps the target ahead by", **_MASK),
    "mask_confidence": _float("MASK only: floor of the C&W margin", nullable=True, none_means="unbounded",
                              **_MASK),
    "mask_bisection": _int("MASK only: bisection iterations per step", lo=1, **_MASK),
    "edge_stages": _choice("which stages take edge-weighted steps: every step, or the warm start only",
                           "both", "warmup"),
    "edge_threshold": _float("AdvEdge+: Sobel edge strength above which a pixel may change", nullable=True,
                             none_means="0.1 (RTS: 0.05)", **_ADV),
    "framework": _choice("PGD (in the ε-ball), C&W (L2 cost) or StAdv (smooth flow); the last two ignore ε",
                         "pgd", "cw", "stadv"),
    "lr": _float("C&W and StAdv: Adam's learning rate", min_exclusive=True, **_ADV),
    "cw_kappa": _float("C&W: confidence margin of the prediction loss", **_ADV),
    "cw_warmup_weight": _float("C&W: weight of the margin loss against the L2 cost in the warm-up", **_ADV),
    "stadv_tau": _float("StAdv: weight of the flow field's smoothness cost", **_ADV),
    "edge_fallback": _int("AdvEdge+: extra rounds, each with a lower edge threshold, for images still not "
                          "fooled", **_ADV),
    "edge_fallback_factor": _float("AdvEdge+: factor on the edge threshold at each fallback round", hi=1.0,
                                   **_ADV),
    "losses": _choice("the papers' ADV^2 objective, or the released notebooks' losses", "adv2", "released",
                      **_ADV),
    # --- black-box: Square and QuScore -----------------------------------------------------------
    "max_queries": _int("query budget per image", lo=1),
    "p_init": _float("initial fraction of the image each random square covers", hi=1.0, min_exclusive=True,
                     **_ADV),
    "preset": _choice("fills the options left at default: the authors' released code, or the values tuned "
                      "here for CIFAR-10", "idlsec", "released"),
    "surrogate_interpreter": ParamMeta("choice", "interpreter of the surrogates for the transfer stage's map "
                                       "term", choices_from="interpreters", **_ADV),
    "lambda_int": _float("transfer stage: weight of the surrogate-map term", **_ADV),
    "mi_steps": _int("transfer stage: MI-FGSM steps per round", **_ADV),
    "mi_step": _pixel("transfer stage: MI-FGSM step size", **_ADV),
    "momentum": _float("transfer stage: MI-FGSM momentum decay", **_ADV),
    "init_rounds": _int("transfer stage: restarts until a member fools the surrogates", lo=1, **_ADV),
    "diversity": _float("transfer stage: probability of input diversity (random resize and pad)", hi=1.0,
                        nullable=True, none_means=_PRESET, **_ADV),
    "sgm": _float("transfer stage: gradient scale through residual branches (1 = off)", hi=1.0,
                  min_exclusive=True, **_ADV),
    "refine": ParamMeta("bool", "untargeted runs: refine each member towards its surrogate label",
                        nullable=True, none_means=_PRESET, **_ADV),
    "init": _choice("start point: the paper's vertical stripes, or a perturbation transferred from the "
                    "surrogates", "stripes", "transfer"),
    "prune_focus": _choice("prune search: windows placed uniformly, on the benign map's salient region, or "
                           "where the queried map moved", "uniform", "map", "diff", **_ADV),
    "mutation_focus": _choice("square mutation: windows placed uniformly, or where the best fooling member's map "
                              "moved", "uniform", "diff", **_ADV),
    "prune_tol": _float("prune search: map IoU drop allowed for a sparser fooling state (0: none)", hi=1.0,
                        **_ADV),
    "map_keepout": _float("fraction of the most salient benign-map pixels never perturbed", hi=1.0,
                          max_exclusive=True, **_ADV),
    "map_protect": _float("prune search: largest salient benign-map fraction restored if still fooled, then kept "
                          "benign (0: off)", hi=1.0,
                          max_exclusive=True, **_ADV),
    "prune_resample": _float("prune search: probability a step resamples the window's signs instead of "
                             "removing it", hi=1.0, **_ADV),
    "pop_size": _int("members of the genetic search's population", lo=2),
    "cross_rate": _float("probability that the loser copies each gene of the winner", hi=1.0, **_ADV),
    "mutation": _choice("how a member mutates: single-gene flips or a random square window", "bit", "square",
                        nullable=True, none_means=_PRESET, **_ADV),
    "mutation_rate": _float("bit mutation: probability of flipping each gene", hi=1.0, **_ADV),
    "square_p": _float("square mutation: initial fraction of the image a window covers", hi=1.0,
                       min_exclusive=True, **_ADV),
    "square_queries": _int("square mutation: queries over which the window shrinks", lo=1, **_ADV),
    "encoding": _choice("genes: the sign of each pixel's ±ε change, or grid cells switched on/off",
                        "vertex", "masked", nullable=True, none_means=_PRESET, **_ADV),
    "mask_fraction": _float("masked encoding: fraction of the most salient cells switched on at start",
                            hi=1.0, min_exclusive=True, **_ADV),
    "mask_grid": _int("masked encoding: cells per side of the grid", lo=1, **_ADV),
    "mask_mutation_rate": _float("masked encoding: probability of switching each cell", hi=1.0, **_ADV),
    "fitness": _choice("what the search maximises: the class score, the logit margin, or margin plus map "
                       "similarity", "score", "margin", "score+map", nullable=True, none_means=_PRESET, **_ADV),
    "map_weight": _float("score+map fitness: weight of the map term", **_ADV),
    "map_term": _choice("score+map fitness: map similarity as top-k IoU or L2 distance", "iou", "l2", **_ADV),
    "margin_cap": _float("score+map fitness: cap on the margin term", min_exclusive=True, **_ADV),
    "stealth_iou": _float("stop only at a fooling member whose map keeps this top-k IoU with the benign map",
                          hi=1.0, min_exclusive=True, nullable=True, none_means="first fooling member", **_ADV),
    "stealth_queries": _int("queries spent on the stealth search after the first fooling one", nullable=True,
                            none_means="the rest of the budget", **_ADV),
    "stealth_search": _choice("stealth search: go on with the genetic search, or prune the perturbation",
                              "ga", "prune", **_ADV),
    "prune_start": _int("prune search: queries after the first fooling one before pruning starts", **_ADV),
    "prune_p": _float("prune search: fraction of the image each pruned window covers", hi=1.0,
                      min_exclusive=True, **_ADV),
    "prune_patience": _int("prune search: rejections in a row before the window is halved", lo=1, **_ADV),
    "prune_scale": _float("prune search: factor left on the window's perturbation (0 = removed)", hi=1.0,
                          max_exclusive=True, **_ADV),
}

#: names that mean something else in one attack (and its subclasses): attack name -> name -> meta
OVERRIDES: dict[str, dict[str, ParamMeta]] = {
    "adv2": {
        "steps": _int("steps of the joint stage (prediction + interpretation loss)", nullable=True,
                      none_means=_PROFILE),
    },
    "square": {
        "max_queries": _int("query budget per image (3 go to Square's own checks)", lo=3),
    },
}


def _choices_from(source: str) -> tuple[str, ...]:
    if source == "interpreters":
        from ..interpreters import INTERPRETERS

        return tuple(INTERPRETERS)
    raise KeyError(source)


def meta_for(cls: type, name: str) -> ParamMeta | None:
    """The entry for ``name`` in attack class ``cls``: the class's own ``param_meta`` (how an attack
    registered outside this package describes itself) or override, an ancestor's, else the general
    one; None when the name has none."""
    for klass in cls.__mro__:
        for table in (vars(klass).get("param_meta", {}), OVERRIDES.get(vars(klass).get("name", ""), {})):
            if name in table:
                return table[name]
    return PARAM_META.get(name)


def inferred_meta(default) -> ParamMeta | None:
    """A plain description from a default's type, for a keyword nothing describes (an attack
    registered by a user); None when the default says nothing (None, a tensor, a list)."""
    kind = {bool: "bool", int: "int", float: "float", str: "string"}.get(type(default))
    return ParamMeta(kind, "") if kind else None


def param_info(attack_name: str, *, include_plumbing: bool = False) -> list[dict]:
    """Every keyword hyperparameter of a registered attack: ``name``, ``default`` and the fields of
    its :class:`ParamMeta` (``choices`` resolved). A keyword nothing describes is typed from its
    default (:func:`inferred_meta`) or, when the default says nothing, left out; :func:`undescribed`
    names them (the package's own attacks have none: tests/test_attack_params.py)."""
    cls = attack_class(attack_name)
    out = []
    for name, default in cls.param_defaults().items():
        if name in NOT_HYPERPARAMETERS and not include_plumbing:
            continue
        meta = meta_for(cls, name) or inferred_meta(default)
        if meta is None:
            continue
        if meta.choices_from:
            meta = replace(meta, choices=_choices_from(meta.choices_from))
        d = asdict(meta)
        d.pop("choices_from")
        d["choices"] = list(d["choices"]) if d["choices"] is not None else None
        out.append({"name": name, "default": default, **d})
    return out


def undescribed() -> dict[str, list[str]]:
    """Registered attacks' keywords without metadata: attack -> names (empty when all are described)."""
    from .registry import ATTACKS

    missing: dict[str, list[str]] = {}
    for attack_name, cls in ATTACKS.items():
        names = [n for n in cls.param_names() if n not in NOT_HYPERPARAMETERS and meta_for(cls, n) is None]
        if names:
            missing[attack_name] = names
    return missing
