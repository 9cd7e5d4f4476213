#!/usr/bin/env python3
"""The summary of one deploy/bench/hot.sh run: per label, the medians over the
rounds of requests/s, p99 and CPU per request (server from /proc, Redis from
INFO cpu); the ratios against issue 14's targets; with --append FILE, a dated
section in BENCHMARKS.md.

    hot_summary.py OUT_DIR
    hot_summary.py OUT_DIR --append BENCHMARKS.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from summarize import check, f, median, ratio, read_facts, wrk_rounds  # noqa: E402

LABELS = [
    "sale-api", "sale-ceiling", "soldout-api", "soldout-ceiling", "soldout-floor",
    "accept-api", "accept-wait", "sale-wait",
]


def compute(out):
    rows = {}
    for label in LABELS:
        runs = wrk_rounds(out, label)
        rows[label] = {
            key: median([r[key] for r in runs if key in r])
            for key in ("rps", "p99_ms", "server_cpu_us", "redis_cpu_us", "requests")
        }
        rows[label]["runs"] = runs
    return rows


def verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def targets(rows):
    tput = ratio(rows["sale-api"]["rps"], rows["sale-ceiling"]["rps"])
    redis = rows["sale-api"]["redis_cpu_us"]
    sold = ratio(rows["soldout-api"]["server_cpu_us"], rows["soldout-ceiling"]["server_cpu_us"])
    floor = ratio(rows["soldout-floor"]["server_cpu_us"], rows["soldout-ceiling"]["server_cpu_us"])
    over_floor = ratio(rows["soldout-api"]["server_cpu_us"], rows["soldout-floor"]["server_cpu_us"])
    wait_rps = ratio(rows["accept-wait"]["rps"], rows["accept-api"]["rps"])
    wait_p99 = ratio(rows["accept-wait"]["p99_ms"], rows["accept-api"]["p99_ms"])
    sale_wait = ratio(rows["sale-wait"]["rps"], rows["sale-api"]["rps"])
    return [
        ("sale, coupon-api req/s ÷ coupon-ceiling's", f(tput, "{:.2f}"), "≥ 1.2", verdict(check(tput, lambda v: v >= 1.2))),
        ("sale, Redis CPU per request (µs)", f(redis, "{:.2f}"), "≤ 2", verdict(check(redis, lambda v: v <= 2))),
        ("sold out, coupon-api CPU per request ÷ coupon-ceiling's", f(sold, "{:.2f}"), "≤ 0.5", verdict(check(sold, lambda v: v <= 0.5))),
        ("sold out, a fixed answer on the same stack (the floor) ÷ coupon-ceiling's CPU", f(floor, "{:.2f}"), "reported", "–"),
        ("sold out, coupon-api CPU per request ÷ the floor's", f(over_floor, "{:.2f}"), "reported", "–"),
        ("every request accepted, REDIS_WAIT_REPLICAS=1 req/s ÷ =0", f(wait_rps, "{:.2f}"), "reported", "–"),
        ("every request accepted, REDIS_WAIT_REPLICAS=1 p99 ÷ =0", f(wait_p99, "{:.2f}"), "reported", "–"),
        ("sale, REDIS_WAIT_REPLICAS=1 req/s ÷ =0", f(sale_wait, "{:.2f}"), "reported", "–"),
    ]


def tables(rows):
    lines = [
        "| run | req/s | p99 ms | server CPU µs/req | Redis CPU µs/req |",
        "|---|---|---|---|---|",
    ]
    for label in LABELS:
        r = rows[label]
        lines.append(
            f"| {label} | {f(r['rps'], '{:,.0f}')} | {f(r['p99_ms'], '{:.2f}')} "
            f"| {f(r['server_cpu_us'], '{:,.1f}')} | {f(r['redis_cpu_us'], '{:.2f}')} |"
        )
    lines += ["", "| target | value | goal | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(rows)]
    return "\n".join(lines)


def section(rows, facts, out):
    commands = (out / "commands.txt").read_text().rstrip() if (out / "commands.txt").exists() else ""
    issued = ", ".join(f"{k} {v}" for k, v in sorted(facts.items()) if "_issued_" in k)
    return (
        f"## The hot coupon (issue 14) — {facts.get('date', '?')}, commit {facts.get('commit', '?')}\n\n"
        f"Written by `deploy/bench/hot.sh`. Machine: {facts.get('nproc', '?')} cores ({facts.get('cpu', '?')}), "
        f"Linux {facts.get('kernel', '?')}; Redis {facts.get('redis_version', '?')} (private master, AOF everysec, "
        f"one replica), MariaDB {facts.get('mariadb_version', '?')}; everything on this one box. Load average at "
        f"start {facts.get('load_start', '?')}, at end {facts.get('load_end', '?')}. Settings: {facts.get('settings', '?')}. "
        "Medians over the rounds; CPU per request = the process's utime + stime (Redis: INFO cpu) over the run ÷ "
        "wrk's requests. coupon-ceiling runs lua/issue.lua by one EVALSHA per request; soldout-floor is its "
        "trivial route (the same request, a fixed 409, no Redis).\n\n"
        f"{tables(rows)}\n\nAccepted per sale (SCARD): {issued}. {facts.get('replica_link', '')}\n\n"
        f"Commands (in order; raw outputs were in `{out}`):\n\n```sh\n{commands}\n```\n"
    )


def main(argv):
    out = Path(argv[1])
    rows, facts = compute(out), read_facts(out)
    print(tables(rows))
    if "--append" in argv:
        path = Path(argv[argv.index("--append") + 1])
        before = path.read_text().rstrip() + "\n\n" if path.exists() else ""
        path.write_text(before + section(rows, facts, out))


if __name__ == "__main__":
    main(sys.argv)
