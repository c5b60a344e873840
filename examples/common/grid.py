"""Resumable grids of training runs: each run's result is a JSON file; runs
already on disk are read back instead of repeated."""
import json
import statistics
from pathlib import Path


def run_grid(main, grid, out: Path):
    """grid: list of (file stem, argv list). main(argv) returns a result dict
    and, given --json PATH, writes it. Returns the results in grid order."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for stem, argv in grid:
        path = out / f"{stem}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            results.append(main(list(argv) + ["--json", str(path)]))
    return results


def run_and_report(run, args, summary):
    """The examples' main(): run(args), add the wall time, print summary(result),
    write it to args.json when given; returns the result."""
    import time
    t0 = time.time()
    result = run(args)
    result["wall_s"] = time.time() - t0
    print(summary(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


def mean_sd(values):
    """'mean ± sample standard deviation' to two decimals; the mean alone for one value."""
    mean = f"{statistics.mean(values):.2f}"
    return mean + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def write_table(lines, runs, out: Path, stem):
    """The table as Markdown (printed too) and the runs behind it as JSON: out/stem.md, out/stem.json."""
    table = "\n".join(lines)
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps(runs, indent=1))
    print(table)
