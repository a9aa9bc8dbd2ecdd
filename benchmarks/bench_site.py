"""Benchmark: generate and build the website for the real catalogue and for synthetic ones (2,000 and 5,000 papers).

    python -m benchmarks.bench_site [--sizes 2000 5000] [--no-real] [--tmpfs]

Each size runs in a fresh subprocess (so its peak memory is its own): load the catalogue, render the Markdown tree
(``tools.outputs.site.generate``), then ``mkdocs build --strict`` plus one .bib per paper
(``tools.outputs.site.build``). Reported per
run: wall and CPU seconds of each phase, ms per paper page (CPU split into user and system time), and peak resident
memory (total and per paper). Target (issue "The website and BibTeX"): the cost grows linearly, <= 3 ms per paper
page on a 2-core machine.

System time is the kernel creating files (three per paper: its Markdown page, its HTML page, its .bib). On ext4 that
cost depends on what was deleted in the last minutes: inode allocation skips recently deleted inodes one by one
(``recently_deleted`` in ``__ext4_new_inode``, seen with ``perf record``), so creating a file right after thousands
were deleted costs up to ~0.8 ms instead of ~0.04 ms. So every run's working folder is kept until the benchmark
ends (one run's clean-up would slow the next), and each run records ``disk_create_us_per_file``: the cost of creating
a small file in its working folder just before it starts, which shows the state the disk was in. ``--tmpfs`` also
runs every synthetic size in /dev/shm, which isolates the site's own cost. Writes benchmarks/results/site_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS_PER_PAGE = 3.0


def _cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure_one(papers_dir: Path | None, workdir: Path) -> dict:
    """In this process: load, generate, build. papers_dir None means the repository's catalogue."""
    from tools.catalogue.taxonomy import load_taxonomy
    from tools.catalogue.validate import load_catalogue, paper_files, validate_catalogue
    from tools.outputs.reconcile import render_reconciliation
    from tools.outputs.site.build import build_site
    from tools.outputs.site.generate import generate

    taxonomy = load_taxonomy()
    if papers_dir is None:
        papers = load_catalogue()
    else:
        cat = validate_catalogue(paper_files(papers_dir), taxonomy)
        if cat.problems:
            raise SystemExit(f"synthetic catalogue has problems: {cat.problems[:3]}")
        papers = cat.papers
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), _cpu()
    generated = generate(papers, taxonomy, workdir / "docs", reconciliation=render_reconciliation)
    t1, c1 = time.perf_counter(), _cpu()
    build_site(workdir / "docs", workdir / "html", generated.paper_bibs, strict=True)  # + one .bib per paper
    t2, c2 = time.perf_counter(), _cpu()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    n = len(papers)
    html_pages = sum(1 for _ in (workdir / "html").rglob("*.html"))

    def cpu(a, b):
        return sum(b) - sum(a)

    return {
        "papers": n,
        "generated_files": generated.files,
        "html_pages": html_pages,
        "generate_wall_s": round(t1 - t0, 2),
        "generate_cpu_s": round(cpu(c0, c1), 2),
        "build_wall_s": round(t2 - t1, 2),
        "build_cpu_s": round(cpu(c1, c2), 2),
        "total_wall_s": round(t2 - t0, 2),
        "total_cpu_s": round(cpu(c0, c2), 2),
        "user_cpu_s": round(c2[0] - c0[0], 2),
        "system_cpu_s": round(c2[1] - c0[1], 2),
        "ms_per_paper_wall": round(1000 * (t2 - t0) / n, 2),
        "ms_per_paper_cpu": round(1000 * cpu(c0, c2) / n, 2),
        "ms_per_paper_user": round(1000 * (c2[0] - c0[0]) / n, 2),
        "ms_per_paper_system": round(1000 * (c2[1] - c0[1]) / n, 2),
        "peak_rss_mib": round(rss_peak / 1024, 1),
        "rss_after_load_mib": round(rss_loaded / 1024, 1),
        "peak_kib_per_paper": round(rss_peak / n, 1),
        "site_mib": round(sum(f.stat().st_size for f in (workdir / "html").rglob("*") if f.is_file()) / 2**20, 1),
    }


def disk_probe(folder: Path, files: int = 300) -> float:
    """Microseconds to create (and write 4 KiB to) one new file in ``folder``, averaged over ``files`` files, which
    are left in place: deleting them would slow the run that follows (see the module docstring)."""
    probe = folder / "disk-probe"
    probe.mkdir()
    data = "x" * 4096
    start = time.perf_counter()
    for i in range(files):
        with open(probe / f"{i}.txt", "w", encoding="utf-8") as handle:
            handle.write(data)
    return round(1e6 * (time.perf_counter() - start) / files, 1)


def run_child(size: int | None, parent: Path) -> dict:
    """One measured run in a new folder under ``parent`` (deleted by the caller when the benchmark ends)."""
    work = Path(tempfile.mkdtemp(dir=parent))
    if size is not None:
        from benchmarks.bench_validate import synthetic_catalogue

        (work / "papers").mkdir()
        synthetic_catalogue(work / "papers", size)
    probe_us = disk_probe(work)
    cmd = [sys.executable, "-m", "benchmarks.bench_site", "--child", str(work)]
    if size is not None:
        cmd += ["--papers-dir", str(work / "papers")]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "disk_create_us_per_file": probe_us}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 5000])
    parser.add_argument("--no-real", action="store_true", help="skip the repository's catalogue")
    parser.add_argument(
        "--tmpfs",
        action="store_true",
        help="also run each synthetic size with its working folder in /dev/shm (no disk)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--papers-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_one(args.papers_dir, args.child)))
        return 0
    places = [("disk", None)] + ([("tmpfs", "/dev/shm")] if args.tmpfs else [])
    runs = []
    with contextlib.ExitStack() as stack:  # every run's folder stays until the end (see the module docstring)
        parents = {
            place: Path(stack.enter_context(tempfile.TemporaryDirectory(dir=root, prefix="bench-site-")))
            for place, root in places
        }
        if not args.no_real:
            runs.append(
                {"catalogue": "real", "workdir": f"disk ({tempfile.gettempdir()})", **run_child(None, parents["disk"])}
            )
            print(json.dumps(runs[-1]), flush=True)
        for place, root in places:
            for size in args.sizes:
                runs.append(
                    {
                        "catalogue": f"synthetic-{size}",
                        "workdir": f"{place} ({root or tempfile.gettempdir()})",
                        **run_child(size, parents[place]),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    growth = {}
    for place, _ in places:
        synthetic = [r for r in runs if r["catalogue"].startswith("synthetic") and r["workdir"].startswith(place)]
        if len(synthetic) >= 2:
            small, large = synthetic[0], synthetic[-1]
            growth[place] = {
                "papers": [small["papers"], large["papers"]],
                "cpu_ms_per_paper_ratio": round(large["ms_per_paper_cpu"] / small["ms_per_paper_cpu"], 2),
                "user_ms_per_paper_ratio": round(large["ms_per_paper_user"] / small["ms_per_paper_user"], 2),
                "wall_ms_per_paper_ratio": round(large["ms_per_paper_wall"] / small["ms_per_paper_wall"], 2),
                "peak_kib_per_paper_ratio": round(large["peak_kib_per_paper"] / small["peak_kib_per_paper"], 2),
                # the straight line through the two sizes: the cost of one more paper, and what every build pays
                "marginal_wall_ms_per_paper": round(
                    1000 * (large["total_wall_s"] - small["total_wall_s"]) / (large["papers"] - small["papers"]), 2
                ),
                "fixed_wall_s": round(
                    small["total_wall_s"]
                    - (large["total_wall_s"] - small["total_wall_s"])
                    * small["papers"]
                    / (large["papers"] - small["papers"]),
                    2,
                ),
                "note": "1.0 means linear growth; above 1, the cost per paper rises with the catalogue",
            }
    result = {
        "benchmark": "generate + mkdocs build --strict of the website",
        "target_ms_per_paper_page": TARGET_MS_PER_PAGE,
        "runs": runs,
        "growth": growth or None,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.node()}",
        "date": dt.date.today().isoformat(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    name = "site_cpu.json" if args.sizes == [2000, 5000] and not args.no_real else "site_cpu_partial.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
