#!/usr/bin/env python3
"""Turns the oha runs of tests/bench/webhook.sh into target/bench/webhook.json.

Latencies are oha's (seconds) converted to milliseconds; the fixed-rate runs
were made with --latency-correction, so their percentiles count the time a
request waited for its scheduled start (no coordinated omission). Each of
the four runs is repeated once per round; the headline figures are medians
over the rounds, and every round is kept under "rounds".

The tail is judged against /noop run at the same rate right after: a round's
p99_ratio_to_noop is /validate's p99 over /noop's. The server's own view of
each fixed-rate /validate run (its /metrics before and after) gives the p99
of every stage of aiops_admission_stage_seconds, as the upper bound of the
histogram bucket that holds it.

`summarize_webhook.py --table target/bench/webhook.json` prints the
per-round table of BENCHMARKS.md.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
from pathlib import Path

STAGES = ["parse", "match", "evaluate", "encode"]
BUCKET = re.compile(r'^aiops_admission_stage_seconds_bucket\{([^}]*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')


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


def stage_buckets(path):
    """{stage: {upper bound in seconds: cumulative count}} from a /metrics text."""
    stages = {}
    if not path.exists():
        return stages
    for line in path.read_text().splitlines():
        match = BUCKET.match(line)
        if not match:
            continue
        labels = dict(LABEL.findall(match.group(1)))
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        stages.setdefault(labels["stage"], {})[bound] = float(match.group(2))
    return stages


def stage_p99_ms(before, after):
    """Per stage, the bucket bound (ms) under which 99 % of the run's samples fell."""
    result = {}
    for stage in STAGES:
        counts = after.get(stage)
        if not counts:
            continue
        earlier = before.get(stage, {})
        delta = {bound: counts[bound] - earlier.get(bound, 0.0) for bound in sorted(counts)}
        total = delta.get(math.inf, 0.0)
        if total <= 0:
            continue
        bound = next(b for b, n in delta.items() if n >= 0.99 * total)
        result[stage] = None if bound == math.inf else round(bound * 1000.0, 3)
    return result


def switches_per_1k(runs, name, requests):
    """The server's (voluntary, involuntary) context switches per 1,000
    requests of one run, from the counts webhook.sh read before and after it."""
    before, after = runs / f"{name}.switches.before", runs / f"{name}.switches"
    if not (before.exists() and after.exists()) or not requests:
        return None
    start = [int(n) for n in before.read_text().split()]
    end = [int(n) for n in after.read_text().split()]
    return {
        "voluntary": round((end[0] - start[0]) * 1000.0 / requests, 1),
        "involuntary": round((end[1] - start[1]) * 1000.0 / requests, 1),
    }


def tail_ratio(validate_ms, noop_ms):
    return round(validate_ms / noop_ms, 2) if noop_ms else None


def switch_text(switches):
    """Involuntary switches per 1k requests, /validate vs /noop (a report
    from before they were counted has none)."""
    def one(name):
        counts = switches.get(name)
        return "–" if counts is None else f"{counts['involuntary']:g}"
    return f"{one('fixed_rate')} vs {one('noop_fixed_rate')}"


def print_table(report):
    """The per-round table of BENCHMARKS.md."""
    print("| round | load (1/5/15 min) | /validate p99 / p99.9 | /noop p99 / p99.9 | p99 ratio | "
          "server stage p99 (parse / match / evaluate / encode) | max rps /validate vs /noop (ratio) "
          "| server involuntary switches per 1k requests, /validate vs /noop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for index, one in enumerate(report["rounds"], start=1):
        fixed, noop = one["fixed_rate"], one["noop_fixed_rate"]
        stages = one.get("server_stage_p99_ms", {})
        stage_text = " / ".join(
            "–" if stages.get(s) is None else f"≤ {stages[s]:g}" for s in STAGES
        ) + " ms"
        print(f"| {index} | {one.get('load', '–')} "
              f"| {fixed['p99_ms']:g} / {fixed['p99_9_ms']:g} ms "
              f"| {noop['p99_ms']:g} / {noop['p99_9_ms']:g} ms "
              f"| {one['p99_ratio_to_noop']} | {stage_text} "
              f"| {one['max']['rps']:,.0f} vs {one['noop_max']['rps']:,.0f} ({one['ratio_to_noop']}) "
              f"| {switch_text(one.get('server_switches_per_1k', {}))} |")
    if not report.get("valid", True):
        print(f"\nINVALID: {report['failed_requests']} requests failed")
    print(f"\nmedians: p99 ratio {report['p99_ratio_to_noop']}, "
          f"max-rps ratio {report['ratio_to_noop']}, p99.9 {report['p99_9_ms']} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", help="print the per-round table of this webhook.json and stop")
    for name in ["runs", "reviews", "oha-version", "load-before", "load-after"]:
        parser.add_argument(f"--{name}")
    for name in ["rounds", "rss-kib", "rate", "concurrency", "seconds"]:
        parser.add_argument(f"--{name}", type=int)
    args = parser.parse_args()
    if args.table:
        print_table(load(args.table))
        return
    missing = [name for name, value in vars(args).items() if value is None and name != "table"]
    if missing:
        parser.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))

    runs = Path(args.runs)
    rounds = []
    for index in range(1, args.rounds + 1):
        one = {name: run_summary(load(runs / f"{name}-{index}.json"))
               for name in ["fixed", "noop-fixed", "max", "noop"]}
        one["ratio_to_noop"] = round(one["max"]["rps"] / one["noop"]["rps"], 3) if one["noop"]["rps"] else 0.0
        one["p99_ratio_to_noop"] = tail_ratio(one["fixed"]["p99_ms"], one["noop-fixed"]["p99_ms"])
        one["server_stage_p99_ms"] = stage_p99_ms(
            stage_buckets(runs / f"fixed-{index}.before.metrics"),
            stage_buckets(runs / f"fixed-{index}.metrics"))
        one["server_switches_per_1k"] = {
            name: switches_per_1k(runs, f"{name}-{index}", one[name]["requests"])
            for name in ["fixed", "noop-fixed"]
        }
        load_file = runs / f"load-{index}"
        one["load"] = load_file.read_text().strip() if load_file.exists() else None
        rounds.append(one)

    def med(run, key):
        return median([one[run][key] for one in rounds])

    fixed = {"rps": med("fixed", "rps"), "p50_ms": med("fixed", "p50_ms"), "p99_ms": med("fixed", "p99_ms")}
    ratio = median([one["ratio_to_noop"] for one in rounds])
    tail_ratios = [one["p99_ratio_to_noop"] for one in rounds if one["p99_ratio_to_noop"] is not None]
    p99_ratio = median(tail_ratios) if tail_ratios else None
    # The 2 ms target is only judged in rounds where the stack itself
    # (/noop at the same rate) stayed under it.
    judged = [one for one in rounds if one["noop-fixed"]["p99_ms"] <= 2.0]
    # A request that failed (a non-200 answer, or an error such as a
    # timeout or a reset) is not in oha's latency percentiles, so it could
    # flatter them: any failed request marks the whole report invalid and
    # leaves its targets unjudged.
    failed = sum(one[run]["non_200"] + sum(one[run]["errors"].values())
                 for one in rounds for run in ["fixed", "noop-fixed", "max", "noop"])
    reviews = Path(args.reviews)
    report = {
        "failed_requests": failed,
        "valid": failed == 0,
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
        # The tail against the same stack at the same rate (issue 19): the
        # median over rounds of /validate's p99 over /noop's, and p99.9.
        "p99_ratio_to_noop": p99_ratio,
        "p99_9_ms": med("fixed", "p99_9_ms"),
        "noop_p99_9_ms": med("noop-fixed", "p99_9_ms"),
        "targets": {
            "p99_under_2ms_at_2000rps": fixed["p99_ms"] < 2.0 and fixed["rps"] >= 0.98 * args.rate,
            "max_rps_at_least_70pct_of_noop": ratio >= 0.70,
            # null: no round had /noop itself under 2 ms, nothing to judge.
            "p99_under_2ms_where_noop_under_2ms":
                all(one["fixed"]["p99_ms"] <= 2.0 for one in judged) if judged else None,
            "p99_ratio_to_noop_at_most_1_5": p99_ratio is not None and p99_ratio <= 1.5,
            "max_rps_at_least_75pct_of_noop": ratio >= 0.75,
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
            {"load": one["load"], "fixed_rate": one["fixed"], "noop_fixed_rate": one["noop-fixed"],
             "max": one["max"], "noop_max": one["noop"], "ratio_to_noop": one["ratio_to_noop"],
             "p99_ratio_to_noop": one["p99_ratio_to_noop"],
             "p99_9_ms": one["fixed"]["p99_9_ms"], "noop_p99_9_ms": one["noop-fixed"]["p99_9_ms"],
             "server_stage_p99_ms": one["server_stage_p99_ms"],
             # Per 1,000 requests of the fixed-rate runs: the server's
             # threads preempted (involuntary) or waiting (voluntary).
             "server_switches_per_1k": {
                 "fixed_rate": one["server_switches_per_1k"]["fixed"],
                 "noop_fixed_rate": one["server_switches_per_1k"]["noop-fixed"]}}
            for one in rounds
        ],
    }
    if failed:
        report["targets"] = {name: None for name in report["targets"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
