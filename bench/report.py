"""Figures from the raw rounds: medians across rounds, added latency against the direct calls of
the same round, CPU per request, the targets (DESIGN §7) with pass/fail, and the Markdown table."""

from __future__ import annotations

import statistics
from typing import Any

# RSS counts as flat when it grows by at most this much over the RSS phase's requests.
RSS_FLAT_MIB = 2.0
REFERENCE = "bare_aiohttp"
# Share of the machine's CPU used by other processes during the measured phases above which a
# run is flagged as measured on a busy machine.
NOISY_SHARE = 0.05
TARGETS = (  # (key, description, limit, comparison)
    ("added_latency_ratio", "added latency, c=1, median: gateway / bare aiohttp", 1.5, "<="),
    ("cpu_ratio", "CPU per request, c=1: gateway / bare aiohttp", 2.0, "<="),
    ("throughput_ratio", "throughput, c=32: gateway / bare aiohttp", 0.5, ">="),
    ("added_ttfb_ms", "added time to first stream chunk, median (ms)", 1.0, "<="),
    ("import_ratio", "cold import: function_app / its required packages", 1.3, "<="),
    ("azure_identity_imported", "`import function_app` imports azure.identity", False, "=="),
    ("metrics_exporters_imported", "`import function_app` imports the metrics exporters", False, "=="),
    ("rss_delta_mib", f"gateway RSS growth over the RSS phase (MiB, flat: ≤ {RSS_FLAT_MIB})",
     RSS_FLAT_MIB, "<="),
)


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _per_request_ms(rounds: list[dict], name: str, kind: str, process: str) -> float | None:
    cpu = sum(r["results"][name][kind]["cpu_s"][process] for r in rounds)
    done = sum(r["results"][name][kind]["ok"] for r in rounds)
    return cpu / done * 1e3 if done else None


def _target_figures(rounds: list[dict], name: str) -> dict[str, Any]:
    def med(kind: str, metric: str, stat: str) -> float | None:
        return _median([r["results"][name][kind].get(metric, {}).get(stat) for r in rounds])

    def added(kind: str, metric: str, stat: str) -> float | None:
        if name == "direct":
            return None
        values = []
        for r in rounds:
            mine = r["results"][name][kind].get(metric, {}).get(stat)
            floor = r["results"]["direct"][kind].get(metric, {}).get(stat)
            if mine is not None and floor is not None:
                values.append(mine - floor)
        return _median(values)

    return {
        "c1": {"p50_ms": med("c1", "latency_ms", "p50"), "p99_ms": med("c1", "latency_ms", "p99"),
               "added_p50_ms": added("c1", "latency_ms", "p50"),
               "added_p99_ms": added("c1", "latency_ms", "p99"),
               "cpu_ms_per_request": _per_request_ms(rounds, name, "c1", "target")},
        "c32": {"throughput_rps": _median([r["results"][name]["c32"]["throughput_rps"] for r in rounds]),
                "p50_ms": med("c32", "latency_ms", "p50"), "p99_ms": med("c32", "latency_ms", "p99"),
                "cpu_ms_per_request": _per_request_ms(rounds, name, "c32", "target")},
        "stream": {"ttfb_p50_ms": med("stream", "ttfb_ms", "p50"), "ttfb_p99_ms": med("stream", "ttfb_ms", "p99"),
                   "added_ttfb_p50_ms": added("stream", "ttfb_ms", "p50"),
                   "added_ttfb_p99_ms": added("stream", "ttfb_ms", "p99"),
                   "total_p50_ms": med("stream", "latency_ms", "p50"),
                   "cpu_ms_per_request": _per_request_ms(rounds, name, "stream", "target")},
        "counts": _counts(rounds, name),
    }


def _counts(rounds: list[dict], name: str) -> dict[str, int]:
    phases = [r["results"][name][kind] for r in rounds for kind in r["results"][name]]
    return {"requests": sum(p["requests"] for p in phases), "ok": sum(p["ok"] for p in phases),
            "errors": sum(p["errors"] for p in phases),
            "warmup_errors": sum(p["warmup_errors"] for p in phases),
            "timed_out_phases": sum(bool(p["timed_out"]) for p in phases),
            "upstream_mismatches": sum(p["upstream_requests"] != p["expected_upstream_requests"]
                                       for p in phases)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _check(value: Any, limit: Any, op: str) -> bool | None:
    if value is None:
        return None
    return {"<=": value <= limit, ">=": value >= limit, "==": value == limit}[op]


def build(mode_name: str, mode, machine: dict, targets: list[tuple[str, str]], rounds: list[dict],
          rss: dict, cold: dict, stream_gap_ms: float, elapsed_s: float,
          environments: dict | None = None) -> dict:
    """`environments`: {"gateway": ..., "harness": ...}, each a bench.runtime_env.GatewayEnv as
    JSON: which venv the gateway ran in (and what it holds), and the venv of everything else."""
    figures = {name: {"label": label, **_target_figures(rounds, name), "rss": rss.get(name)}
               for name, label in targets}
    gw, ref = figures["gateway"], figures[REFERENCE]
    values = {
        "added_latency_ratio": _ratio(gw["c1"]["added_p50_ms"], ref["c1"]["added_p50_ms"]),
        "cpu_ratio": _ratio(gw["c1"]["cpu_ms_per_request"], ref["c1"]["cpu_ms_per_request"]),
        "throughput_ratio": _ratio(gw["c32"]["throughput_rps"], ref["c32"]["throughput_rps"]),
        "added_ttfb_ms": gw["stream"]["added_ttfb_p50_ms"],
        "import_ratio": cold["ratio"],
        "azure_identity_imported": cold["azure_identity_imported"],
        "metrics_exporters_imported": cold.get("metrics_exporters_imported", False),
        "rss_delta_mib": (gw["rss"] or {}).get("delta_mib"),
    }
    checks = [{"key": key, "description": text, "value": values[key], "limit": limit, "op": op,
               "pass": _check(values[key], limit, op)} for key, text, limit, op in TARGETS]
    # The same ratios for every gateway-like target (before/after comparisons in one run).
    variants = {name: {"added_latency_ratio": _ratio(f["c1"]["added_p50_ms"], ref["c1"]["added_p50_ms"]),
                       "cpu_ratio": _ratio(f["c1"]["cpu_ms_per_request"], ref["c1"]["cpu_ms_per_request"]),
                       "throughput_ratio": _ratio(f["c32"]["throughput_rps"], ref["c32"]["throughput_rps"]),
                       "added_ttfb_ms": f["stream"]["added_ttfb_p50_ms"]}
                for name, f in figures.items() if name not in ("direct", REFERENCE)}
    upstream_cpu = sum(r["results"][n][k]["cpu_s"]["upstream"] for r in rounds
                       for n in r["results"] for k in r["results"][n])
    upstream_requests = sum(r["results"][n][k]["upstream_requests"] for r in rounds
                            for n in r["results"] for k in r["results"][n])
    load_cpu = sum(r["results"][n][k]["cpu_s"]["load"] for r in rounds
                   for n in r["results"] for k in r["results"][n])
    load_requests = sum(r["results"][n][k]["ok"] for r in rounds for n in r["results"] for k in r["results"][n])
    upstream_us = upstream_cpu / upstream_requests * 1e6 if upstream_requests else None
    phases = [r["results"][n][k] for r in rounds for n in r["results"] for k in r["results"][n]]
    # /proc/stat counts in 10 ms ticks: only phases long enough to be read are kept for the max.
    long_phases = [p for p in phases if p["wall_s"] >= 0.5]
    capacity = sum(p["wall_s"] for p in phases) * (machine.get("cores") or 1)
    background_share = sum(p["background_cpu_s"] for p in phases) / capacity if capacity else None
    problems = [f"{name}: {figures[name]['counts']}" for name, _ in targets
                if any(figures[name]["counts"][k] for k in
                       ("errors", "warmup_errors", "timed_out_phases", "upstream_mismatches"))]
    problems += [f"{name} RSS phase: {r['errors']} errors, {r['ok']}/{r['requests']} ok"
                 for name, r in rss.items() if r.get("errors") or r.get("ok") != r.get("requests")]
    return {
        "mode": mode_name,
        "config": {"rounds": mode.rounds, "c1_requests": mode.c1, "c32_requests": mode.c32,
                   "concurrency": mode.concurrency, "stream_requests": mode.stream,
                   "rss_requests": mode.rss, "warmup": mode.warmup, "import_repeats": mode.import_repeats,
                   "phase_time_limit_s": mode.phase_time_limit, "upstream_stream_gap_ms": stream_gap_ms},
        "machine": machine,
        "environments": environments or {},
        "elapsed_s": round(elapsed_s, 1),
        "valid": not problems,
        "problems": problems,
        "targets": figures,
        "upstream": {"cpu_us_per_request": upstream_us,
                     "capacity_rps_per_core": 1e6 / upstream_us if upstream_us else None,
                     "direct_throughput_c32_rps": figures["direct"]["c32"]["throughput_rps"]},
        "background_cpu": {"share": background_share,
                           "max_phase_share": max((p["background_cpu_share"] for p in long_phases), default=None),
                           "noisy": background_share is not None and background_share > NOISY_SHARE},
        "load_generator": {"cpu_us_per_request": load_cpu / load_requests * 1e6 if load_requests else None},
        "cold_import": cold,
        "checks": checks,
        "ratios_vs_bare_aiohttp": variants,
        "rounds": rounds,
    }


# Packages worth naming in the report: what changes how fast the gateway's process runs.
NOTABLE_PACKAGES = ("uvicorn", "httptools", "uvloop", "aiohttp", "starlette", "pydantic", "orjson", "aiodns")


def environment_line(title: str, env: dict) -> str:
    """Which venv, what uvicorn picks there, and the packages that matter (present and absent)."""
    packages = env.get("packages", {})
    present = ", ".join(f"{n} {packages[n]}" for n in NOTABLE_PACKAGES if n in packages)
    absent = ", ".join(n for n in NOTABLE_PACKAGES if n not in packages)
    return (f"{title}: {env.get('description', '?')} ({len(packages)} packages: {present}"
            + (f"; no {absent}" if absent else "") + f"); uvicorn's HTTP parser there: "
            f"{env.get('uvicorn_http') or '—'}, event loop of `uvicorn.run`: {env.get('uvicorn_loop_auto') or '—'}.")


def _f(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}".replace(",", " ") + unit


def markdown(data: dict) -> str:
    m, cfg, t = data["machine"], data["config"], data["targets"]
    names = list(t)
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"Linux {m['kernel']}; run {m['date']}, mode `{data['mode']}` ({data['elapsed_s']:.0f} s).",
        "",
        f"{cfg['rounds']} interleaved rounds, each target per round: {cfg['c1_requests']} requests at "
        f"concurrency 1, {cfg['stream_requests']} streamed at concurrency 1, {cfg['c32_requests']} at "
        f"concurrency {cfg['concurrency']}; medians across rounds. Added = target − direct, same round. "
        f"CPU = the server process's CPU time / requests.",
        "",
    ]
    envs = data.get("environments") or {}
    if envs.get("gateway"):
        lines += [environment_line("Gateway (and its cold import)", envs["gateway"]), ""]
    for name, env in envs.items():
        if name.startswith("gateway_venv_") and name in t:
            lines += [environment_line(f"{t[name]['label']} (same gateway)", env), ""]
    if envs.get("harness"):
        lines += [environment_line("Bare forwarders, upstream, load generator", envs["harness"]), ""]
    lines += [
        "| figure | " + " | ".join(t[n]["label"] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(title: str, cell) -> None:
        lines.append(f"| {title} | " + " | ".join(cell(t[n]) for n in names) + " |")

    row("latency, c=1, median / p99 (ms)", lambda f: f"{_f(f['c1']['p50_ms'])} / {_f(f['c1']['p99_ms'])}")
    row("**added latency, c=1, median** (ms)", lambda f: _f(f["c1"]["added_p50_ms"]))
    row("added latency, c=1, p99 (ms)", lambda f: _f(f["c1"]["added_p99_ms"]))
    row("**CPU per request, c=1** (ms)", lambda f: _f(f["c1"]["cpu_ms_per_request"], 3))
    row(f"**throughput, c={cfg['concurrency']}** (req/s)", lambda f: _f(f["c32"]["throughput_rps"], 0))
    row(f"latency, c={cfg['concurrency']}, p50 / p99 (ms)",
        lambda f: f"{_f(f['c32']['p50_ms'])} / {_f(f['c32']['p99_ms'])}")
    row(f"CPU per request, c={cfg['concurrency']} (ms)", lambda f: _f(f["c32"]["cpu_ms_per_request"], 3))
    row("stream: time to first chunk, median / p99 (ms)",
        lambda f: f"{_f(f['stream']['ttfb_p50_ms'])} / {_f(f['stream']['ttfb_p99_ms'])}")
    row("**added time to first chunk, median** (ms)", lambda f: _f(f["stream"]["added_ttfb_p50_ms"]))
    row(f"RSS after start → after {cfg['rss_requests']:,} requests (MiB)".replace(",", " "),
        lambda f: (f"{_f(f['rss']['after_start_mib'], 1)} → {_f(f['rss']['after_requests_mib'], 1)}"
                   + (f" ({f['rss']['requests']} requests)" if f['rss']['requests'] != cfg['rss_requests'] else "")
                   if f.get("rss") else "—"))
    lines += ["", "Targets (DESIGN §7; gateway against the bare aiohttp forwarder, same run):", "",
              "| target | value | limit | result |", "|---|---|---|---|"]
    for check in data["checks"]:
        value = check["value"]
        shown = str(value).lower() if isinstance(value, bool) else _f(value)
        limit = str(check["limit"]).lower() if isinstance(check["limit"], bool) else check["limit"]
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[check["pass"]]
        lines.append(f"| {check['description']} | {shown} | {check['op']} {limit} | {verdict} |")
    variants = data.get("ratios_vs_bare_aiohttp", {})
    if len(variants) > 1:
        lines += ["", "The same ratios for every target (against the bare aiohttp forwarder):", "",
                  "| target | added latency ratio (≤ 1.5) | CPU ratio (≤ 2) | throughput ratio (≥ 0.5) "
                  "| added time to first chunk, ms (≤ 1) |", "|---|---|---|---|---|"]
        for name, v in variants.items():
            lines.append(f"| {t[name]['label']} | {_f(v['added_latency_ratio'])} | {_f(v['cpu_ratio'])} | "
                         f"{_f(v['throughput_ratio'])} | {_f(v['added_ttfb_ms'])} |")
    c, up = data["cold_import"], data["upstream"]
    lines += [
        "",
        f"Cold import (fresh interpreter, median of {c['repeats']}): `import function_app` "
        f"{_f(c['function_app_ms'], 0)} ms; `{c['bare_code']}` {_f(c['bare_ms'], 0)} ms; "
        f"empty interpreter {_f(c['interpreter_ms'], 0)} ms. azure.identity imported: "
        f"{str(c['azure_identity_imported']).lower()}; httptools imported: "
        f"{str(c.get('httptools_imported')).lower()}. `import function_app` after its packages, "
        f"timed inside the interpreter: {_f(c.get('start_path_ms', {}).get('off'), 0)} ms with no "
        f"exporter, {_f(c.get('start_path_ms', {}).get('on'), 0)} ms with "
        f"APPLICATIONINSIGHTS_CONNECTION_STRING set (the exporters are built on a thread). Other processes used "
        f"{c.get('background_cpu_share', 0) * 100:.0f} % of the machine meanwhile.",
        "",
        *([f"Redis state (`gateway + Redis state`, a consumer with limits): "
           f"{_f(data['redis_ops']['per_request'])} Redis script calls and "
           f"{_f(data['redis_ops'].get('reads_per_request'))} server reads (round trips) per request at "
           f"concurrency 1 ({data['redis_ops']['round_trips']} calls over {data['redis_ops']['requests']} "
           f"requests, from the server's INFO), {_f(data['redis_ops']['commands_per_request'])} commands "
           f"run per request inside the scripts included.", ""] if data.get("redis_ops") else []),
        f"Fast upstream (`bench/fast_upstream.py`): {_f(up['cpu_us_per_request'], 0)} µs CPU per request, "
        f"≈ {_f(up['capacity_rps_per_core'], 0)} req/s per core; load generator "
        f"{_f(data['load_generator']['cpu_us_per_request'], 0)} µs CPU per request.",
    ]
    bg = data["background_cpu"]
    if bg["share"] is not None:
        worst = f", at most {bg['max_phase_share'] * 100:.0f} % in one phase" if bg["max_phase_share"] is not None else ""
        lines += ["", f"Other processes used {bg['share'] * 100:.1f} % of the machine's CPU during the measured "
                      f"phases{worst}" + (": **a busy machine, figures are noisy**." if bg["noisy"] else ".")]
    if data["problems"]:
        lines += ["", "**Invalid run:** " + "; ".join(data["problems"])]
    return "\n".join(lines) + "\n"


START_MARK, END_MARK = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"


def update_readme(path, table: str) -> bool:
    """Replace what stands between the bench:latest markers of a README; False without markers."""
    try:
        text = path.read_text()
    except OSError:
        return False
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        return False
    path.write_text(text[:start + len(START_MARK)] + "\n" + table + text[end:])
    return True
