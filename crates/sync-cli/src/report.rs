//! `site-sync report`: a run's account rendered for people (text, Markdown, HTML with the
//! timeline picture) or automation (JSON), from the journal alone. The picture is SVG drawn with
//! the `svg` crate: no JavaScript, readable inline in the HTML or as a file next to the Markdown.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use svg::Document;
use svg::node::element::{Group, Line, Rectangle, Text, Title};
use sync_core::Side;
use sync_core::account::{Account, Span};
use sync_core::journal::{Finished, Journal};
use sync_core::vocabulary::{Verdict, human_duration};

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Plain text, for a terminal or a chat.
    Text,
    /// Markdown, for an incident document (the picture as an image next to it).
    Markdown,
    /// One HTML page with the timeline drawn inline.
    Html,
    /// The timeline picture alone (SVG).
    Svg,
    /// The account as one JSON object.
    Json,
}

/// `2026-12-03T09:14:05Z`.
pub fn wall_clock(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `09:14:05`: lines within a run, whose date the header gives.
fn time_of_day(ms: u64) -> String {
    let full = wall_clock(ms);
    full.get(11..19).unwrap_or(&full).to_owned()
}

fn took(span: Span, end_ms: u64) -> String {
    let to = span.end_or(end_ms);
    let length = human_duration(Duration::from_millis(to - span.from_ms));
    match span.to_ms {
        Some(_) => format!("{} → {} ({length})", time_of_day(span.from_ms), time_of_day(to)),
        None => format!("{} → not ended when the journal was last written ({length} by then)", time_of_day(span.from_ms)),
    }
}

fn outcome_line(account: &Account) -> String {
    match &account.finished {
        Some(Finished::Succeeded) => "succeeded".to_owned(),
        Some(Finished::Refused { reason }) => format!("refused: {reason}"),
        Some(Finished::Failed { reason }) => format!("failed: {reason}"),
        Some(Finished::Interrupted) => "interrupted at a safe point".to_owned(),
        None => "not finished (still running, or its process ended without a word)".to_owned(),
    }
}

fn verdict_text(verdict: Option<&Verdict>) -> String {
    verdict.map_or_else(|| "not verified".to_owned(), ToString::to_string)
}

fn keycloak_line(account: &Account) -> String {
    let mut line = keycloak_downtime(account);
    if let Some((lb_check, ready)) = account.keycloak_serving {
        let said = |path: &str, status: Option<u16>| status.map(|s| format!("{path} {s}"));
        let answers: Vec<String> = [said("/lb-check", lb_check), said("/health/ready", ready)].into_iter().flatten().collect();
        let answers = if answers.is_empty() { "no answer".to_owned() } else { answers.join(", ") };
        let _ = write!(line, "; at the end: {answers}");
    }
    line
}

fn keycloak_downtime(account: &Account) -> String {
    let offline = &account.offline.name;
    match (account.keycloak_down, account.keycloak_instances) {
        (Some(down), n) => {
            let restored = n.map(|n| format!(", {n} instance(s) before and after")).unwrap_or_default();
            format!("Keycloak on {offline} down {}{restored}", took(down, account.end_ms()))
        }
        (None, Some(n)) => format!("Keycloak on {offline} ({n} instance(s)) was not seen stopped in this journal"),
        (None, None) => format!("Keycloak on {offline} was not managed by site-sync"),
    }
}

fn outage_lines(account: &Account) -> Vec<String> {
    account.link_outages.iter().map(|span| format!("lost {}", took(*span, account.end_ms()))).collect()
}

/// `site-b (http://...), Infinispan 16.0.7, 2 nodes`.
fn site_line(account: &Account, side: Side) -> String {
    let site = if side == Side::Active { &account.active } else { &account.offline };
    match account.servers.iter().find(|(s, ..)| *s == side) {
        Some((_, version, nodes)) => format!("{site}, Infinispan {version}, {nodes} node(s)"),
        None => site.to_string(),
    }
}

/// The facts every format shows, as (label, text) pairs.
fn header(account: &Account) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("Run", account.run_id.clone()),
        ("Active site", site_line(account, Side::Active)),
        ("Offline site", site_line(account, Side::Offline)),
        (
            "When",
            format!(
                "{} → {} ({}), {} attempt(s)",
                wall_clock(account.span.from_ms),
                wall_clock(account.end_ms()),
                human_duration(Duration::from_millis(account.end_ms() - account.span.from_ms)),
                account.attempts
            ),
        ),
        ("Outcome", outcome_line(account)),
    ];
    if let Some(direction) = &account.direction {
        let overridden = if direction.overridden { " (overridden: --discard-offline-writes)" } else { "" };
        lines.push(("Direction", format!("{}{overridden}", direction.summary())));
    }
    lines.push(("Keycloak", keycloak_line(account)));
    let outages = outage_lines(account);
    lines.push(("Cross-site link", if outages.is_empty() { "never seen lost".to_owned() } else { outages.join("; ") }));
    lines.push(("Next", account.next_step.clone()));
    lines
}

fn cache_summary(cache: &sync_core::account::CacheAccount) -> String {
    let mut parts = vec![if cache.cleared { "cleared".to_owned() } else { "not cleared in this run".to_owned() }];
    parts.push(format!("{} push(es)", cache.push_attempts));
    if cache.verify_repushes > 0 {
        parts.push(format!("{} re-push(es) after verification", cache.verify_repushes));
    }
    if cache.retries > 0 {
        parts.push(format!("{} retr(ies)", cache.retries));
    }
    if let Some(error) = &cache.last_error {
        parts.push(format!("last push error: {error}"));
    }
    parts.push(verdict_text(cache.verdict.as_ref()));
    parts.join(", ")
}

fn phases_line(cache: &sync_core::account::CacheAccount, end_ms: u64) -> String {
    cache.phases.iter().map(|p| format!("{} {}", p.phase, took(p.span, end_ms))).collect::<Vec<_>>().join("; ")
}

/// Plain text.
pub fn text(account: &Account) -> String {
    let mut out = String::new();
    let end = account.end_ms();
    for (label, value) in header(account) {
        let _ = writeln!(out, "{:<17}{value}", format!("{label}:"));
    }
    let _ = writeln!(out, "\nSteps (UTC):");
    for step in &account.steps {
        let to = step.span.end_or(end);
        let _ = writeln!(
            out,
            "  {}  {}  {:>9}  {:<20} {}",
            time_of_day(step.span.from_ms),
            time_of_day(to),
            human_duration(Duration::from_millis(to - step.span.from_ms)).to_string(),
            step.step.name(),
            step.outcome
        );
    }
    let _ = writeln!(out, "\nCaches:");
    for cache in &account.caches {
        let _ = writeln!(out, "  {}: {}", cache.cache, cache_summary(cache));
        if !cache.phases.is_empty() {
            let _ = writeln!(out, "    {}", phases_line(cache, end));
        }
    }
    for (title, entries) in timed_lists(account) {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for entry in entries {
            let _ = writeln!(out, "  {}", entry_line(entry));
        }
    }
    if !account.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for warning in &account.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    if account.left_out > 0 {
        let _ = writeln!(out, "\n({} later moments were not kept: the journal keeps the first ones)", account.left_out);
    }
    out
}

/// The lists of timed entries every format shows, with their titles.
fn timed_lists(account: &Account) -> [(&'static str, &[sync_core::account::Entry]); 3] {
    [
        ("Waits", &account.waits),
        ("Retries", &account.retries),
        ("Interlocks that held an action back", &account.refused_interlocks),
    ]
}

fn entry_line(entry: &sync_core::account::Entry) -> String {
    let step = entry.step.map(|s| format!(" [{}]", s.name())).unwrap_or_default();
    let cache = entry.cache.as_ref().map(|c| format!(" {c}:")).unwrap_or_default();
    let until = entry.until_ms.map(|u| format!(" (until {})", time_of_day(u))).unwrap_or_default();
    format!("{}{step}{cache} {}{until}", time_of_day(entry.at_ms), entry.text)
}

/// Markdown cells keep to one line and show `|` as text.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Markdown; `picture` names the timeline's SVG file, shown as an image.
pub fn markdown(account: &Account, picture: Option<&str>) -> String {
    let mut out = String::new();
    let end = account.end_ms();
    let _ = writeln!(out, "## site-sync run {}: {} → {}\n", account.run_id, account.active.name, account.offline.name);
    for (label, value) in header(account) {
        let _ = writeln!(out, "- **{label}:** {}", cell(&value));
    }
    if let Some(picture) = picture {
        let _ = writeln!(out, "\n![Timeline of run {}]({picture})", account.run_id);
    }
    let _ = writeln!(out, "\n### Steps (UTC)\n\n| Start | End | Took | Step | Outcome |\n|---|---|---|---|---|");
    for step in &account.steps {
        let to = step.span.end_or(end);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            time_of_day(step.span.from_ms),
            time_of_day(to),
            human_duration(Duration::from_millis(to - step.span.from_ms)),
            step.step.name(),
            step.outcome
        );
    }
    let _ = writeln!(out, "\n### Caches\n\n| Cache | Cleared | Pushes | Verdict | Phases |\n|---|---|---|---|---|");
    for cache in &account.caches {
        let mut pushes = cache.push_attempts.to_string();
        if cache.verify_repushes > 0 {
            let _ = write!(pushes, " ({} after verification)", cache.verify_repushes);
        }
        if let Some(error) = &cache.last_error {
            let _ = write!(pushes, "; last error: {error}");
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cache.cache,
            if cache.cleared { "yes" } else { "no" },
            cell(&pushes),
            cell(&verdict_text(cache.verdict.as_ref())),
            cell(&phases_line(cache, end))
        );
    }
    for (title, entries) in timed_lists(account) {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n### {title}\n");
        for entry in entries {
            let _ = writeln!(out, "- {}", cell(&entry_line(entry)));
        }
    }
    if !account.warnings.is_empty() {
        let _ = writeln!(out, "\n### Warnings\n");
        for warning in &account.warnings {
            let _ = writeln!(out, "- {}", cell(warning));
        }
    }
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One HTML page: the facts, the timeline inline, the details as in the text report.
pub fn html(account: &Account) -> String {
    let mut out = String::new();
    let title = format!("site-sync run {}: {} → {}", account.run_id, account.active.name, account.offline.name);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} dt{{font-weight:bold;float:left;width:9em;clear:left}} \
         dd{{margin:0 0 4px 10em}} pre{{background:#f6f6f6;padding:8px;overflow-x:auto}}</style></head><body>\n<h1>{}</h1>\n<dl>\n",
        html_escape(&title),
        html_escape(&title)
    );
    for (label, value) in header(account) {
        let _ = writeln!(out, "<dt>{label}</dt><dd>{}</dd>", html_escape(&value));
    }
    let _ = writeln!(out, "</dl>\n<h2>Timeline (UTC)</h2>\n{}", timeline(account));
    let _ = writeln!(out, "<h2>Details</h2>\n<pre>{}</pre>\n</body></html>", html_escape(&text(account)));
    out
}

/// Colours of the phases, and of the bands across the lanes.
const PHASES: [(&str, &str); 5] =
    [("take-offline", "#8e6cc6"), ("clear", "#d9534f"), ("bring-online", "#5bc0de"), ("push", "#337ab7"), ("verify", "#5cb85c")];
const KEYCLOAK_DOWN: &str = "#f0ad4e";
const LINK_LOST: &str = "#6c757d";

const WIDTH: f64 = 960.0;
const LABELS: f64 = 170.0;
const LANE: f64 = 28.0;
const TOP: f64 = 56.0;

/// Tick spacing for an axis `length_ms` long: about eight ticks at a round interval.
fn tick_every(length_ms: u64) -> u64 {
    const ROUND: [u64; 13] =
        [1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000];
    ROUND.into_iter().find(|step| length_ms / step <= 8).unwrap_or(3_600_000 * (length_ms / 3_600_000 / 8 + 1))
}

/// The timeline: a lane per cache with its phases, Keycloak's down window and the link outages
/// as bands across every lane, on one wall-clock axis.
pub fn timeline(account: &Account) -> String {
    let start = account.span.from_ms;
    let end = account.end_ms().max(start + 1000);
    let plot = WIDTH - LABELS - 20.0;
    let x = |ms: u64| LABELS + plot * (ms.clamp(start, end) - start) as f64 / (end - start) as f64;
    let lanes = account.caches.len().max(1) as f64;
    let bottom = TOP + lanes * LANE;
    let height = bottom + 56.0;
    let mut picture = Document::new()
        .set("viewBox", (0, 0, WIDTH, height))
        .set("width", WIDTH)
        .set("height", height)
        .set("font-family", "sans-serif")
        .set("font-size", 12)
        .add(Rectangle::new().set("width", WIDTH).set("height", height).set("fill", "white"));
    // Bands first, behind the lanes.
    let band = |span: Span, colour: &str, label: &str, row: f64| {
        let (from, to) = (x(span.from_ms), x(span.end_or(end)));
        Group::new()
            .set("class", "band")
            .add(Title::new(format!("{label}: {}", took(span, end))))
            .add(
                Rectangle::new()
                    .set("x", from)
                    .set("y", TOP - 6.0)
                    .set("width", (to - from).max(2.0))
                    .set("height", bottom - TOP + 12.0)
                    .set("fill", colour)
                    .set("fill-opacity", 0.18),
            )
            .add(Text::new(label).set("x", from + 2.0).set("y", row).set("fill", colour))
    };
    if let Some(down) = account.keycloak_down {
        picture = picture.add(band(down, KEYCLOAK_DOWN, "Keycloak down", TOP - 26.0));
    }
    for outage in &account.link_outages {
        picture = picture.add(band(*outage, LINK_LOST, "link lost", TOP - 12.0));
    }
    for (i, cache) in account.caches.iter().enumerate() {
        let y = TOP + i as f64 * LANE;
        let mut lane = Group::new().set("class", "lane").set("data-cache", cache.cache.as_str());
        lane = lane.add(Text::new(cache.cache.as_str()).set("x", 8).set("y", y + LANE * 0.65));
        lane = lane.add(
            Line::new().set("x1", LABELS).set("x2", WIDTH - 20.0).set("y1", y + LANE).set("y2", y + LANE).set("stroke", "#ddd"),
        );
        for phase in &cache.phases {
            let colour = PHASES.iter().find(|(name, _)| *name == phase.phase).map_or("#999", |(_, c)| c);
            let (from, to) = (x(phase.span.from_ms), x(phase.span.end_or(end)));
            lane = lane.add(
                Group::new()
                    .set("class", "phase")
                    .set("data-phase", phase.phase)
                    .add(Title::new(format!("{}: {}", phase.phase, took(phase.span, end))))
                    .add(
                        Rectangle::new()
                            .set("x", from)
                            .set("y", y + 5.0)
                            .set("width", (to - from).max(2.0))
                            .set("height", LANE - 10.0)
                            .set("fill", colour),
                    ),
            );
        }
        picture = picture.add(lane);
    }
    // The axis, with wall-clock labels at round intervals.
    let every = tick_every(end - start);
    let mut axis = Group::new().set("class", "axis");
    axis =
        axis.add(Line::new().set("x1", LABELS).set("x2", WIDTH - 20.0).set("y1", bottom).set("y2", bottom).set("stroke", "#444"));
    let mut tick = start.div_ceil(every) * every;
    while tick <= end {
        axis = axis
            .add(
                Line::new().set("x1", x(tick)).set("x2", x(tick)).set("y1", bottom).set("y2", bottom + 5.0).set("stroke", "#444"),
            )
            .add(Text::new(time_of_day(tick)).set("x", x(tick)).set("y", bottom + 18.0).set("text-anchor", "middle"));
        tick += every;
    }
    picture = picture.add(axis);
    // The legend.
    let mut legend = Group::new().set("class", "legend");
    let mut at = LABELS;
    for (name, colour) in PHASES.iter().copied().chain([("Keycloak down", KEYCLOAK_DOWN), ("link lost", LINK_LOST)]) {
        legend = legend
            .add(Rectangle::new().set("x", at).set("y", height - 20.0).set("width", 12).set("height", 12).set("fill", colour))
            .add(Text::new(name).set("x", at + 16.0).set("y", height - 10.0));
        at += 16.0 + 6.5 * name.len() as f64 + 14.0;
    }
    picture.add(legend).to_string()
}

/// The account as JSON, with `"type": "report"` like every other JSON document the tool writes.
pub fn json(account: &Account) -> serde_json::Value {
    let mut value = serde_json::to_value(account).unwrap_or_default();
    value["type"] = serde_json::json!("report");
    value
}

/// Renders `journal` in `format`; `picture` names the SVG the Markdown shows.
pub fn render(journal: &Journal, format: ReportFormat, picture: Option<&str>) -> String {
    let account = Account::of(journal);
    match format {
        ReportFormat::Text => text(&account),
        ReportFormat::Markdown => markdown(&account, picture),
        ReportFormat::Html => html(&account),
        ReportFormat::Svg => timeline(&account),
        ReportFormat::Json => format!("{}\n", json(&account)),
    }
}

/// Where a run's report files go: next to its journal, named after it.
pub struct ReportFiles {
    /// The Markdown report.
    pub markdown: PathBuf,
    /// The HTML report, with the timeline inline.
    pub html: PathBuf,
    /// The timeline alone.
    pub svg: PathBuf,
}

impl ReportFiles {
    /// Beside `journal`: `x.journal.json` → `x.report.md`, `x.report.html`, `x.timeline.svg`.
    pub fn beside(journal: &Path) -> Self {
        let name = journal.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.strip_suffix(".journal.json").or_else(|| name.strip_suffix(".json")).unwrap_or(&name).to_owned();
        let at = |suffix: &str| journal.with_file_name(format!("{stem}.{suffix}"));
        Self { markdown: at("report.md"), html: at("report.html"), svg: at("timeline.svg") }
    }

    /// Writes all three for `journal`.
    pub fn write(&self, journal: &Journal) -> std::io::Result<()> {
        let picture = self.svg.file_name().map(|n| n.to_string_lossy().into_owned());
        std::fs::write(&self.svg, render(journal, ReportFormat::Svg, None))?;
        std::fs::write(&self.markdown, render(journal, ReportFormat::Markdown, picture.as_deref()))?;
        std::fs::write(&self.html, render(journal, ReportFormat::Html, None))
    }
}
