#!/usr/bin/env python3
"""The summary of one deploy/bench/status.sh run (issue 14, part 3: status
polls after a sale): reads its output directory (facts.tsv, the wrk outputs,
commands.txt), prints the table and, with --append FILE, appends a dated
section to BENCHMARKS.md.

    status_summary.py OUT_DIR
    status_summary.py OUT_DIR --append BENCHMARKS.md
"""

import json
import statistics
import sys
from pathlib import Path

# Issue 14's targets.
RPS_RATIO_MIN = 0.8
MYSQL_US_PER_POLL_MAX = 2.0


def read_facts(out):
    facts = {}
    for line in (out / "facts.tsv").read_text().splitlines():
        if "\t" in line:
            key, value = line.split("\t", 1)
            facts[key] = value
    return facts


def read_wrk(path):
    """The WRK_JSON and WRK_CPU lines of one wrk output, merged; None if absent."""
    result = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        for tag in ("WRK_JSON ", "WRK_CPU "):
            if line.startswith(tag):
                result.update(json.loads(line[len(tag):]))
    return result if "requests" in result else None


def us_per_request(run, ticks_key):
    if not run or not run["requests"]:
        return None
    return run[ticks_key] * 1e6 / run["clk_tck"] / run["requests"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(ok):
    return "met" if ok else "NOT met"


def rounds(out, label):
    runs = []
    n = 1
    while (out / f"wrk-{label}-{n}.txt").exists():
        runs.append(read_wrk(out / f"wrk-{label}-{n}.txt"))
        n += 1
    return runs


def summary(out, facts):
    status, coupon = rounds(out, "status"), rounds(out, "coupon")
    longpoll = read_wrk(out / "wrk-longpoll.txt")
    rps_status = median([r and r["rps"] for r in status])
    rps_coupon = median([r and r["rps"] for r in coupon])
    ratio = rps_status / rps_coupon if rps_status and rps_coupon else None
    mysql_us = median([us_per_request(r, "mysqld_ticks") for r in status])
    lines = [
        "| measure | status polls (A) | GET /coupons/{id} (B) | target | |",
        "|---|---|---|---|---|",
        f"| req/s per round | {', '.join(fmt(r and r['rps'], 0) for r in status)} | "
        f"{', '.join(fmt(r and r['rps'], 0) for r in coupon)} | | |",
        f"| median req/s; A / B | {fmt(rps_status, 0)} | {fmt(rps_coupon, 0)} | ≥ {RPS_RATIO_MIN} × B | "
        f"{fmt(ratio, 3)}: {verdict(ratio is not None and ratio >= RPS_RATIO_MIN)} |",
        f"| mariadbd CPU per request, µs (median) | {fmt(mysql_us, 3)} | "
        f"{fmt(median([us_per_request(r, 'mysqld_ticks') for r in coupon]), 3)} | ≤ {MYSQL_US_PER_POLL_MAX} (A) | "
        f"{verdict(mysql_us is not None and mysql_us <= MYSQL_US_PER_POLL_MAX)} |",
        f"| coupon-api CPU per request, µs (median) | {fmt(median([us_per_request(r, 'api_ticks') for r in status]))} | "
        f"{fmt(median([us_per_request(r, 'api_ticks') for r in coupon]))} | | |",
        f"| Redis CPU per request, µs (median) | {fmt(median([us_per_request(r, 'redis_ticks') for r in status]))} | "
        f"{fmt(median([us_per_request(r, 'redis_ticks') for r in coupon]))} | | |",
        f"| p50 / p99 latency, ms (median) | {fmt(median([r and r['p50_ms'] for r in status]), 3)} / "
        f"{fmt(median([r and r['p99_ms'] for r in status]), 3)} | {fmt(median([r and r['p50_ms'] for r in coupon]), 3)} / "
        f"{fmt(median([r and r['p99_ms'] for r in coupon]), 3)} | | |",
        f"| non-2xx answers, all rounds | {sum(r['non_2xx'] for r in status if r)} | "
        f"{sum(r['non_2xx'] for r in coupon if r)} | 0 | |",
    ]
    if longpoll:
        lines.append(
            f"| long-polls (`?wait=5`, every status final): req/s; mariadbd µs per poll; non-2xx | "
            f"{fmt(longpoll['rps'], 0)}; {fmt(us_per_request(longpoll, 'mysqld_ticks'), 3)}; {longpoll['non_2xx']} | | | |"
        )
    return "\n".join(lines), ratio, mysql_us


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
    table, ratio, mysql_us = summary(out, facts)
    print(table)
    if len(sys.argv) > 3 and sys.argv[2] == "--append":
        with open(sys.argv[3], "a") as md:
            md.write(section(out, facts, table))
        print(f"appended to {sys.argv[3]}")


if __name__ == "__main__":
    main()
