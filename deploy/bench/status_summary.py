#!/usr/bin/env python3
"""The summary of one deploy/bench/status.sh run (issue 14, part 3: status
polls after a sale): reads its output directory (facts.tsv, the wrk outputs,
commands.txt), prints the table and, with --append FILE, appends a dated
section to BENCHMARKS.md.

    status_summary.py OUT_DIR
    status_summary.py OUT_DIR --append BENCHMARKS.md
"""

import sys
from pathlib import Path

from summarize import median, ratio, read_facts, verdict, wrk_result, wrk_rounds

# Issue 14's targets.
RPS_RATIO_MIN = 0.8
MYSQL_US_PER_POLL_MAX = 2.0


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def medians(runs, key):
    return median([run.get(key) for run in runs])


def non_2xx(runs):
    return sum(run["errors"]["status"] for run in runs)


def summary(out):
    status, coupon = wrk_rounds(out, "status"), wrk_rounds(out, "coupon")
    longpoll = wrk_result(out / "wrk-longpoll.txt")
    rps_status, rps_coupon = medians(status, "rps"), medians(coupon, "rps")
    rps_ratio = ratio(rps_status, rps_coupon)
    mysql_us = medians(status, "mysqld_cpu_us")
    lines = [
        "| measure | status polls (A) | GET /coupons/{id} (B) | target | |",
        "|---|---|---|---|---|",
        f"| req/s per round | {', '.join(fmt(r['rps'], 0) for r in status)} | "
        f"{', '.join(fmt(r['rps'], 0) for r in coupon)} | | |",
        f"| median req/s; A / B | {fmt(rps_status, 0)} | {fmt(rps_coupon, 0)} | ≥ {RPS_RATIO_MIN} × B | "
        f"{fmt(rps_ratio, 3)}: {verdict(None if rps_ratio is None else rps_ratio >= RPS_RATIO_MIN)} |",
        f"| mariadbd CPU per request, µs (median) | {fmt(mysql_us, 3)} | {fmt(medians(coupon, 'mysqld_cpu_us'), 3)} | "
        f"≤ {MYSQL_US_PER_POLL_MAX} (A) | {verdict(None if mysql_us is None else mysql_us <= MYSQL_US_PER_POLL_MAX)} |",
    ]
    for name, key in [("coupon-api", "api_cpu_us"), ("Redis", "redis_cpu_us")]:
        lines.append(f"| {name} CPU per request, µs (median) | {fmt(medians(status, key))} | {fmt(medians(coupon, key))} | | |")
    lines += [
        f"| p50 / p99 latency, ms (median) | {fmt(medians(status, 'p50_ms'), 3)} / {fmt(medians(status, 'p99_ms'), 3)} | "
        f"{fmt(medians(coupon, 'p50_ms'), 3)} / {fmt(medians(coupon, 'p99_ms'), 3)} | | |",
        f"| non-2xx answers, all rounds | {non_2xx(status)} | {non_2xx(coupon)} | 0 | |",
    ]
    if longpoll:
        lines.append(
            f"| long-polls (`?wait=5`, every status final): req/s; mariadbd µs per poll; non-2xx | "
            f"{fmt(longpoll['rps'], 0)}; {fmt(longpoll.get('mysqld_cpu_us'), 3)}; {non_2xx([longpoll])} | | | |"
        )
    return "\n".join(lines)


def section(out, facts, table):
    commands = (out / "commands.txt").read_text().strip()
    return f"""
## Status polls after a sale (issue 14, part 3) — {facts.get('date')}, commit {facts.get('commit')}

Command: `deploy/bench/status.sh` (what it measures: the script's header).
Machine: {facts.get('nproc')} cores ({facts.get('cpu')}), Linux {facts.get('kernel')}; Redis {facts.get('redis_version')} (private, AOF everysec), MariaDB {facts.get('mariadb_version')} (a private mariadbd, so the machine's shared MariaDB's other work is not counted); everything on this one box. Load average (1, 5, 15 min) at start {facts.get('load_start')}, at end {facts.get('load_end')}.
Settings: {facts.get('settings')}. Release build; coupon-api and coupon-consumer at RUST_LOG=info, no OTLP exporter. wrk -t1, A and B alternated.
The sale: {facts.get('sale_rows')} rows in MySQL; Redis' `issued-at` hash held {facts.get('redis_issued_at_records')} records; a sample answer: `{facts.get('sample_status')}`.

{table}

Commands (in order; raw outputs were in `{out}`):

```sh
{commands}
```
"""


def main():
    out = Path(sys.argv[1])
    facts = read_facts(out)
    table = summary(out)
    print(table)
    if len(sys.argv) > 3 and sys.argv[2] == "--append":
        with open(sys.argv[3], "a") as md:
            md.write(section(out, facts, table))
        print(f"appended to {sys.argv[3]}")


if __name__ == "__main__":
    main()
