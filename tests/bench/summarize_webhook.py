#!/usr/bin/env python3
"""Turns the oha runs of tests/bench/webhook.sh into target/bench/webhook.json.

Latencies are oha's (seconds) converted to milliseconds; the fixed-rate runs
were made with --latency-correction, so their percentiles count the time a
request waited for its scheduled start (no coordinated omission). Each of
the four runs is repeated once per round; the headline figures are medians
over the rounds, and every round is kept under "rounds".
"""
import argparse
import datetime
import json
import os
import statistics
from pathlib import Path


def load(path):
    with open(path) as f:
        return json.load(f)


def ms(seconds):
    return round(seconds * 1000.0, 3)


def run_summary(run):
    summary = run["summary"]
    percentiles = run["latencyPercentiles"]
    statuses = run.get("statusCodeDistribution", {})
    errors = run.get("errorDistribution", {})
    total = sum(statuses.values()) + sum(errors.values())
    return {
        "rps": round(summary["requestsPerSec"], 1),
        "requests": total,
        "success_rate": summary["successRate"],
        "non_200": sum(n for code, n in statuses.items() if code != "200"),
        "errors": errors,
        "p50_ms": ms(percentiles["p50"]),
        "p90_ms": ms(percentiles["p90"]),
        "p99_ms": ms(percentiles["p99"]),
        "p99_9_ms": ms(percentiles["p99.9"]),
        "max_ms": ms(summary["slowest"]),
    }


def median(values):
    return round(statistics.median(values), 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ["runs", "reviews", "oha-version", "load-before", "load-after"]:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--rss-kib", type=int, required=True)
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=int, required=True)
    args = parser.parse_args()

    runs = Path(args.runs)
    rounds = []
    for index in range(1, args.rounds + 1):
        one = {name: run_summary(load(runs / f"{name}-{index}.json"))
               for name in ["fixed", "noop-fixed", "max", "noop"]}
        one["ratio_to_noop"] = round(one["max"]["rps"] / one["noop"]["rps"], 3) if one["noop"]["rps"] else 0.0
        rounds.append(one)

    def med(run, key):
        return median([one[run][key] for one in rounds])

    fixed = {"rps": med("fixed", "rps"), "p50_ms": med("fixed", "p50_ms"), "p99_ms": med("fixed", "p99_ms")}
    ratio = median([one["ratio_to_noop"] for one in rounds])
    reviews = Path(args.reviews)
    report = {
        # The headline keys (issue 3 §6).
        "rps": fixed["rps"],
        "p50_ms": fixed["p50_ms"],
        "p99_ms": fixed["p99_ms"],
        "max_rps": med("max", "rps"),
        "noop_max_rps": med("noop", "rps"),
        "rss_mib": round(args.rss_kib / 1024.0, 1),
        "ratio_to_noop": round(ratio, 3),
        # The same fixed rate against /noop: the latency floor of this
        # TLS/HTTP stack plus the client on these CPUs, for comparison.
        "noop_p50_ms": med("noop-fixed", "p50_ms"),
        "noop_p99_ms": med("noop-fixed", "p99_ms"),
        "targets": {
            "p99_under_2ms_at_2000rps": fixed["p99_ms"] < 2.0 and fixed["rps"] >= 0.98 * args.rate,
            "max_rps_at_least_70pct_of_noop": ratio >= 0.70,
        },
        "setup": {
            "target_rate_rps": args.rate,
            "concurrency": args.concurrency,
            "seconds_per_run": args.seconds,
            "rounds": args.rounds,
            "endpoint": "/validate (Enforce, all 12 policies in policies/)",
            "ceiling_endpoint": "/noop (parse the review and allow, no evaluation)",
            "bodies": "Pod and Deployment CREATE AdmissionReviews, alternating (oha -Z)",
            "pod_review_bytes": (reviews / "pod-review.json").stat().st_size,
            "deployment_review_bytes": (reviews / "deployment-review.json").stat().st_size,
            "transport": "HTTPS (TLS 1.3, rustls) over loopback, HTTP/1.1 keep-alive",
            "load_generator": f"oha {args.oha_version}",
            "cpus": os.cpu_count(),
            "note": "oha and the webhook share the same CPUs (this machine has 2 cores), "
                    "so the figures include the client's cost; rss_mib is the server's VmHWM",
            "loadavg_before": args.load_before,
            "loadavg_after": args.load_after,
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "rounds": [
            {"fixed_rate": one["fixed"], "noop_fixed_rate": one["noop-fixed"], "max": one["max"],
             "noop_max": one["noop"], "ratio_to_noop": one["ratio_to_noop"]}
            for one in rounds
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
