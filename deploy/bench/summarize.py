#!/usr/bin/env python3
"""The summary of one deploy/bench/run.sh run: reads the raw results in its
output directory (facts.tsv, wrk / redis-benchmark / coupon-bench /
coupon-insert-ceiling outputs, perf reports, commands.txt), computes the ratios
(ours / best case) against the targets, prints the table and, with --append
FILE, appends a dated section to BENCHMARKS.md and a line to its history table.

    summarize.py OUT_DIR                    # print the summary
    summarize.py OUT_DIR --check-http       # exit 1 if the HTTP targets are missed
    summarize.py OUT_DIR --append BENCHMARKS.md
"""

import csv
import json
import statistics
import sys
from pathlib import Path

HISTORY_MARK = "<!-- history: new rows above this line -->"
HEADER = f"""# Benchmarks

Written by `deploy/bench/run.sh` (see its header for what it measures and how);
one section per run, newest last, and one line per run in the history below.
The machine is shared (other builds and tests may run meanwhile): each section
gives the load average at its start and end. Ratios are ours / best case, of
medians. A run is not a test and the suite never runs it.

## History

| date | commit | API req/s ratio (≥ 0.90) | p99 ratio (≤ 1.3) | drain ratio, 2 consumers (≥ 0.6) | API RSS max MiB (≤ 64) | 1M-user sale | load start → end |
|---|---|---|---|---|---|---|---|
{HISTORY_MARK}
"""


def read_facts(out):
    facts = {}
    path = out / "facts.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            if "\t" in line:
                key, value = line.split("\t", 1)
                facts[key] = value
    return facts


def num(value, default=None):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wrk_result(path):
    """wrk's WRK_JSON line, with CPU microseconds per request from the WRK_CPU
    line when there is one: `<name>_cpu_us` for each of its `<name>_ticks`
    (run.sh: server and redis; status.sh: mysqld, api and redis) and of its
    `<name>_us`, CPU read in microseconds (hot.sh: Redis' INFO cpu)."""
    if not path.exists():
        return None
    result, cpu = None, None
    for line in path.read_text().splitlines():
        try:
            if line.startswith("WRK_JSON "):
                result = json.loads(line[len("WRK_JSON "):])
            elif line.startswith("WRK_CPU "):
                cpu = json.loads(line[len("WRK_CPU "):])
        except ValueError:
            pass
    if result and cpu and result.get("requests"):
        per_tick = 1e6 / cpu["clk_tck"] / result["requests"]
        for key, value in cpu.items():
            if key.endswith("_ticks"):
                result[key[: -len("_ticks")] + "_cpu_us"] = value * per_tick
            elif key.endswith("_us"):
                result[key[: -len("_us")] + "_cpu_us"] = value / result["requests"]
    return result


def wrk_rounds(out, label):
    rounds = []
    n = 1
    while (out / f"wrk-{label}-{n}.txt").exists():
        result = wrk_result(out / f"wrk-{label}-{n}.txt")
        if result:
            rounds.append(result)
        n += 1
    return rounds


def redis_benchmark(out):
    path = out / "redis-benchmark.csv"
    if not path.exists():
        return None
    rows = list(csv.reader(path.read_text().splitlines()))
    if len(rows) < 2:
        return None
    row = dict(zip(rows[0], rows[-1]))
    return {"rps": num(row.get("rps")), "p50_ms": num(row.get("p50_latency_ms")), "p99_ms": num(row.get("p99_latency_ms"))}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def drain_rates(facts, k):
    rows = num(facts.get(f"drain{k}_rows"))
    first = num(facts.get(f"drain{k}_rows_at_first_seen"), 0.0)
    t_start, t_first, t_done = (num(facts.get(f"drain{k}_{t}")) for t in ("t_start", "t_first", "t_done"))
    span = num(facts.get(f"drain{k}_issued_span_s"))
    polled = (rows - first) / (t_done - t_first) if None not in (rows, t_done, t_first) and t_done > t_first else None
    wall = rows / (t_done - t_start) if None not in (rows, t_done, t_start) and t_done > t_start else None
    by_span = rows / span if rows and span else None
    return {"rows": rows, "polled": polled, "wall": wall, "span": by_span,
            "drain_s": (t_done - t_first) if None not in (t_done, t_first) else None}


def compute(out):
    facts = read_facts(out)
    api, ceiling = wrk_rounds(out, "api"), wrk_rounds(out, "ceiling")
    r = {"facts": facts, "api_rounds": api, "ceiling_rounds": ceiling, "rb": redis_benchmark(out)}
    r["api_rps"] = median([x["rps"] for x in api])
    r["ceiling_rps"] = median([x["rps"] for x in ceiling])
    r["api_p99"] = median([x["p99_ms"] for x in api])
    r["ceiling_p99"] = median([x["p99_ms"] for x in ceiling])
    r["api_p50"] = median([x["p50_ms"] for x in api])
    r["ceiling_p50"] = median([x["p50_ms"] for x in ceiling])
    r["api_cpu"] = median([x.get("server_cpu_us") for x in api])
    r["ceiling_cpu"] = median([x.get("server_cpu_us") for x in ceiling])
    r["api_redis_cpu"] = median([x.get("redis_cpu_us") for x in api])
    r["ceiling_redis_cpu"] = median([x.get("redis_cpu_us") for x in ceiling])
    r["rps_ratio"] = ratio(r["api_rps"], r["ceiling_rps"])
    r["p99_ratio"] = ratio(r["api_p99"], r["ceiling_p99"])
    r["bench_api"] = load_json(out / "bench-api.json")
    ceilings = [load_json(out / f"insert-ceiling-{t}.json") for t in ("before", "between", "after")]
    r["insert_ceilings"] = [c["rows_per_s"] for c in ceilings if c]
    r["insert_ceiling"] = median(r["insert_ceilings"])
    consumer_sql = load_json(out / "insert-ceiling-consumer-sql.json")
    r["consumer_sql"] = consumer_sql["rows_per_s"] if consumer_sql else None
    r["drain"] = {k: drain_rates(facts, k) for k in (1, 2)}
    for k in (1, 2):
        d = r["drain"][k]
        d["ratio"] = ratio(d["polled"], r["insert_ceiling"])
        d["transactions"] = num(facts.get(f"drain{k}_transactions"))
        d["com_insert"] = num(facts.get(f"drain{k}_com_insert"))
    rss = [num(facts.get(k)) for k in ("api_rss_load_max_kib", "api_rss_sale_max_kib")]
    rss = [v for v in rss if v is not None]
    r["rss_max_mib"] = max(rss) / 1024 if rss else None
    card = num(facts.get("mem_set_card"))
    users = num(facts.get("drain1_accepted")) or card
    r["set_bytes_per_user"] = ratio(num(facts.get("mem_set_bytes")), card)
    r["stream_before_per_user"] = ratio(num(facts.get("mem_stream_before_bytes")), num(facts.get("mem_stream_before_len")))
    r["stream_after_per_user"] = ratio(num(facts.get("mem_stream_after_bytes")), users)
    r["sale"] = load_json(out / "sale.json")
    return r


def f(value, fmt="{:,.0f}", none="–"):
    return none if value is None else fmt.format(value)


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "NOT met")


def check(value, pred):
    return None if value is None else pred(value)


def table(r):
    facts = r["facts"]
    rb = r["rb"] or {}
    d1, d2 = r["drain"][1], r["drain"][2]
    rows_per_insert = [
        (d["rows"] / d["transactions"]) if d["rows"] and d["transactions"] else None for d in (d1, d2)
    ]
    com = [d["com_insert"] for d in (d1, d2)]
    insert_ok = None
    if all(v is not None for v in rows_per_insert + com) and d1["rows"] and d2["rows"]:
        insert_ok = min(rows_per_insert) >= 10 and com[0] < d1["rows"] / 10 and com[1] < d2["rows"] / 10
    sale = r["sale"] or {}
    drain = sale.get("drain") or {}
    sale_ok = None if not sale else bool(sale.get("pass")) and facts.get("sale_exit") == "0"
    lines = [
        "| measure | coupon-rush | best case | ratio | target | |",
        "|---|---|---|---|---|---|",
        f"| HTTP throughput, req/s (wrk -c{r.get('connections', '')}, median of {len(r['api_rounds'])}) | {f(r['api_rps'])} | {f(r['ceiling_rps'])} | {f(r['rps_ratio'], '{:.3f}')} | ≥ 0.90 | {verdict(check(r['rps_ratio'], lambda v: v >= 0.90))} |",
        f"| HTTP p99 latency, ms (median) | {f(r['api_p99'], '{:.2f}')} | {f(r['ceiling_p99'], '{:.2f}')} | {f(r['p99_ratio'], '{:.3f}')} | ≤ 1.3 | {verdict(check(r['p99_ratio'], lambda v: v <= 1.3))} |",
        f"| HTTP p50 latency, ms (median) | {f(r['api_p50'], '{:.2f}')} | {f(r['ceiling_p50'], '{:.2f}')} | {f(ratio(r['api_p50'], r['ceiling_p50']), '{:.3f}')} | | |",
        f"| server CPU per request, µs (user + system; Redis's in brackets) | {f(r['api_cpu'], '{:.1f}')} ({f(r['api_redis_cpu'], '{:.1f}')}) | {f(r['ceiling_cpu'], '{:.1f}')} ({f(r['ceiling_redis_cpu'], '{:.1f}')}) | {f(ratio(r['api_cpu'], r['ceiling_cpu']), '{:.3f}')} | (context) | |",
        f"| Redis alone: redis-benchmark EVALSHA issue.lua, req/s (p99 ms) | {f(r['api_rps'])} | {f(rb.get('rps'))} ({f(rb.get('p99_ms'), '{:.2f}')}) | {f(ratio(r['api_rps'], rb.get('rps')), '{:.3f}')} | (context) | |",
        f"| drain, 1 consumer, rows/s | {f(d1['polled'])} | {f(r['insert_ceiling'])} | {f(d1['ratio'], '{:.3f}')} | (context) | |",
        f"| the consumer's SQL alone (lock, existence SELECT, INSERT IGNORE, guarded UPDATE), rows/s | {f(r['consumer_sql'])} | {f(r['insert_ceiling'])} | {f(ratio(r['consumer_sql'], r['insert_ceiling']), '{:.3f}')} | (context) | |",
        f"| drain, 2 consumers, rows/s | {f(d2['polled'])} | {f(r['insert_ceiling'])} | {f(d2['ratio'], '{:.3f}')} | ≥ 0.6 | {verdict(check(d2['ratio'], lambda v: v >= 0.6))} |",
        f"| rows per INSERT statement (1 / 2 consumers; MariaDB Com_insert delta) | {f(rows_per_insert[0], '{:.0f}')} / {f(rows_per_insert[1], '{:.0f}')} (Com_insert +{f(com[0])} / +{f(com[1])} for {f(d1['rows'])} / {f(d2['rows'])} rows) | {facts.get('settings', '').split('BATCH=')[-1].split()[0] if 'BATCH=' in facts.get('settings', '') else '–'} | | never 1 per event | {verdict(insert_ok)} |",
        f"| coupon-api resident memory under load, MiB (max; no /metrics scraper) | {f(r['rss_max_mib'], '{:.1f}')} | | | ≤ 64 | {verdict(check(r['rss_max_mib'], lambda v: v <= 64))} |",
        f"| Redis: issued SET, bytes per accepted user ({facts.get('mem_set_encoding', '?')}) | {f(r['set_bytes_per_user'], '{:.1f}')} | | | small | |",
        f"| Redis: stream before trimming, bytes per entry | {f(r['stream_before_per_user'], '{:.1f}')} | | | small | |",
        f"| Redis: stream after the consumers trimmed it, bytes per accepted user | {f(r['stream_after_per_user'], '{:.3f}')} | | | small | |",
        f"| {f(num(sale.get('config', {}).get('users')))}-user sale for {f(sum(c.get('total_quantity', 0) for c in sale.get('coupons', [])) or None)} coupons: req/s; drain after load, s; verification | {f(sale.get('throughput_rps'))} req/s; {f(drain.get('time_s'), '{:.1f}')} s; {'PASS' if sale.get('pass') else 'FAIL'} | | | PASS | {verdict(sale_ok)} |",
    ]
    return "\n".join(lines)


def details(r, out):
    facts = r["facts"]
    parts = []
    rounds = [
        "| round | coupon-api req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | coupon-ceiling req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | req/s ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(r["api_rounds"], r["ceiling_rounds"]), 1):
        rounds.append(
            f"| {i} | {a['rps']:,.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {f(a.get('server_cpu_us'), '{:.1f}')} | {a['errors']['status']} "
            f"| {b['rps']:,.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {f(b.get('server_cpu_us'), '{:.1f}')} | {b['errors']['status']} "
            f"| {f(ratio(a['rps'], b['rps']), '{:.3f}')} |"
        )
    parts.append("HTTP rounds (A = coupon-api, B = coupon-ceiling, run A B A B ...):\n\n" + "\n".join(rounds))
    b = r["bench_api"]
    if b:
        lat = b.get("latency_ms", {})
        parts.append(
            f"coupon-bench against coupon-api (closed model, {b.get('config', {}).get('concurrency')} workers): "
            f"{b.get('throughput_rps', 0):,.0f} req/s; latency p50 {lat.get('p50', 0):.2f} ms, p90 {lat.get('p90', 0):.2f}, "
            f"p99 {lat.get('p99', 0):.2f}, p99.9 {lat.get('p999', 0):.2f}, max {lat.get('max', 0):.2f}; answers {b.get('by_code')}."
        )
    d1, d2 = r["drain"][1], r["drain"][2]
    drains = []
    for k, d in ((1, d1), (2, d2)):
        drains.append(
            f"{k} consumer{'s' if k > 1 else ''}: {f(d['rows'])} rows in {f(d['drain_s'], '{:.2f}')} s from the first row seen "
            f"({f(d['polled'])} rows/s; {f(d['wall'])} rows/s counting the consumers' start-up; {f(d['span'])} rows/s by issued_at span); "
            f"{f(d['transactions'])} write transactions; COUNT(*) after: {f(num(facts.get(f'drain{k}_count')))}; "
            f"CPU per row: consumers {facts.get(f'drain{k}_consumer_cpu_us_per_row', '–')} µs (with start-up), "
            f"MariaDB {facts.get(f'drain{k}_mysqld_cpu_us_per_row', '–')} µs, Redis {facts.get(f'drain{k}_redis_cpu_us_per_row', '–')} µs; "
            f"accepted at {f(num(facts.get(f'drain{k}_accept_rps')))} req/s"
        )
    drains.append(
        f"insert ceiling (before, between, after; median {f(r['insert_ceiling'])}): {', '.join(f(v) for v in r['insert_ceilings'])} rows/s; "
        f"MariaDB CPU per row {', '.join(facts.get(f'ceiling_{t}_mysqld_cpu_us_per_row', '–') for t in ('before', 'between', 'after'))} µs; "
        f"with the consumer's statements {f(r['consumer_sql'])} rows/s, MariaDB CPU per row "
        f"{facts.get('ceiling_consumer-sql_mysqld_cpu_us_per_row', '–')} µs"
    )
    parts.append("Drain (consumers started after all users were accepted; `coupons.issued_quantity` polled every 0.1 s):\n\n" + "\n".join(f"- {x}" for x in drains))
    parts.append(
        f"Redis memory: issued SET {f(num(facts.get('mem_set_bytes')))} B for {f(num(facts.get('mem_set_card')))} users "
        f"(encoding {facts.get('mem_set_encoding', '?')}); stream {f(num(facts.get('mem_stream_before_bytes')))} B for "
        f"{f(num(facts.get('mem_stream_before_len')))} entries before trimming, {f(num(facts.get('mem_stream_after_bytes')))} B "
        f"({f(num(facts.get('mem_stream_after_len')))} entries) after. coupon-api RSS: idle {f(num(facts.get('api_rss_idle_kib')), '{:,.0f} KiB')}, "
        f"max under wrk {f(num(facts.get('api_rss_load_max_kib')), '{:,.0f} KiB')}, max in the sale {f(num(facts.get('api_rss_sale_max_kib')), '{:,.0f} KiB')}"
        f"{growth(r)}."
    )
    sale = r["sale"]
    if sale:
        lat = sale.get("latency_ms", {})
        drain = sale.get("drain") or {}
        checks = ", ".join(f"{c['name']} {'PASS' if c['pass'] else 'FAIL'}" for c in sale.get("checks", []))
        parts.append(
            f"Sale: {sale.get('requests'):,} requests in {sale.get('duration_s', 0):.1f} s ({sale.get('throughput_rps', 0):,.0f} req/s), "
            f"latency p50 {lat.get('p50', 0):.2f} ms, p99 {lat.get('p99', 0):.2f} ms; answers {sale.get('by_code')}; "
            f"drain {f(drain.get('time_s'), '{:.1f}')} s after the load "
            f"(consumers wrote {f(drain.get('write_rate_rows_per_s'))} rows/s over the issued_at span); checks: {checks}."
        )
    for label in ("api", "ceiling"):
        path = out / f"perf-{label}.txt"
        if path.exists() and path.read_text().strip():
            dso = out / f"perf-{label}-dso.txt"
            dso_text = dso.read_text().rstrip() if dso.exists() else ""
            text = (
                f"perf (cpu-clock, -F 999, {label}), top symbols by self time:\n\n```\n"
                + "\n".join(path.read_text().splitlines()[:25]) + "\n```\n\nby object:\n\n```\n" + dso_text + "\n```"
            )
            inclusive = out / f"perf-{label}-inclusive.txt"
            if inclusive.exists() and inclusive.read_text().strip():
                text += (
                    "\n\ninclusive (children, self) of the frames that say where a request's CPU goes:\n\n```\n"
                    + inclusive.read_text().rstrip() + "\n```"
                )
            parts.append(text)
    return "\n\n".join(parts)


def growth(r):
    """The API's resident memory growth per request during the sale, if it grew."""
    facts, sale = r["facts"], r["sale"] or {}
    first, last = num(facts.get("api_rss_sale_first_kib")), num(facts.get("api_rss_sale_last_kib"))
    requests = sale.get("requests")
    if first is None or last is None or not requests or last <= first:
        return ""
    return f" (grew {(last - first) * 1024 / requests:.0f} B per request during the sale)"


def section(r, out):
    facts = r["facts"]
    commands = (out / "commands.txt").read_text().rstrip() if (out / "commands.txt").exists() else ""
    return (
        f"## {facts.get('date', '?')} — commit {facts.get('commit', '?')}\n\n"
        f"Machine: {facts.get('nproc', '?')} cores ({facts.get('cpu', '?')}), {facts.get('ram', '?')} RAM, "
        f"Linux {facts.get('kernel', '?')}; Redis {facts.get('redis_version', '?')} (private, AOF everysec), "
        f"MariaDB {facts.get('mariadb_version', '?')}, wrk {facts.get('wrk_version', '?')}; everything on this one box. "
        f"Load average (1, 5, 15 min) at start {facts.get('load_start', '?')}, at end {facts.get('load_end', '?')}.\n"
        f"Settings: {facts.get('settings', '?')}. coupon-api with RUST_LOG=info, no OTLP exporter, metrics on.\n\n"
        f"{table(r)}\n\n{details(r, out)}\n\nCommands (in order; raw outputs were in `{out}`):\n\n```sh\n{commands}\n```\n"
    )


def history_row(r):
    facts = r["facts"]
    sale = r["sale"] or {}
    return (
        f"| {facts.get('date', '?')} | {facts.get('commit', '?')} | {f(r['rps_ratio'], '{:.3f}')} | {f(r['p99_ratio'], '{:.3f}')} "
        f"| {f(r['drain'][2]['ratio'], '{:.3f}')} | {f(r['rss_max_mib'], '{:.1f}')} | {'PASS' if sale.get('pass') else 'FAIL'} "
        f"| {facts.get('load_start', '?').split()[0]} → {facts.get('load_end', '?').split()[0]} |"
    )


def append(r, out, path):
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    if HISTORY_MARK not in text:
        text = text.rstrip() + "\n\n## History\n\n" + "\n".join(HEADER.split("## History\n\n", 1)[1].splitlines()) + "\n"
    text = text.replace(HISTORY_MARK, history_row(r) + "\n" + HISTORY_MARK, 1)
    text = text.rstrip() + "\n\n" + section(r, out)
    path.write_text(text)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    r = compute(out)
    settings = r["facts"].get("settings", "")
    r["connections"] = settings.split("CONNECTIONS=")[1].split()[0] if "CONNECTIONS=" in settings else ""
    if "--check-http" in argv:
        ok = check(r["rps_ratio"], lambda v: v >= 0.90) and check(r["p99_ratio"], lambda v: v <= 1.3)
        return 0 if ok else 1
    print()
    print(table(r))
    print()
    print(details(r, out))
    if "--append" in argv:
        append(r, out, argv[argv.index("--append") + 1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
