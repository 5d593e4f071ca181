//! `summary.md`: the headline figures of `results.json`, as tables.

use std::fmt::Write;

use serde_json::Value;

fn f(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".to_owned(),
    }
}

fn load(b: &Value) -> String {
    let l =
        |v: &Value| v.as_array().map(|a| a.iter().map(|x| f(x, 2)).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    format!("load average before {} / after {}", l(&b["loadavg_before"]), l(&b["loadavg_after"]))
}

pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        s,
        "# ollama-tracer benchmarks{}\n",
        if doc["smoke"] == true { " (smoke run: sizes tiny, figures meaningless)" } else { "" }
    );
    let _ = writeln!(
        s,
        "Machine: {} × {} ({}), {} GiB, kernel {}, {}; {}. Load average at start: {}.\n",
        m["cpus"].as_str().unwrap_or("?"),
        m["cpu"].as_str().unwrap_or("?"),
        m["hypervisor"].as_str().map(|h| format!("{h} guest")).unwrap_or_default(),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["os"].as_str().unwrap_or(""),
        m["rustc"].as_str().unwrap_or(""),
        m["loadavg_at_start"]
    );
    let b = &doc["benchmarks"];
    for (name, v) in b.as_object().into_iter().flatten() {
        let _ = writeln!(s, "## {name}\n");
        if let Some(e) = v["error"].as_str() {
            let _ = writeln!(s, "FAILED: {e}\n");
            continue;
        }
        if let Some(why) = v["skipped"].as_str() {
            let _ = writeln!(s, "SKIPPED: {why}\n");
            continue;
        }
        let _ = writeln!(s, "{} ({:.0} s)\n", load(v), v["secs"].as_f64().unwrap_or(0.0));
        match name.as_str() {
            "stages" => stages(&mut s, v),
            "replay" => replay(&mut s, v),
            "live" => live(&mut s, v),
            "cost" => cost(&mut s, v),
            "memory" => memory(&mut s, v),
            "tls" => tls(&mut s, v),
            _ => {}
        }
    }
    s
}

fn stages(s: &mut String, v: &Value) {
    let Some(rs) = v["results"].as_array() else { return };
    let _ = writeln!(s, "| benchmark | mean | throughput |\n| --- | --- | --- |");
    for r in rs {
        let tp = if r["mib_per_s"].is_number() {
            format!("{} MiB/s", f(&r["mib_per_s"], 0))
        } else {
            format!("{} /s", f(&r["per_s"], 0))
        };
        let _ = writeln!(
            s,
            "| {} | {} ms | {tp} |",
            r["id"].as_str().unwrap_or("?"),
            f(&(r["mean_ns"].as_f64().unwrap_or(0.0) / 1e6).into(), 2)
        );
    }
    s.push('\n');
}

fn replay(s: &mut String, v: &Value) {
    let c = &v["capture"];
    let w = &v["tracer_whole"]["best"];
    let _ = writeln!(
        s,
        "Capture: {} calls ({} native streams, {} /v1 SSE streams, {} embedding batches), {:.1} MB TCP payload, {:.1} MB file.\n",
        c["calls"],
        c["native_streams"],
        c["openai_streams"],
        c["embed_batches"],
        c["payload_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        c["file_bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
    let _ = writeln!(
        s,
        "| run | bytes (payload) | wall s | CPU s | peak RSS MiB | payload MB/s per core |\n| --- | --- | --- | --- | --- | --- |"
    );
    let row = |s: &mut String, name: &str, bytes: &Value, r: &Value| {
        let _ = writeln!(
            s,
            "| {name} | {:.1} MB | {} | {} | {} | {} |",
            bytes.as_f64().unwrap_or(0.0) / 1e6,
            f(&r["wall_s"], 2),
            f(&r["cpu_s"], 2),
            f(&r["max_rss_mib"], 1),
            f(&r["payload_mb_per_cpu_s"], 0)
        );
    };
    row(s, "ollama-tracer replay, whole capture (best of runs)", &c["payload_bytes"], w);
    let sl = &v["slice"];
    row(s, "ollama-tracer replay, slice", &sl["payload_bytes"], &sl["tracer"]);
    row(s, "tshark, same slice", &sl["payload_bytes"], &sl["tshark"]);
    let real = &v["real_clients"];
    if real.is_object() {
        let name = format!("ollama-tracer replay, real clients ×{} ({} calls)", real["copies"], real["calls"]);
        row(s, &name, &real["payload_bytes"], &real["tracer"]);
    }
    before_after(s, v);
    let _ = writeln!(
        s,
        "\nRatio on the same bytes: tshark / tracer = {}× CPU, {}× wall, {}× peak RSS (tshark found {} requests, {} responses; the tracer {} calls).\n\n`{}`\n",
        f(&sl["ratio_cpu"], 0),
        f(&sl["ratio_wall"], 0),
        f(&sl["ratio_peak_rss"], 1),
        sl["tshark_requests"],
        sl["tshark_responses"],
        sl["tracer_calls"],
        sl["tshark_command"].as_str().unwrap_or("")
    );
}

/// With `--baseline`: the baseline binary (before) beside this tree's (after), same bytes,
/// interleaved runs.
fn before_after(s: &mut String, v: &Value) {
    let (base, real) = (&v["baseline_whole"], &v["real_clients"]);
    if !base.is_object() {
        return;
    }
    let _ = writeln!(
        s,
        "\nBefore (`{}`) / after (this tree), best of {} interleaved runs each:\n\n| capture | MB/s per core before | after | speed-up | peak RSS MiB before | after |\n| --- | --- | --- | --- | --- | --- |",
        base["binary"].as_str().unwrap_or("?"),
        base["runs"]
    );
    let row = |s: &mut String, name: &str, before: &Value, after: &Value| {
        let (b, a) = (&before["payload_mb_per_cpu_s"], &after["payload_mb_per_cpu_s"]);
        let speedup = a.as_f64().zip(b.as_f64()).map(|(a, b)| a / b);
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {}× | {} | {} |",
            f(b, 0),
            f(a, 0),
            f(&speedup.into(), 2),
            f(&before["max_rss_mib"], 1),
            f(&after["max_rss_mib"], 1)
        );
    };
    row(s, "benchmark mix, whole capture", &base["best"], &v["tracer_whole"]["best"]);
    if real["baseline"].is_object() {
        row(s, &format!("real clients ×{}", real["copies"]), &real["baseline"], &real["tracer"]);
    }
}

fn live_row(s: &mut String, r: &Value) {
    let _ = writeln!(
        s,
        "| {} | {} × {} | {} / {} | {} | {} | {} ({} ring) | {} | {}/{} |",
        r["capture"].as_str().unwrap_or("?"),
        r["streams"],
        r["tokens_per_s"],
        f(&r["chunks_per_s"], 0),
        f(&r["target_chunks_per_s"], 0),
        f(&r["tracer_cpu_pct"], 1),
        format_args!("{} + {}", f(&r["load_generator_cpu_pct"], 0), f(&r["standin_cpu_pct"], 0)),
        f(&r["tracer_memory_peak_in_window"]["rss_mib"], 1),
        f(&r["tracer_memory_peak_in_window"]["bpf_map_mappings_mib"], 1),
        r["kernel_drops"],
        r["spans_complete"],
        r["calls"]
    );
}

fn live(s: &mut String, v: &Value) {
    let head = "| capture | streams × tokens/s | chunks/s got / asked | tracer CPU % | load gen + stand-in CPU % | tracer RSS MiB (of it ring mapping) | kernel drops | spans complete / calls |\n| --- | --- | --- | --- | --- | --- | --- | --- |";
    let _ = writeln!(s, "{head}");
    for r in v["runs"].as_array().into_iter().flatten() {
        live_row(s, r);
    }
    if v["knee"].as_array().is_some_and(|k| !k.is_empty()) {
        let _ = writeln!(s, "\nThe knee (eBPF, then libpcap when it held the goal):\n\n{head}");
        for r in v["knee"].as_array().into_iter().flatten() {
            live_row(s, r);
        }
    }
    s.push('\n');
}

fn cost(s: &mut String, v: &Value) {
    let _ = writeln!(
        s,
        "{} rounds, interleaved; bulk: one {:.0} MB response; upload: {} blobs of {:.0} MiB to the stand-in a round (after a 1 MiB one); latency: {} small keep-alive calls. Medians over rounds (uploads: over every upload); upload drops: median of each round's sum.\n",
        v["rounds"],
        v["bulk_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        v["uploads_per_round"],
        v["upload_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        v["calls"]
    );
    let _ = writeln!(
        s,
        "| tracer | bulk MB/s | vs untraced | upload MB/s | vs untraced | kernel drops: upload | bulk + latency | p50 µs | p99 µs | p50 Δ µs | p99 Δ µs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let pct = |x: &Value| -> Value { (x.as_f64().unwrap_or(f64::NAN) * 100.0).into() };
    for (mode, m) in v["medians"].as_object().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {mode} | {} | {} % | {} | {} % | {} | {} | {} | {} | {} | {} |",
            f(&m["bulk_mb_per_s"], 0),
            f(&pct(&m["bulk_vs_untraced"]), 1),
            f(&m["upload_mb_per_s"], 0),
            f(&pct(&m["upload_vs_untraced"]), 1),
            f(&m["upload_kernel_drops"], 0),
            f(&m["kernel_drops"], 0),
            f(&m["p50_us"], 1),
            f(&m["p99_us"], 1),
            f(&m["p50_delta_us"], 1),
            f(&m["p99_delta_us"], 1)
        );
    }
    s.push('\n');
}

fn memory(s: &mut String, v: &Value) {
    let p = &v["tracer_memory_peak"];
    let _ = writeln!(
        s,
        "{} idle keep-alive connections + {} slow streams ({} s), eBPF: peak RSS {} MiB (ring buffer mapping {} MiB, the rest {} MiB; anon {} MiB); after the idle connections opened {} MiB; {} calls seen, {} kernel drops.\n",
        v["idle_connections"],
        v["slow_streams"],
        v["stream_secs"],
        f(&p["rss_mib"], 1),
        f(&p["bpf_map_mappings_mib"], 1),
        f(&p["rss_without_bpf_maps_mib"], 1),
        f(&p["anon_mib"], 1),
        f(&v["tracer_memory_after_idle_connections"]["rss_mib"], 1),
        v["tracer_calls"],
        v["kernel_drops"]
    );
}

fn tls(s: &mut String, v: &Value) {
    let _ = writeln!(
        s,
        "| client (library) | untraced p50 / p99 µs | probed, other host: p50 (added) | traced p50 / p99 µs | added p50 / p99 µs |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for (client, name) in [("go", "Go client (crypto/tls)"), ("curl", "curl (OpenSSL)")] {
        let l = &v["latency"][client];
        let _ = writeln!(
            s,
            "| {name} | {} / {} | {} (+{}) | {} / {} | {} / {} |",
            f(&l["untraced_p50_us"], 1),
            f(&l["untraced_p99_us"], 1),
            f(&l["ignored_p50_us"], 1),
            f(&l["ignored_added_p50_us"], 1),
            f(&l["traced_p50_us"], 1),
            f(&l["traced_p99_us"], 1),
            f(&l["added_p50_us"], 1),
            f(&l["added_p99_us"], 1)
        );
    }
    let u = &v["uprobe"];
    let _ = writeln!(
        s,
        "\nOne uprobe hit (`SSL_free(NULL)` in a loop, {} calls): {} ns untraced, {} ns probed: **{} ns per hit**",
        u["calls"],
        f(&u["untraced_ns"], 1),
        f(&u["probed_ns"], 1),
        f(&u["hit_ns"], 0)
    );
    let st = &v["streams"];
    let _ = writeln!(
        s,
        "\n{} TLS streams for {} s: {} calls, {} chunks/s; daemon CPU {} % of one core; {} records ({} lost)\n",
        st["streams"],
        f(&st["secs"], 0),
        st["calls"],
        f(&st["chunks_per_s"], 0),
        f(&st["tracer_cpu_percent"], 1),
        st["records"],
        st["records_lost"]
    );
    let _ = writeln!(s, "| kernel program | runs | ns per run |");
    let _ = writeln!(s, "| --- | --- | --- |");
    for (name, p) in st["programs"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "| {name} | {} | {} |", p["runs"], f(&p["ns_per_run"], 0));
    }
    let _ = writeln!(s);
}
