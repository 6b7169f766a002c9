"""Cost of one drift report per use case at typical batch sizes: fraud 10,000 rows, nlp 500
texts, traffic 100 frames, each against its reference (``drift.reference_frame``: the prepared
train split, capped at the entry's ``monitor.reference_rows``) with the champion's prediction drift.

    .venv/bin/python bench/drift_cost.py [--use-cases fraud nlp traffic] [--repeat 2]

Scorers: the project store's ``@champion`` when there is one, else a stand-in with the largest
candidate's architecture, *untrained* (inference cost does not depend on the weights; an untrained
detector finds nothing above threshold, so its NMS is cheaper than a trained one's): fraud DeepNet
(width 128, 4 blocks), nlp MiniLM + head (the ``transfer`` candidate), traffic YOLO-style DeepNet.
References missing on disk are built the way their DVC stage would (fraud: the simulator's
featured transactions, ~3 s, instead of the 1.8 M-row stage). Batches come from
``drift.make_batch`` (drift 0 and 1: each entry's ``incoming:`` generator). Times: reading the
batch (``load_batch``) and ``detect``; the first nlp report also embeds the reference (cached
afterwards), so both runs are printed. Writes bench/results/drift_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from deepflow import drift, settings, usecase

ROWS = {"fraud": 10_000, "nlp": 500, "traffic": 100}


def reference(use_case: str, tmp: Path):
    try:
        return drift.reference_frame(use_case), "prepared train split"
    except FileNotFoundError:
        pass
    if use_case == "fraud":
        path = drift.make_batch("fraud", tmp / "reference", rows=50_000, drift=0.0, seed=99)
        frame = drift.load_batch("tabular", path)
        return frame, "simulator week (stage params, another seed)"
    if use_case == "nlp":
        from deepflow.kinds.text.prepare import PrepareParams, prepare

        prepare(settings.PROJECT_ROOT / "data/external/sms_spam/SMSSpamCollection", tmp / "nlp",
                PrepareParams(**settings.stage_params("nlp.prepare")))
        return drift.reference_frame("nlp", overrides=[f"prepared_dir={tmp / 'nlp'}"]), "prepared train split"
    from deepflow.usecases.traffic.generate import GenerateParams, generate, write

    write(generate(GenerateParams(**settings.stage_params("traffic.generate"))), tmp / "traffic")
    return drift.reference_frame("traffic", overrides=[f"prepared_dir={tmp / 'traffic'}"]), "generated train split"


def scorer(use_case: str):
    """(scorer, threshold, description): the champion, else an untrained stand-in."""
    uri = settings.tracking_uri()
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists():  # never create a store
        try:
            from deepflow import batch

            model = batch.load_model(use_case)
            return model.scorer, model.threshold, f"@champion v{model.version}"
        except Exception:  # no champion: measure with a stand-in
            pass
    import torch

    torch.manual_seed(0)
    if use_case == "fraud":
        import numpy as np

        from deepflow.kinds.tabular.models import DeepNet, Standardize
        from deepflow.scoring import TorchScorer
        from deepflow.usecases.fraud.prepare import FEATURES

        f = len(FEATURES)
        net = DeepNet(Standardize(np.zeros(f, np.float32), np.ones(f, np.float32)), width=128, blocks=4)
        return TorchScorer(net, FEATURES), None, "stand-in: untrained DeepNet (128 x 4 blocks)"
    if use_case == "nlp":
        from deepflow.kinds.text.encoder import SentenceEncoder
        from deepflow.kinds.text.models import EmbeddingHead
        from deepflow.kinds.text.usecase import TextScorer

        return (TextScorer(EmbeddingHead(SentenceEncoder.dim, 2), ["ham", "spam"], SentenceEncoder()), None,
                "stand-in: MiniLM + untrained head (transfer)")
    from deepflow.kinds.detection.config import ModelConfig
    from deepflow.kinds.detection.models import build_net
    from deepflow.kinds.detection.scorer import DetectorScorer
    from deepflow.usecases.traffic.generate import CLASSES

    m = ModelConfig()
    net = build_net("deep", len(CLASSES), m)
    return DetectorScorer(net, m.img_size, CLASSES), None, "stand-in: untrained YOLO-style DeepNet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-cases", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    settings.apply_env_defaults()
    results = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ.setdefault("DEEPFLOW_CACHE_DIR", str(tmp / "cache"))  # a cold embedding cache
        for uc in args.use_cases:
            ref, ref_source = reference(uc, tmp)
            model, threshold, described = scorer(uc)
            kind = usecase.entry(uc).kind
            features = list(getattr(drift.entry_config(uc), "features", None) or []) or None
            for level in (0.0, 1.0):
                path = drift.make_batch(uc, tmp / "incoming", rows=ROWS[uc], drift=level, seed=1)
                t0 = time.perf_counter()
                cur = drift.load_batch(kind, path)
                load_s = time.perf_counter() - t0
                for run in range(args.repeat):
                    for with_model in (False, True):
                        t0 = time.perf_counter()
                        report = drift.detect(kind, ref, cur, scorer=model if with_model else None,
                                              features=features, threshold=threshold)
                        seconds = time.perf_counter() - t0
                        row = {"use_case": uc, "rows": len(cur), "reference_rows": len(ref), "drift": level,
                               "run": run + 1, "scorer": described if with_model else "none",
                               "load_s": round(load_s, 3), "detect_s": round(seconds, 3),
                               "signals": len(report.signals), "drifted": report.drifted}
                        results.append(row)
                        print(f"{uc:8s} {len(cur):>6,} vs {len(ref):>6,} ({ref_source}) drift={level:.0f} "
                              f"run {run + 1} scorer={row['scorer']:45s} load {load_s:5.2f} s  "
                              f"detect {seconds:6.2f} s  {len(report.signals)} signals, drifted={report.drifted}")
    out = settings.PROJECT_ROOT / "bench" / "results" / "drift_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"load average {meta['load_avg']}; -> {out}")


if __name__ == "__main__":
    main()
