"""Suites express every kind of job: white-box and black-box attack entries, seeds, universal and
detection jobs; the schema is strict. Also the Square baseline's query accounting."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import pytest
import torch
from torch import nn

from _bench_util import read_lines, write_suite
from conftest import needs_mirror
from idlsec.bench.runner import run_suite
from idlsec.bench.suite import BenchConfig, load_suite, parse_suite
from idlsec.errors import ConfigError

QUIET = lambda msg: None  # noqa: E731
GRID = {"models": ["cifar10-resnet20"], "interpreters": ["cam"]}


# --- the schema ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, named, valid",
    [
        ({**GRID, "attacks": [{"name": "pgd", "stepz": 3}]}, "stepz", "params"),
        ({**GRID, "attacks": ["pgd"], "setings": {"n": 2}}, "setings", "settings"),
        ({**GRID, "attacks": ["pgd"], "settings": {"nn": 2}}, "nn", "batch_size"),
        (
            {**GRID, "attacks": [{"name": "quscore", "surogate": "cifar10-resnet20"}]},
            "surogate",
            "surrogate",
        ),
        (
            {**GRID, "attacks": [{"name": "quscore", "defense": {"name": "jpeg", "quality": 50}}]},
            "quality",
            "params",
        ),
        (
            {**GRID, "interpreters": [{"name": "cam", "max_queries": 5}], "attacks": ["pgd"]},
            "max_queries",
            "label",
        ),
        ({"universal": [{"model": "cifar10-resnet20", "sourse": 1}]}, "sourse", "n_train"),
        ({"detection": [{"model": "cifar10-resnet20", "pgd_stepz": 1}]}, "pgd_stepz", "pgd_steps"),
        (
            {**GRID, "attacks": [{"name": "square", "monitor": {"name": "blacklight", "treshold": 5}}]},
            "treshold",
            "threshold",
        ),
    ],
)
def test_an_unknown_key_anywhere_names_it_and_the_valid_ones(data, named, valid):
    with pytest.raises(ConfigError) as e:
        parse_suite(data, "s.yaml")
    assert repr(named) in str(e.value) or f"'{named}'" in str(e.value)
    assert valid in str(e.value).split(named, 1)[1]  # the valid keys follow the culprit


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "quscore", "max_queries": 0}, "max_queries"),
        ({"name": "quscore", "max_queries": True}, "max_queries"),
        ({"name": "quscore", "surrogate": []}, "surrogate"),
        ({"name": "quscore", "defense": 3}, "defense"),
        ({"name": "square", "monitor": "blacklite"}, "blacklite"),
        ({"name": "square", "monitor": {"threshold": 5}}, "monitor"),
        ({"name": "square", "monitor": {"name": "blacklight", "threshold": 60}}, "threshold"),
    ],
)
def test_black_box_keys_are_checked(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_suite({**GRID, "attacks": [entry]}, "s.yaml")


def test_seeds_expand_every_configuration_and_jobs():
    s = parse_suite(
        {
            **GRID,
            "attacks": [
                "pgd",
                {
                    "name": "quscore",
                    "surrogate": "cifar10-resnet32",
                    "max_queries": 100,
                    "defense": "jpeg",
                },
            ],
            "seeds": [0, 1, 2],
            "detection": [{"model": "cifar10-resnet20", "n": 4}],
        },
        "s.yaml",
    )
    assert [(c.attack, c.seed) for c in s.configs] == [
        (a, k) for a in ("pgd", "quscore") for k in (0, 1, 2)
    ]
    assert len({c.key for c in s.configs}) == 6
    assert [j.seed for j in s.jobs] == [0, 1, 2] and len({j.key for j in s.jobs}) == 3
    q = s.configs[3]
    assert (q.surrogates, q.max_queries, q.oracle_defense) == (["cifar10-resnet32"], 100, "jpeg")
    with pytest.raises(ConfigError, match="not both"):
        parse_suite({**GRID, "attacks": ["pgd"], "seeds": [0], "settings": {"seed": 1}}, "s.yaml")
    with pytest.raises(ConfigError, match="more than once"):
        parse_suite({**GRID, "attacks": ["pgd"], "seeds": [0, 0]}, "s.yaml")


def test_white_box_keys_are_those_of_before_black_box_fields():
    """Adding the black-box fields must not change existing configurations' keys (results
    directories written before them resume): the key is the hash of the old fields."""
    cfg = parse_suite(
        {**GRID, "attacks": [{"name": "pgd", "params": {"steps": 3}}]}, "s.yaml"
    ).configs[0]
    old = asdict(cfg)
    for k in (
        "attack_label",
        "interpreter_label",
        "defense_label",
        "gallery",
        "query_budgets",
        "surrogates",
        "max_queries",
        "oracle_defense",
        "oracle_defense_params",
        "monitor",
        "model_options",  # BYOM fields: absent from the key when unused
        "data_options",
        "all_images",
        "compile",  # speed only (compiled == eager to 1e-5): never in the key
        "cuda_graph",  # speed only (graph replay == eager step to 1e-5): never in the key
    ):
        old.pop(k)
    assert (
        cfg.key
        == hashlib.sha1(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:12]
    )
    bb = parse_suite({**GRID, "attacks": [{"name": "pgd", "max_queries": 3}]}, "s.yaml").configs[0]
    assert bb.key != cfg.key


def test_the_shipped_suites_parse():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.yaml")):
        suite = load_suite(path)
        assert suite.configs or suite.jobs, path


# --- running ------------------------------------------------------------------------------------
@needs_mirror
def test_black_box_keys_on_a_white_box_attack_fail_before_work(tmp_path):
    suite = write_suite(
        tmp_path,
        "models: [cifar10-resnet20]\ninterpreters: [cam]\n"
        "attacks: [{name: pgd, surrogate: cifar10-resnet32}]\n",
    )
    with pytest.raises(ConfigError, match="black-box attacks only"):
        run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    assert not (tmp_path / "run" / "results.jsonl").exists()


@needs_mirror
def test_black_box_records_carry_the_oracles_exact_query_counts(tmp_path):
    """Each record's ``queries`` is what an independent count of the victim's evaluated rows gives
    when the same attack is run by hand on the same images."""
    from idlsec.attacks import BlackBox, QuScore, Square
    from idlsec.data import load_dataset, select_images
    from idlsec.models import load_model

    suite = write_suite(
        tmp_path,
        """
settings: {n: 3, batch_size: 3, targeted: false, gallery: 0}
models: [cifar10-resnet56]
interpreters: [cam]
attacks:
  - {name: quscore, surrogate: cifar10-resnet20, max_queries: 40}
  - {name: square, max_queries: 40}
""",
    )
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    recs = read_lines(tmp_path / "run" / "results.jsonl")
    assert len(recs) == 6 and all(
        isinstance(r["queries"], int) and 0 < r["queries"] <= 40 for r in recs
    )

    target = load_model("cifar10-resnet56")
    sel = select_images(load_dataset("cifar10", "test"), 3, seed=0, model=target, correct_only=True)
    counts = torch.zeros(3, dtype=torch.long)

    class Counting(nn.Module):  # charges every evaluated row to the nearest benign image
        def __init__(self):
            super().__init__()
            self.m, self.card = target, target.card

        def forward(self, x):
            near = torch.cdist(x.flatten(1), sel.x.flatten(1), p=float("inf")).argmin(1)
            counts.add_(torch.bincount(near, minlength=3))
            return self.m(x)

    for attack, extra in (
        (QuScore, {"surrogates": [load_model("cifar10-resnet20")]}),
        (Square, {}),
    ):
        counts.zero_()
        torch.manual_seed(0)
        oracle = BlackBox(Counting(), max_queries=40)
        res = attack(oracle, **extra, max_queries=40, seed=0).run(sel.x, sel.y)
        mine = [r for r in recs if r["attack"] == attack.name]
        assert [r["queries"] for r in mine] == res.queries.tolist() == counts.tolist()
        assert [r["success"] for r in mine] == res.success.tolist()
        with torch.no_grad():
            assert res.success.tolist() == (target(res.x_adv).argmax(1) != sel.y).tolist()
        assert float((res.x_adv - sel.x).abs().max()) <= 8 / 255 + 1e-6


def test_a_monitor_on_a_white_box_attack_is_refused():
    from idlsec.bench.suite import check_config

    cfg = parse_suite({**GRID, "attacks": [{"name": "pgd", "monitor": "blacklight"}]}).configs[0]
    assert cfg.monitor == {"name": "blacklight"}
    with pytest.raises(ConfigError, match="black-box attacks only"):
        check_config(cfg)


@needs_mirror
def test_monitored_records_carry_first_flag_and_first_fooling_query(tmp_path):
    """``detected_at`` / ``fooled_at`` equal an independent per-image replay: the same attack run
    by hand through an oracle with BlackLight, the victim wrapped to note the 1-based index of the
    first query (per nearest benign image) it misclassifies; the summary follows from them."""
    from idlsec.attacks import BlackBox, Square
    from idlsec.bench.kinds import monitor_summary
    from idlsec.data import load_dataset, select_images
    from idlsec.defenses import BlackLight
    from idlsec.models import load_model

    suite = write_suite(
        tmp_path,
        """
settings: {n: 3, batch_size: 3, targeted: false, gallery: 0}
models: [cifar10-resnet20]
interpreters: [cam]
attacks: [{name: square, max_queries: 60, monitor: {name: blacklight, threshold: 20}}]
""",
    )
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    recs = read_lines(tmp_path / "run" / "results.jsonl")

    target = load_model("cifar10-resnet20")
    sel = select_images(load_dataset("cifar10", "test"), 3, seed=0, model=target, correct_only=True)
    seen = [0, 0, 0]
    first = [-1, -1, -1]

    class Noting(nn.Module):
        def __init__(self):
            super().__init__()
            self.m, self.card = target, target.card

        def forward(self, x):
            out = self.m(x)
            near = torch.cdist(x.flatten(1), sel.x.flatten(1), p=float("inf")).argmin(1)
            for i, wrong in zip(near.tolist(), (out.argmax(1) != sel.y[near]).tolist()):
                seen[i] += 1
                if wrong and first[i] < 0:
                    first[i] = seen[i]
            return out

    torch.manual_seed(0)
    oracle = BlackBox(Noting(), max_queries=60, monitor=BlackLight(threshold=20))
    Square(oracle, max_queries=60, seed=0).run(sel.x, sel.y)
    assert [r["detected_at"] for r in recs] == oracle.detections(torch.arange(3)).tolist()
    assert [r["fooled_at"] for r in recs] == first
    assert any(d > 0 for d in first) or any(r["detected_at"] > 0 for r in recs)
    s = monitor_summary(recs)
    stopped = [d > 0 and (f < 0 or d <= f) for d, f in zip(oracle.detections(torch.arange(3)).tolist(), first)]
    assert s["detection_rate"] == sum(stopped) / 3
    assert s["asr_undefended"] == sum(f > 0 for f in first) / 3
    assert s["fooled_at_first_query"] == sum(f == 1 for f in first) / 3


@needs_mirror
def test_a_saved_detector_in_front_of_the_monitor(tmp_path):
    """``monitor: {name: piha, detector: PATH}`` runs the oracle with a DetectorGate: the
    records' ``detected_at`` equal a by-hand run of the same attack through an oracle whose
    monitor is ``DetectorGate(PIHA(), load_detector(PATH))``, and the detector flags first
    queries that PIHA alone, having no history yet, cannot. A detector fitted on another model,
    or a missing file, is refused before any work."""
    from idlsec.attacks import BlackBox, Square
    from idlsec.bench.suite import check_config
    from idlsec.data import load_dataset, select_images
    from idlsec.defenses import PIHA, DetectorGate, get_detector, load_detector
    from idlsec.models import load_model

    target = load_model("cifar10-resnet20")
    sel = select_images(load_dataset("cifar10", "test"), 3, seed=0, model=target, correct_only=True)
    benign = select_images(load_dataset("cifar10", "test"), 60, seed=7, model=target).x
    det = get_detector("squeeze", target).fit(benign, fpr=0.3)
    path = det.save(tmp_path / "cifar10-resnet20-gate.safetensors")
    per_model = str(tmp_path / "{model}-gate.safetensors")  # each model's own detector
    entry = f"{{name: square, max_queries: 40, monitor: {{name: piha, detector: '{per_model}'}}}}"
    suite = write_suite(tmp_path, f"""
settings: {{n: 3, batch_size: 3, targeted: false, gallery: 0}}
models: [cifar10-resnet20]
interpreters: [cam]
attacks: [{entry}]
""")
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    recs = read_lines(tmp_path / "run" / "results.jsonl")

    torch.manual_seed(0)
    oracle = BlackBox(target, max_queries=40, monitor=DetectorGate(PIHA(), load_detector(path, target)))
    Square(oracle, max_queries=40, seed=0).run(sel.x, sel.y)
    assert [r["detected_at"] for r in recs] == oracle.detections(torch.arange(3)).tolist()
    assert any(r["detected_at"] == 1 for r in recs)  # the detector's: PIHA has no history at query 1

    for data, msg in (
        ({"models": ["cifar10-resnet32"], "interpreters": ["cam"],
          "attacks": [{"name": "square", "monitor": {"name": "piha", "detector": str(path)}}]}, "fitted on"),
        ({"models": ["cifar10-resnet32"], "interpreters": ["cam"],
          "attacks": [{"name": "square", "monitor": {"name": "piha", "detector": per_model}}]}, "not found"),
        ({**GRID, "attacks": [{"name": "square", "monitor": {"name": "piha", "detector": "none.safetensors"}}]},
         "not found"),
        ({**GRID, "attacks": [{"name": "square", "monitor": {"name": "piha", "detector": str(path),
                                                            "detector_sha256": "0" * 64}}]}, "does not match"),
    ):
        with pytest.raises(ConfigError, match=msg):
            check_config(parse_suite(data).configs[0])


@needs_mirror
def test_jobs_run_once_per_seed_and_resume(tmp_path):
    suite = write_suite(
        tmp_path,
        """
seeds: [0, 1]
detection:
  - {label: tiny, model: cifar10-resnet20, n: 4, n_benign: 8, attacks: [pgd], train_attacks: [pgd],
     interpreters: [cam, grad], pgd_steps: 2}
""",
    )
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    files = sorted((tmp_path / "run" / "jobs").glob("detection-tiny-seed*.json"))
    assert [f.name.split("-")[2] for f in files] == ["seed0", "seed1"]
    entries = [json.loads(f.read_text()) for f in files]
    listed = json.loads((tmp_path / "run" / "suite.json").read_text())["jobs"]
    assert [j["key"] for j in listed] == [e["job"]["key"] for e in entries]
    assert [e["result"]["config"]["seed"] for e in entries] == [0, 1]
    before = [f.stat().st_mtime_ns for f in files]
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)  # nothing left to do
    assert [f.stat().st_mtime_ns for f in files] == before


def test_bench_config_round_trips_with_black_box_fields():
    cfg = parse_suite(
        {
            **GRID,
            "attacks": [
                {
                    "name": "quscore",
                    "surrogate": ["a", "b"],
                    "max_queries": 7,
                    "defense": {"name": "rp", "params": {"seed": 1}},
                }
            ],
        },
        "s.yaml",
    ).configs[0]
    again = BenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.key == cfg.key and again.oracle_defense_params == {"seed": 1}


def test_set_overrides_settings_and_top_level_keys_before_the_checks(tmp_path):
    from idlsec.bench.suite import apply_sets

    path = write_suite(
        tmp_path,
        "models: [cifar10-resnet20]\ninterpreters: [cam]\n"
        "settings: {n: 4, params: {steps: 2}}\n"
        "attacks: [pgd, {name: quscore, surrogate: cifar10-resnet32}]\n",
    )
    base = load_suite(path)
    s = load_suite(path, ["n=7", "params.max_queries=50", "seeds=[0, 1]"])
    assert [(c.n, c.seed) for c in s.configs] == [(7, 0), (7, 1), (7, 0), (7, 1)]
    assert s.configs[0].shared_params == {"steps": 2, "max_queries": 50}
    assert {c.key for c in s.configs}.isdisjoint({c.key for c in base.configs})  # another directory
    assert load_suite(path).configs[0].n == 4  # the file is untouched
    for bad, message in (
        ("nn=3", "nn"),
        ("n", "KEY=VALUE"),
        ("n=0", "settings.n"),
        ("n=[", "YAML"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_suite(path, [bad])
    with pytest.raises(ConfigError, match="batch_size"):  # the error lists the valid keys
        apply_sets({"settings": {}}, ["bacth_size=3"])


def test_set_reaches_the_jobs_whose_label_matches_and_only_those(tmp_path):
    # entries built with YAML merge keys share their nested mappings: --set must not leak
    path = write_suite(
        tmp_path,
        """
universal:
  - &a {label: linf-a, model: cifar10-resnet20, interpreter: cam, source: 0, target: 1,
        n_train: 10, params: {iterations: 5}}
  - {<<: *a, label: linf-b, source: 2}
  - {<<: *a, label: l2-a, norm: l2}
robustness:
  - {label: r, model: cifar10-resnet20, defenses: [none], n: 3}
""",
    )
    s = load_suite(path, ["universal.linf-*.params.iterations=9", "universal.*.n_train=4",
                          "robustness.r.n=6"])
    got = {j.label: (j.params["params"]["iterations"], j.params["n_train"]) for j in s.jobs
           if j.kind == "universal"}
    assert got == {"linf-a": (9, 4), "linf-b": (9, 4), "l2-a": (5, 4)}
    assert [j.params["n"] for j in s.jobs if j.kind == "robustness"] == [6]
    with pytest.raises(ConfigError, match=r"no 'universal' job label matches 'x\*'.*linf-a"):
        load_suite(path, ["universal.x*.n_train=4"])
    with pytest.raises(ConfigError, match="clean_nn.*clean_n"):  # still strict after --set
        load_suite(path, ["robustness.*.clean_nn=4"])


def test_the_report_renders_the_jobs_of_a_jobs_only_run(tmp_path):
    from idlsec.bench.store import ResultStore
    from idlsec.report.build import write_report

    run = tmp_path / "run"
    with ResultStore(run):
        pass
    (run / "suite.json").write_text(json.dumps({"name": "j", "configs": [], "runs": []}))
    (run / "jobs").mkdir()
    uni = {"source": "cat", "target": "truck", "eps": 8 / 255, "params": {"norm": "linf", "inhibition": 0.5},
           "fooling_rate_train": 0.8125, "fooling_rate_test": 0.7344, "target_confidence_mean": 0.61,
           "unintended_fooling_rate": 0.2, "unintended_to_target_rate": 0.1, "iou_topk_mean": 0.4567,
           "iou_topk_fooled_mean": 0.41, "map_l1_mean": 12.34, "iterations": 75, "seconds": 3.2,
           "config": {"model": "cifar10-resnet20", "interpreter": "cam"},
           "transfer_interpreters": {"gradcam": {"fooling_rate": 0.7344, "iou_topk_mean": 0.2222,
                                                 "iou_topk_fooled_mean": 0.2}}}
    det = {"config": {"fpr": 0.05}, "seconds": 9.0, "coefficients": {"f1": 0.5, "f2": -1.5},
           "rows": [{"attack": "advedge", "detector": "ensemble", "trained_on": False, "asr": 1.0,
                     "iou": 0.7, "n_adversarial": 16, "tpr_at_fpr": 0.9375, "auroc": 0.98765,
                     "tpr_at_threshold": 0.9, "fpr_at_threshold": 0.05}]}
    for kind, label, result in (("universal", "w0.5", uni), ("detection", "d", det)):
        entry = {"job": {"kind": kind, "label": label, "seed": 0, "key": label}, "result": result}
        (run / "jobs" / f"{kind}-{label}-seed0-x.json").write_text(json.dumps(entry))
    write_report(run, html=False)
    table = (run / "table.md").read_text()
    assert ("| w0.5 | 0 | cat→truck | cifar10-resnet20 (cam) | test | L∞ 8/255 | – | – | 0.5 | 0.81 | 0.73 | "
            "– | – | – | 0.61 | 0.20 | 0.10 | 0.46 |") in table
    assert "| w0.5 | 0 | cifar10-resnet20 (gradcam) | 0.73 | 0.73 | – | 0.22 |" in table
    assert "| d | 0 | advedge | ensemble | no | 1.00 | 0.70 | 16 | 0.94 | 0.988 | 0.90 | 0.05 |" in table
    assert "`f2` -1.50, `f1` +0.50" in table


@needs_mirror
def test_a_robustness_job_measures_its_models_and_defenses(tmp_path):
    from idlsec.data import load_dataset
    from idlsec.models import load_model

    suite = write_suite(
        tmp_path,
        """
robustness:
  - {label: r, model: cifar10-resnet20, defenses: [none, jpeg], attacks: [pgd], n: 2, pgd_steps: 2,
     accuracy_models: [cifar10-resnet20], clean_n: 8, robust_n: 4}
""",
    )
    run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "run" / "jobs").glob("*.json")]
    res = entry["result"]
    assert [(r["defense"], r["mode"]) for r in res["rows"]] == [
        ("none", "white-box"), ("jpeg", "transfer"), ("jpeg", "adaptive")]
    test = load_dataset("cifar10", "test")
    x, y = test.get(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:8])
    with torch.no_grad():
        acc = float((load_model("cifar10-resnet20")(x).argmax(1) == y).float().mean())
    (m,) = res["models"]
    assert m["model"] == "cifar10-resnet20" and m["clean_accuracy"] == pytest.approx(acc)
    assert 0 <= m["robust_accuracy"] <= 1 and m["n_robust"] == 4


@pytest.mark.parametrize(
    "job, message",
    [
        ("robustness: [{model: cifar10-resnet20, defenses: [none, jpgx]}]", "unknown defense 'jpgx'"),
        ("robustness: [{model: cifar10-resnet20, accuracy_models: [no-such-model]}]", "no-such-model"),
        ("detection: [{model: cifar10-resnet20, attacks: [pgd], train_attacks: [adv2]}]",
         "train attack 'adv2'"),
    ],
)
def test_bad_job_values_fail_before_any_work(tmp_path, job, message):
    suite = write_suite(tmp_path, job + "\n")
    with pytest.raises(ConfigError, match=message):
        run_suite(load_suite(suite), tmp_path / "run", device="cpu", log=QUIET)
    assert not (tmp_path / "run").exists()
