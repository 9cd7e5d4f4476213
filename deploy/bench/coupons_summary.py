#!/usr/bin/env python3
"""The summary of one deploy/bench/coupons.sh run (issue 11, many coupons at
once): reads its output directory (facts.tsv, coupon-fleet's JSON files,
commands.txt), prints the tables and, with --append FILE, appends a dated
section to BENCHMARKS.md.

    coupons_summary.py OUT_DIR
    coupons_summary.py OUT_DIR --append BENCHMARKS.md
"""

import json
import sys
from pathlib import Path

# Issue 11's targets, at the largest count of the table.
IDLE_CONSUMER_MAX = 2.0
IDLE_REDIS_MAX = 2.0
SALE_DRAIN_MAX_S = 0.2
SPREAD_RSS_MAX_MIB = 64
# The spread sale's drain keeps up when every row is in this soon after the
# last answer (it never fell more than about a second of writes behind).
KEEPS_UP_S = 1.0


def read_facts(out):
    facts = {}
    for line in (out / "facts.tsv").read_text().splitlines():
        if "\t" in line:
            key, value = line.split("\t", 1)
            facts[key] = value
    return facts


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value, digits=2, unit=""):
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def sale_cell(sale):
    if sale is None:
        return "no result"
    if sale.get("last_202_to_rows_s") is not None:
        return f"{sale['last_202_to_rows_s']:.3f}"
    return f"not within {sale['waited_s']:.0f} s ({sale['rows_at_end']:,}/{sale['accepted']:,} rows)"


def table(out, facts, counts):
    sale_users = facts["settings"].split("SALE_USERS=")[1].split()[0]
    lines = [
        f"| active coupons | idle consumer CPU (% of a core) | idle Redis CPU (%) | a {int(sale_users):,}-user sale "
        "on one of them is in MySQL after (s, from its last 202 to the last row) |",
        "|---|---|---|---|",
    ]
    context = []
    for n in counts:
        sale = load_json(out / f"sale-{n}.json")
        created = load_json(out / f"create-{n}.json") or {}
        lines.append(
            f"| {n:,} | {fmt(num(facts.get(f'idle_consumer_pct_{n}')))} | "
            f"{fmt(num(facts.get(f'idle_redis_pct_{n}')))} | {sale_cell(sale)} |"
        )
        rss = num(facts.get(f"consumer_rss_kib_{n}"))
        mem = num(facts.get(f"redis_used_memory_{n}"))
        sale_bits = ""
        if sale:
            sale_bits = (
                f"; the sale: {sale['requests']:,} requests in {sale['load_s']:.2f} s, answers "
                f"{sale['answers']['by_code']}, {sale['rows_at_load_end']:,} rows at its last answer"
            )
        context.append(
            f"- {n:,} active: {len(created.get('ids', [])):,} created in {created.get('seconds', 0):.1f} s "
            f"({created.get('per_second', 0):,.0f}/s); idle coupon-api CPU {fmt(num(facts.get(f'idle_api_pct_{n}')))} %; "
            f"consumer RSS {fmt(rss / 1024 if rss else None, 1)} MiB; Redis used_memory "
            f"{fmt(mem / 1048576 if mem else None, 1)} MiB{sale_bits}"
        )
    return lines, context


def verdicts(out, facts, counts):
    n = counts[-1]
    sale = load_json(out / f"sale-{n}.json")
    drain = sale.get("last_202_to_rows_s") if sale else None
    checks = [
        (f"idle consumer CPU at {n:,} ≤ {IDLE_CONSUMER_MAX} %", num(facts.get(f"idle_consumer_pct_{n}")), IDLE_CONSUMER_MAX),
        (f"idle Redis CPU at {n:,} ≤ {IDLE_REDIS_MAX} %", num(facts.get(f"idle_redis_pct_{n}")), IDLE_REDIS_MAX),
        (f"sale on one of {n:,} in MySQL ≤ {SALE_DRAIN_MAX_S} s after its last 202", drain, SALE_DRAIN_MAX_S),
    ]
    return [f"{name}: {'met' if v is not None and v <= limit else 'NOT met'}" for name, v, limit in checks]


def spread_section(out, facts):
    s = load_json(out / "spread.json")
    if s is None:
        return ["Spread sale: not run (SPREAD=0) or no result."]
    consumers = sorted(k for k in facts if k.startswith("spread_consumer_hwm_kib_"))
    hwm = [num(facts[k]) / 1024 for k in consumers]
    cpu = [facts.get(k.replace("hwm_kib", "cpu_pct")) for k in consumers]
    drain = s.get("drain_after_load_s")
    keeps_up = drain is not None and drain <= KEEPS_UP_S
    hot, trickle = s["hot_answers"], s["trickle_answers"]
    lines = [
        f"Spread sale: {s['coupons']:,} coupons created through the API in {s['create_s']:.1f} s, "
        f"{s['hot']} hot ({s['hot_share']:.0%} of the requests), quantity {s['quantity']:,} each, "
        f"{len(consumers)} consumers:",
        "",
        "| measure | value | target | |",
        "|---|---|---|---|",
        f"| requests; req/s | {s['requests']:,} in {s['load_s']:.1f} s; {s['throughput_rps']:,.0f} | | |",
        f"| accepted: hot / trickle coupons | {hot['accepted']:,} / {trickle['accepted']:,} "
        f"(hot answers {hot['by_code']}; trickle {trickle['by_code']}) | | |",
        f"| largest lag (202s not yet in MySQL) during the load | {s['max_lag']:,} at {s['max_lag_t_s']:.1f} s | | |",
        f"| lag when the load ended | {s['lag_at_load_end']:,} | | |",
        f"| every row in MySQL after the last answer, s | {fmt(drain, 2) if drain is not None else 'not drained'} "
        f"| ≤ {KEEPS_UP_S} (keeps up) | {'met' if keeps_up else 'NOT met'} |",
        f"| rows counted at the end / accepted | {s['rows_counted']:,} / {s['accepted']:,} | equal | "
        f"{'met' if s['rows_counted'] == s['accepted'] else 'NOT met'} |",
        f"| consumer peak RSS (VmHWM), MiB, each | {', '.join(f'{m:.1f}' for m in hwm)} | ≤ {SPREAD_RSS_MAX_MIB} | "
        f"{'met' if hwm and max(hwm) <= SPREAD_RSS_MAX_MIB else 'NOT met'} |",
        f"| consumer CPU over the whole part (create, load, drain), % of a core, each | {', '.join(cpu)} | | |",
        f"| Redis CPU over the same, % of a core | {facts.get('spread_redis_cpu_pct')} | | |",
        "",
        "Accepted vs rows in MySQL over time (t s: accepted / rows / lag): " + series(s["samples"]),
    ]
    return lines


def series(samples, points=16):
    if not samples:
        return "none"
    step = max(1, len(samples) // points)
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    return "; ".join(f"{x['t_s']:.1f}: {x['accepted']:,} / {x['rows']:,} / {x['lag']:,}" for x in picked)


def render(out):
    facts = read_facts(out)
    counts = [int(k.rsplit("_", 1)[1]) for k in facts if k.startswith("idle_consumer_pct_")]
    lines = [
        f"## Many coupons at once (issue 11) — {facts['date']}, commit {facts['commit']}",
        "",
        f"Command: `{facts['command']}` (what it measures: the script's header).",
        f"Machine: {facts['nproc']} cores ({facts['cpu']}), {facts['mem_gib']} GiB RAM, Linux {facts['kernel']}; "
        f"Redis {facts['redis_version']} (private, AOF everysec), MariaDB {facts['mariadb_version']}; everything on "
        f"this one box. Load average (1, 5, 15 min) at start {facts['load_start']}, at end {facts.get('load_end', '?')}.",
        f"Settings: {facts['settings']}. Release build; coupon-api and coupon-consumer at RUST_LOG=info, no OTLP exporter.",
    ]
    if facts.get("note"):
        lines.append(f"Note: {facts['note']}")
    if counts:
        rows, context = table(out, facts, counts)
        lines += ["", *rows, "", "Against issue 11's targets: " + "; ".join(verdicts(out, facts, counts)) + ".", ""]
        lines += context
        hwm = num(facts.get("consumer_hwm_kib_table"))
        lines.append(f"- the table's consumer peak RSS (VmHWM): {fmt(hwm / 1024 if hwm else None, 1)} MiB")
    lines += ["", *spread_section(out, facts), ""]
    commands = (out / "commands.txt").read_text().strip() if (out / "commands.txt").exists() else ""
    lines += [f"Commands (in order; raw outputs were in `{out}`):", "", "```sh", commands, "```", ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = render(Path(argv[1]))
    print(text)
    if len(argv) == 4 and argv[2] == "--append":
        path = Path(argv[3])
        before = path.read_text() if path.exists() else "# Benchmarks\n"
        path.write_text(before.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
