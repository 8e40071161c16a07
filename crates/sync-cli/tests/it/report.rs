//! `site-sync report`: what a run leaves for the incident, rendered from real journals written by
//! runs against the fake pair: a clean run, a run through a link outage, a run killed and
//! resumed, and a resume refused while the link is lost. Text and Markdown are snapshots; the
//! HTML's picture is checked through a browser in the `report_picture` case.

use std::time::Duration;

use fake_ispn::{ClusterSpec, TransferSpec};

use crate::support::*;

/// A split-brained pair whose pushes take a couple of seconds (1000 entries per cache at 500/s).
async fn slow_pair() -> Env {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 16,
        entries_per_second: Some(500),
        ..TransferSpec::default()
    });
    let env = Env::with(spec, |k| k).await;
    env.split_brain(1000).await;
    env
}

/// The report in `format`, with what changes from run to run replaced: wall-clock times,
/// durations, ports, run ids; and without its waits and retries, whose number depends on when
/// in a poll things happened (see [`timed`]).
async fn report(env: &Env, format: &str) -> String {
    let text = rendered(env, format).await;
    let sections = regex_lite::Regex::new(r"(?s)\n(Waits|Retries):\n.*?(\n\n|$)|\n### (Waits|Retries)\n.*?(\n\n###|$)").unwrap();
    sections
        .replace_all(&text, |c: &regex_lite::Captures<'_>| c.get(4).or_else(|| c.get(2)).map_or("", |m| m.as_str()).to_owned())
        .into_owned()
}

/// The waits and retries of the text report, normalized.
async fn timed(env: &Env) -> String {
    let text = rendered(env, "text").await;
    text.split_once("\nWaits:\n").map(|(_, rest)| rest.to_owned()).unwrap_or_default()
}

async fn rendered(env: &Env, format: &str) -> String {
    let out = env.run(&["report", "--format", format]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = normalize(&out.stdout, env);
    let patterns: [(&str, &str); 6] = [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<date>"),
        (r"\d\d:\d\d:\d\d", "<hh:mm:ss>"),
        (r"\b\d{10}-\d+\b", "<run-id>"),
        (r"(\d+[dhms] )*\d+[dhms]\b", "<time>"),
        (r" +<time>", " <time>"),
        (r"the pushes of [a-zA-Z, ]+ to read OK", "the pushes of <caches> to read OK"),
    ];
    patterns.into_iter().fold(text, |text, (pattern, replacement)| {
        regex_lite::Regex::new(pattern).unwrap().replace_all(&text, replacement).into_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_leaves_its_report_next_to_the_journal() {
    let env = Env::start().await;
    env.split_brain(200).await;
    let out = env.run(&["run", "--yes"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&format!("Report: {}", env.path("journal.report.md").display())), "{}", out.stdout);
    for file in ["journal.report.md", "journal.report.html", "journal.timeline.svg"] {
        assert!(std::fs::metadata(env.path(file)).is_ok_and(|m| m.len() > 0), "{file} missing");
    }
    assert!(
        timed(&env)
            .await
            .contains("[scale-down] Keycloak on site-b (keycloak/keycloak in namespace keycloak, context site-b) to scale to 0")
    );
    insta::assert_snapshot!("report_clean_text", report(&env, "text").await);
    insta::assert_snapshot!("report_clean_markdown", report(&env, "markdown").await);
    // The report is the journal's alone: a copy elsewhere, without the configuration, renders it.
    let copy = env.path("copied.journal.json");
    std::fs::copy(env.path("journal.json"), &copy).unwrap();
    let alone = Output::of({
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_site-sync"));
        command
            .args(["report", "--journal", copy.to_str().unwrap(), "--format", "json"])
            .current_dir("/")
            .env_remove("SITE_SYNC_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    })
    .await;
    assert_eq!(alone.code, 0, "{}", alone.stderr);
    let json: serde_json::Value = serde_json::from_str(&alone.stdout).unwrap();
    assert_eq!(json["type"], "report");
    assert_eq!(json["finished"]["outcome"], "succeeded");
    assert_eq!(json["caches"].as_array().unwrap().len(), 4);
    let down = &json["keycloak_down"];
    assert!(down["to_ms"].as_u64().unwrap() > down["from_ms"].as_u64().unwrap(), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_a_link_outage_reports_the_outage_and_its_length() {
    let env = slow_pair().await;
    let child = env.command(&["-o", "json", "run", "--yes"]).spawn().unwrap();
    pushing(&env).await;
    env.ispn.cut_link("site-a", "site-b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.ispn.heal_link("site-a", "site-b");
    let out = Output::of_child(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let event = out.stdout.lines().find(|l| l.contains(r#""type":"report""#)).expect("a report event");
    let event: serde_json::Value = serde_json::from_str(event).unwrap();
    assert!(event["markdown"].as_str().unwrap().ends_with("journal.report.md"), "{event}");
    let account = journal(&env).unwrap();
    let outage = sync_core::account::Account::of(&account).link_outages;
    assert_eq!(outage.len(), 1, "{outage:?}");
    let lasted = outage[0].to_ms.unwrap() - outage[0].from_ms;
    assert!((1_500..=4_000).contains(&lasted), "the outage lasted {lasted} ms by the report");
    let timed = timed(&env).await;
    assert!(
        timed.contains("[await-push] the cross-site link between site-a and site-b: the pushes must run again once it is back"),
        "{timed}"
    );
    assert!(timed.contains("\nRetries:\n") && timed.contains("attempt 2: "), "the pushes started again: {timed}");
    insta::assert_snapshot!("report_link_outage_text", report(&env, "text").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_and_resumed_reports_both_attempts() {
    let env = slow_pair().await;
    let mut child = env.command(&["run", "--yes"]).spawn().unwrap();
    pushing(&env).await;
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let resumed = env.run(&["resume", "--yes"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let text = report(&env, "text").await;
    assert!(text.contains("2 attempt(s)") && text.contains("await-push           cut off"), "{text}");
    insta::assert_snapshot!("report_resumed_text", text);
    insta::assert_snapshot!("report_resumed_markdown", report(&env, "markdown").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_refused_while_the_link_is_lost_reports_the_refusal_and_what_was_done() {
    let env = slow_pair().await;
    let mut child = env.command(&["run", "--yes"]).spawn().unwrap();
    pushing(&env).await;
    child.kill().await.unwrap();
    let _ = child.wait().await;
    env.ispn.cut_link("site-a", "site-b");
    let refused = env.run(&["resume", "--yes"]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let text = report(&env, "text").await;
    assert!(text.contains("Outcome:         refused: "), "{text}");
    insta::assert_snapshot!("report_refused_text", text);
    insta::assert_snapshot!("report_refused_markdown", report(&env, "markdown").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_is_not_there_or_of_another_run_is_a_usage_error() {
    let env = Env::start().await;
    let missing = env.run(&["report"]).await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.last_error_line().contains("no run has written it yet; pass the journal with --journal PATH"),
        "{}",
        missing.stderr
    );
    env.split_brain(10).await;
    assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
    let other = env.run(&["report", "--run-id", "1-1"]).await;
    assert_eq!(other.code, 2);
    assert!(other.last_error_line().contains(", not 1-1; pass the journal of that run with --journal PATH"), "{}", other.stderr);
}

/// One phase bar of the picture, as the SVG draws it.
#[derive(Debug)]
struct Bar {
    cache: String,
    phase: String,
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    fill: (u8, u8, u8),
}

fn hex(colour: &str) -> (u8, u8, u8) {
    let c = |i: usize| u8::from_str_radix(&colour[i..i + 2], 16).unwrap();
    (c(1), c(3), c(5))
}

/// The phase bars of an SVG timeline, lane by lane.
fn bars(svg: &str) -> Vec<Bar> {
    let lane = regex_lite::Regex::new(r#"<g class="lane" data-cache="([^"]+)">(.*?)</g>\s*(?:<g class="lane"|<g class="axis")"#)
        .unwrap();
    let bar = regex_lite::Regex::new(
        r#"data-phase="([a-z-]+)">\s*<title>[^<]*</title>\s*<rect fill="(#[0-9a-f]{6})" height="([0-9.]+)" width="([0-9.]+)" x="([0-9.]+)" y="([0-9.]+)"/>"#,
    )
    .unwrap();
    let svg = svg.replace('\n', " ");
    let mut found = Vec::new();
    let mut rest = svg.as_str();
    while let Some(lane_match) = lane.captures(rest) {
        let cache = lane_match[1].to_owned();
        for b in bar.captures_iter(&lane_match[2]) {
            found.push(Bar {
                cache: cache.clone(),
                phase: b[1].to_owned(),
                fill: hex(&b[2]),
                height: b[3].parse().unwrap(),
                width: b[4].parse().unwrap(),
                x: b[5].parse().unwrap(),
                y: b[6].parse().unwrap(),
            });
        }
        rest = &rest[lane_match.get(2).unwrap().end()..];
    }
    found
}

/// `page` drawn by headless Chromium at one pixel per CSS pixel.
async fn screenshot(page: &std::path::Path, png: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let status = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1"])
        .arg("--window-size=1100,1600")
        .arg(format!("--user-data-dir={}", page.with_file_name("chromium-profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("chromium runs (Debian's chromium package; .ci/run installs it)");
    assert!(status.success(), "chromium failed: {status}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("a screenshot in {other:?}"),
    };
    pixels.truncate(info.buffer_size());
    let rgb = pixels.chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    (info.width, info.height, rgb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_a_browser_draws_has_each_cache_lane_and_phase_where_the_journal_says() {
    let env = slow_pair().await;
    assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
    let account = sync_core::account::Account::of(&journal(&env).unwrap());
    let svg = std::fs::read_to_string(env.path("journal.timeline.svg")).unwrap();
    let drawn = bars(&svg);
    // The picture says what the journal says: every phase of every cache, as long as it lasted.
    let expected: Vec<(String, String)> =
        account.caches.iter().flat_map(|c| c.phases.iter().map(|p| (c.cache.to_string(), p.phase.to_owned()))).collect();
    assert_eq!(drawn.iter().map(|b| (b.cache.clone(), b.phase.clone())).collect::<Vec<_>>(), expected, "{svg}");
    let end = account.end_ms();
    let phases: Vec<_> = account.caches.iter().flat_map(|c| &c.phases).collect();
    let (first, last) =
        (phases.iter().min_by_key(|p| p.span.from_ms).unwrap(), phases.iter().max_by_key(|p| p.span.from_ms).unwrap());
    let (first_bar, last_bar) =
        (&drawn[phases.iter().position(|p| p == first).unwrap()], &drawn[phases.iter().position(|p| p == last).unwrap()]);
    let per_ms = (last_bar.x - first_bar.x) / (last.span.from_ms - first.span.from_ms) as f64;
    assert!(per_ms > 0.0, "{svg}");
    for (bar, phase) in drawn.iter().zip(&phases) {
        let lasted = (phase.span.end_or(end) - phase.span.from_ms) as f64;
        let x = first_bar.x + (phase.span.from_ms - first.span.from_ms) as f64 * per_ms;
        assert!((bar.x - x).abs() <= 1.0, "{bar:?} starts at {x} by the journal");
        assert!((bar.width - (lasted * per_ms).max(2.0)).abs() <= 1.0, "{bar:?} lasted {lasted} ms");
    }
    let lanes: Vec<f64> = account.caches.iter().map(|c| drawn.iter().find(|b| b.cache == c.cache.as_str()).unwrap().y).collect();
    assert!(lanes.windows(2).all(|w| w[1] > w[0]), "one lane per cache, in order: {lanes:?}");

    // As a person sees it: the HTML page, drawn by a browser.
    let page = env.path("report.html");
    let html = env.run(&["report", "--format", "html"]).await;
    std::fs::write(&page, html.stdout).unwrap();
    let (width, height, pixels) = screenshot(&page, &env.path("report.png")).await;
    let at = |x: f64, y: f64| {
        let (x, y) = (x.round() as u32, y.round() as u32);
        assert!(x < width && y < height, "({x}, {y}) is outside the {width}x{height} page");
        let i = ((y * width + x) * 3) as usize;
        (pixels[i], pixels[i + 1], pixels[i + 2])
    };
    let close = |a: (u8, u8, u8), b: (u8, u8, u8)| a.0.abs_diff(b.0) <= 12 && a.1.abs_diff(b.1) <= 12 && a.2.abs_diff(b.2) <= 12;
    let blank = pixels.chunks(3).filter(|p| p[0] > 245 && p[1] > 245 && p[2] > 245).count();
    assert!(blank < pixels.len() / 3 * 97 / 100, "the page is blank");
    // Where the page put the picture: the first pixel of the first lane's first bar, found by its
    // colour; every other bar must then be where the SVG (and so the journal) puts it.
    let first = drawn.iter().find(|b| b.width >= 4.0).expect("a bar wide enough to find");
    let origin = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .find(|&(x, y)| {
            close(at(f64::from(x), f64::from(y)), first.fill) && close(at(f64::from(x) + 2.0, f64::from(y) + 2.0), first.fill)
        })
        .expect("the first bar is drawn");
    let (dx, dy) = (f64::from(origin.0) - first.x.ceil(), f64::from(origin.1) - first.y.ceil());
    let mut checked = 0;
    for bar in drawn.iter().filter(|b| b.width >= 4.0) {
        let centre = at(bar.x + bar.width / 2.0 + dx, bar.y + bar.height / 2.0 + dy);
        assert!(close(centre, bar.fill), "{bar:?} reads {centre:?} at its centre in the browser (offset {dx}, {dy})");
        checked += 1;
    }
    assert!(checked >= account.caches.len() * 2, "only {checked} bars were wide enough to check");
    // Each lane's label is drawn left of its bars: dark pixels where the cache's name is.
    for y in &lanes {
        let row = y + 12.0 + dy;
        let ink = (8..150).filter(|x| at(f64::from(*x) + dx, row).0 < 120).count();
        assert!(ink > 3, "no label at the lane at y={y}");
    }
}
