#!/usr/bin/env python3
"""Latency against load: runs `vcsync bench steady` at several rates and plots p50/p99 down and up.

Usage (release build first: cargo build --release -p vcsync):
    pip install matplotlib
    python3 bench/latency.py [--binary target/release/vcsync] [--seconds 10] [--rates 50,100,200,400,800]
Writes bench/latency.json (every run's report) and bench/latency.png.
With --replot, only redraws the PNG from bench/latency.json.
"""

import argparse
import json
import pathlib
import subprocess

HERE = pathlib.Path(__file__).resolve().parent


def run(binary, rate, seconds):
    out = subprocess.run(
        [binary, "bench", "steady", "--rate", str(rate), "--seconds", str(seconds), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def plot(reports, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = sorted(reports, key=lambda r: r["offered_rate"])
    rates = [r["offered_rate"] for r in reports]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for field, label, style in [
        ("down_p50_ms", "down p50 (virtual create -> host pod seen)", "o-"),
        ("down_p99_ms", "down p99", "o--"),
        ("up_p50_ms", "up p50 (host Running -> virtual Running)", "s-"),
        ("up_p99_ms", "up p99", "s--"),
        ("direct_p50_ms", "baseline p50 (the same pods created directly on the host)", "^:"),
    ]:
        ax.plot(rates, [r.get(field) for r in reports], style, label=label)
    ax.axhline(2, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(10, color="grey", linewidth=0.8, linestyle=":")
    ax.text(rates[0], 2, " p50 target 2 ms", va="bottom", fontsize=8, color="grey")
    ax.text(rates[0], 10, " p99 target 10 ms", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("offered load (pods created per second in the virtual cluster)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("vcsync steady: latency against load (release, 2 cores, embedded servers)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(HERE.parent / "target/release/vcsync"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rates", default="50,100,200,400,800")
    parser.add_argument("--replot", action="store_true")
    args = parser.parse_args()
    data = HERE / "latency.json"
    if args.replot:
        reports = json.loads(data.read_text())
    else:
        reports = []
        for rate in [int(r) for r in args.rates.split(",")]:
            report = run(args.binary, rate, args.seconds)
            report.pop("requests", None)
            print(f"rate {rate}: down p50 {report.get('down_p50_ms')} p99 {report.get('down_p99_ms')}"
                  f" | up p50 {report.get('up_p50_ms')} p99 {report.get('up_p99_ms')}"
                  f" | direct p50 {report.get('direct_p50_ms')} ms", flush=True)
            reports.append(report)
        data.write_text(json.dumps(reports, indent=1) + "\n")
    plot(reports, HERE / "latency.png")


if __name__ == "__main__":
    main()
