"""Benchmark: validate a synthetic catalogue of N entries vs a bare libyaml parse of the same files (same run).

    python -m benchmarks.bench_validate [--papers 10000] [--repeat 3]

Target (issue "Catalogue foundation"): validation <= 2x the bare parse. Prints both wall times and their ratio (and
the CPU-time ratio, steadier on a shared machine), and writes benchmarks/results/validate_cpu.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tools.catalogue.entries import to_yaml_data
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.catalogue.yamlio import dump_entry

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_catalogue(folder: Path, n: int, seed: int = 0) -> None:
    """Write n valid, mutually distinct entries (random titles from a 5,000-word vocabulary)."""
    tax = load_taxonomy()
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10))) for _ in range(5000)]
    techniques = tax.techniques
    for i in range(n):
        technique = rng.choice(techniques)
        title = " ".join(rng.choice(vocab) for _ in range(rng.randint(6, 14))).capitalize()
        year = rng.randint(2019, 2026)
        data = {
            "id": f"paper{i:05d}-{year}",
            "title": title,
            "authors": [f"{rng.choice(vocab).title()} {rng.choice(vocab).title()}" for _ in range(rng.randint(1, 8))],
            "authors_status": "complete",
            "year": year,
            "venue": rng.choice(["arXiv", f"CVPR {year}", f"NeurIPS {year}", f"EMNLP {year} Findings"]),
            "arxiv": f"{year % 100:02d}{rng.randint(1, 12):02d}.{i:05d}",
            "code": [{"url": f"https://github.com/{rng.choice(vocab)}/{rng.choice(vocab)}", "official": True}],
            "placement": {"cells": [technique.cells[0]], "techniques": [technique.id], "method": "curated"},
            "modality": ["image"],
            "training": "training-free",
            "summary": f"{title}. It is a synthetic entry.",
            "claims": [
                {
                    "metric": "prefill_speedup",
                    "value": round(rng.uniform(1, 5), 2),
                    "unit": "x",
                    "where": "abstract",
                    "source": "https://arxiv.org/abs/2401.00001",
                }
            ],
            "provenance": {"title": "synthetic", "authors": "synthetic"},
            "last_verified": dt.date(2026, 11, 21),
        }
        paper = Paper.model_validate(data, context={"taxonomy": tax})
        (folder / f"{paper.id}.yaml").write_text(dump_entry(to_yaml_data(paper)), encoding="utf-8")


def bare_parse(files: list[Path]) -> int:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    count = 0
    for path in files:
        count += len(yaml.load(path.read_bytes().decode("utf-8"), Loader=loader))
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        synthetic_catalogue(folder, args.papers)
        print(f"wrote {args.papers} synthetic entries in {time.perf_counter() - t0:.1f} s")
        files = paper_files(folder)
        tax = load_taxonomy()
        parse_times, validate_times, parse_cpu, validate_cpu = [], [], [], []
        for _ in range(args.repeat):  # interleave, keep the best of each (noisy machine)
            t0, c0 = time.perf_counter(), time.process_time()
            bare_parse(files)
            parse_times.append(time.perf_counter() - t0)
            parse_cpu.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            cat = validate_catalogue(files, tax)
            validate_times.append(time.perf_counter() - t0)
            validate_cpu.append(time.process_time() - c0)
            if cat.problems or len(cat.papers) != args.papers:
                print(f"unexpected problems: {cat.problems[:3]}", file=sys.stderr)
                return 1
    parse_s, validate_s = min(parse_times), min(validate_times)
    ratio = validate_s / parse_s
    result = {
        "benchmark": "validate synthetic catalogue vs bare libyaml parse",
        "papers": args.papers,
        "bare_parse_s": round(parse_s, 3),
        "validate_s": round(validate_s, 3),
        "ratio": round(ratio, 2),
        "target_ratio": 2.0,
        "repeat": args.repeat,
        "bare_parse_cpu_s": round(min(parse_cpu), 3),
        "validate_cpu_s": round(min(validate_cpu), 3),
        "cpu_ratio": round(min(validate_cpu) / min(parse_cpu), 2),
        "libyaml": hasattr(yaml, "CSafeLoader"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.node()}",
        "date": dt.date.today().isoformat(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validate_cpu.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
