//! A self-contained HTML visualization of a checked history: no network, inline CSS, SVG and a
//! few lines of JavaScript.
//!
//! One section per partition; in it, one lane per client and one bar per operation on a time
//! axis (times are replaced by their rank, so that bursts and gaps take the same room),
//! labelled with the operation's input and output. Operations in the linearization (for an
//! illegal partition: the longest linearizable prefix found) are green and numbered in
//! linearization order; the operations none of which could be placed after that prefix are
//! red; operations whose outcome is unknown are dashed and run to the end of the axis when
//! they never returned. Below the lanes, a table lists the linearization with the state after
//! each step. Hovering a bar shows its description; clicking it shows its details.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Write};

use super::{CheckResult, Model, Operation, PartitionResult, Verdict};

const STYLE: &str = include_str!("visualize.css");
const SCRIPT: &str = include_str!("visualize.js");

/// Width of the lane labels, pixels.
const GUTTER_PX: usize = 96;
/// Space before the first event, pixels.
const PAD_PX: usize = 8;
/// Height of one row of bars, pixels.
const ROW_PX: usize = 26;
/// Height of a bar, pixels.
const BAR_PX: usize = 20;
/// Narrowest bar, pixels.
const BAR_MIN_PX: usize = 12;
/// Width of one character of a label, pixels (monospace 11px).
const CHAR_PX: f64 = 6.7;

/// Writes the HTML visualization of `ops` and `result` (the result of checking `ops` under
/// `model`) to `out`.
pub fn visualize<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    result: &CheckResult,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut html = String::new();
    page(&mut html, model, ops, result);
    out.write_all(html.as_bytes())
}

/// `s` escaped for HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The first `chars` characters of `s`, with an ellipsis if cut.
fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s.to_string();
    }
    let mut t: String = s.chars().take(chars.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Illegal => "illegal",
        Verdict::Unknown => "unknown",
    }
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "linearizable",
        Verdict::Illegal => "not linearizable",
        Verdict::Unknown => "unknown (not decided)",
    }
}

fn page<M: Model>(
    html: &mut String,
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    result: &CheckResult,
) {
    let count = |v| result.partitions.iter().filter(|p| p.verdict == v).count();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Linearizability: {verdict}</title>\n<style>\n{STYLE}</style>\n</head>\n\
         <body data-verdict=\"{class}\">\n<header>\n<h1>History: <span class=\"verdict {class}\">{verdict}</span></h1>\n\
         <p class=\"summary\">{n} operations · {p} partition{s} ({ok} linearizable, {bad} not, {unknown} undecided)</p>\n\
         <p class=\"legend\"><span class=\"swatch lin\"></span> linearized (#order) \
         <span class=\"swatch bad\"></span> could not be placed next \
         <span class=\"swatch plain\"></span> not reached \
         <span class=\"swatch unknown\"></span> outcome unknown · hover a bar for its description, click it for details</p>\n\
         </header>\n<main>\n",
        verdict = verdict_text(result.verdict),
        class = verdict_class(result.verdict),
        n = ops.len(),
        p = result.partitions.len(),
        s = if result.partitions.len() == 1 { "" } else { "s" },
        ok = count(Verdict::Ok),
        bad = count(Verdict::Illegal),
        unknown = count(Verdict::Unknown),
    );
    // Undecided and illegal partitions first: they are what a reader opens the file for.
    let mut order: Vec<usize> = (0..result.partitions.len()).collect();
    order.sort_by_key(|&i| match result.partitions[i].verdict {
        Verdict::Illegal => 0,
        Verdict::Unknown => 1,
        Verdict::Ok => 2,
    });
    for i in order {
        section(html, model, ops, result, i);
    }
    let _ = write!(
        html,
        "</main>\n<aside id=\"info\" hidden></aside>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    );
}

fn section<M: Model>(
    html: &mut String,
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    result: &CheckResult,
    index: usize,
) {
    let part = &result.partitions[index];
    let valid = |&i: &usize| i < ops.len();
    let members: Vec<usize> = part.ops.iter().copied().filter(valid).collect();
    let label = if result.partitioned {
        members
            .first()
            .and_then(|&i| model.describe_partition(&ops[i].input))
    } else {
        None
    };
    let label = label.unwrap_or_else(|| {
        if result.partitioned {
            String::new()
        } else {
            "whole history".to_string()
        }
    });
    let class = verdict_class(part.verdict);
    let open = if part.verdict != Verdict::Ok || result.partitions.len() == 1 {
        " open"
    } else {
        ""
    };
    let _ = write!(
        html,
        "<section class=\"partition {class}\" id=\"partition-{index}\" data-verdict=\"{class}\" data-ops=\"{n}\">\n\
         <details{open}>\n<summary><h2>Partition {number} {label} · <span class=\"verdict {class}\">{verdict}</span> · {n} operations</h2></summary>\n",
        number = index + 1,
        label = esc(&label),
        verdict = match part.undecided {
            Some(why) if part.verdict == Verdict::Unknown => format!("undecided ({})", why.describe()),
            _ => verdict_text(part.verdict).to_string(),
        },
        n = members.len(),
    );
    let states = replay(model, ops, part);
    timeline(html, model, ops, part, &members, &states, index);
    steps_table(html, model, ops, part, &states);
    html.push_str("</details>\n</section>\n");
}

/// The description of the state after each step of the linearization (shorter if a step is
/// refused, which a correct result never has).
fn replay<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    part: &PartitionResult,
) -> Vec<String> {
    let mut state = model.init();
    let mut out = Vec::new();
    for &i in &part.linearization {
        let Some(op) = ops.get(i) else { break };
        match model.apply(&state, op) {
            Some(next) => state = next,
            None => break,
        }
        out.push(model.describe_state(&state));
    }
    out
}

fn timeline<M: Model>(
    html: &mut String,
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    part: &PartitionResult,
    members: &[usize],
    states: &[String],
    section: usize,
) {
    let order: HashMap<usize, usize> = part
        .linearization
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, k + 1))
        .collect();
    let bad: HashSet<usize> = part.unplaceable.iter().copied().collect();

    // Times → ranks.
    let mut times: Vec<u64> = members
        .iter()
        .flat_map(|&i| [Some(ops[i].call), ops[i].ret])
        .flatten()
        .collect();
    times.sort_unstable();
    times.dedup();
    let rank = |t: u64| times.partition_point(|&u| u < t);
    let unit = rank_width(model, ops, members, &rank, times.len());
    let x_of = |t: u64| PAD_PX + rank(t) * unit + unit / 2;
    let x_end = PAD_PX + times.len() * unit + unit;
    let width = x_end + unit;

    // Rows: one lane per client, split into rows where its operations overlap.
    let mut by_client: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for &i in members {
        by_client.entry(ops[i].client).or_default().push(i);
    }
    let mut labels = String::new();
    let mut lanes = String::new();
    let mut bars = String::new();
    let mut y = 4;
    for (lane, (client, mut list)) in by_client.into_iter().enumerate() {
        list.sort_by_key(|&i| (ops[i].call, i));
        let mut row_ends: Vec<usize> = Vec::new();
        let mut placed = Vec::with_capacity(list.len());
        for i in list {
            let x1 = x_of(ops[i].call);
            let x2 = ops[i].ret.map_or(x_end, x_of).max(x1 + BAR_MIN_PX);
            let row = match row_ends.iter().position(|&end| end + 2 <= x1) {
                Some(r) => r,
                None => {
                    row_ends.push(0);
                    row_ends.len() - 1
                }
            };
            row_ends[row] = x2;
            placed.push((i, row, x1, x2));
        }
        let rows = row_ends.len().max(1);
        let lane_class = if lane % 2 == 0 {
            "lane even"
        } else {
            "lane odd"
        };
        let h = rows * ROW_PX;
        let _ = writeln!(
            lanes,
            "<rect class=\"{lane_class}\" x=\"0\" y=\"{y}\" width=\"{width}\" height=\"{h}\"/>"
        );
        let _ = writeln!(
            labels,
            "<rect class=\"{lane_class}\" x=\"0\" y=\"{y}\" width=\"{GUTTER_PX}\" height=\"{h}\"/>\
             <text class=\"lane-label\" x=\"6\" y=\"{ty}\">client {client}</text>",
            ty = y + ROW_PX / 2 + 4,
        );
        for (i, row, x1, x2) in placed {
            let op = &ops[i];
            let unknown = model.op_outcome_unknown(op);
            let mut class = String::from("op");
            class.push_str(if order.contains_key(&i) {
                " lin"
            } else if bad.contains(&i) {
                " bad"
            } else {
                " plain"
            });
            if unknown {
                class.push_str(" unknown");
            }
            let mut desc = model.describe_operation(&op.input, &op.output);
            if op.ret.is_none() {
                desc.push_str(" (no response)");
            }
            let number = order.get(&i).map(|k| format!("#{k} ")).unwrap_or_default();
            let state = order
                .get(&i)
                .and_then(|k| states.get(k - 1))
                .map(String::as_str)
                .unwrap_or("");
            let by = y + row * ROW_PX + (ROW_PX - BAR_PX) / 2;
            let fit = ((x2 - x1).saturating_sub(8) as f64 / CHAR_PX) as usize;
            let label = if fit >= 2 {
                truncate(&format!("{number}{desc}"), fit)
            } else {
                String::new()
            };
            let _ = writeln!(
                bars,
                "<g class=\"{class}\" id=\"op-{section}-{i}\" data-op=\"{i}\" data-client=\"{client}\" data-order=\"{ord}\" \
                 data-call=\"{call}\" data-ret=\"{ret}\" data-desc=\"{d}\" data-state=\"{s}\" tabindex=\"0\">\
                 <title>{number}{d}</title><rect class=\"bar\" x=\"{x1}\" y=\"{by}\" width=\"{w}\" height=\"{BAR_PX}\" rx=\"3\"/>\
                 <text class=\"label\" x=\"{tx}\" y=\"{ty}\">{l}</text></g>",
                ord = order.get(&i).map(|k| k.to_string()).unwrap_or_default(),
                call = op.call,
                ret = op.ret.map_or("none".to_string(), |r| r.to_string()),
                d = esc(&desc),
                s = esc(state),
                w = x2 - x1,
                tx = x1 + 4,
                ty = by + BAR_PX / 2 + 4,
                l = esc(&label),
            );
        }
        y += rows * ROW_PX;
    }
    let height = y + 4;
    let _ = write!(
        html,
        "<div class=\"timeline-wrap\"><svg class=\"lane-labels\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{GUTTER_PX}\" \
         height=\"{height}\">\n{labels}</svg>\n<div class=\"scroll\"><svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<g class=\"lanes\">\n{lanes}</g>\n\
         <g class=\"ops\">\n{bars}</g>\n</svg></div></div>\n"
    );
}

/// Pixels per time rank: wide enough that about half the labels fit in their bars, within
/// [`RANK_PX_MIN`, `RANK_PX_MAX`], and narrow enough that the axis stays under `AXIS_PX_MAX`.
fn rank_width<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    members: &[usize],
    rank: &impl Fn(u64) -> usize,
    ranks: usize,
) -> usize {
    const RANK_PX_MIN: usize = 16;
    const RANK_PX_MAX: usize = 160;
    const AXIS_PX_MAX: usize = 40_000;
    let mut wanted: Vec<usize> = members
        .iter()
        .filter_map(|&i| {
            let op = &ops[i];
            let span = rank(op.ret?).saturating_sub(rank(op.call)).max(1);
            let chars = model
                .describe_operation(&op.input, &op.output)
                .chars()
                .count()
                + 5;
            Some((chars as f64 * CHAR_PX) as usize / span + 1)
        })
        .collect();
    wanted.sort_unstable();
    let median = wanted.get(wanted.len() / 2).copied().unwrap_or(RANK_PX_MIN);
    median
        .clamp(RANK_PX_MIN, RANK_PX_MAX)
        .min((AXIS_PX_MAX / ranks.max(1)).max(RANK_PX_MIN))
}

fn steps_table<M: Model>(
    html: &mut String,
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    part: &PartitionResult,
    states: &[String],
) {
    let title = match part.verdict {
        Verdict::Ok => "Linearization",
        _ => "Longest linearizable prefix found",
    };
    let open = if part.verdict == Verdict::Illegal {
        " open"
    } else {
        ""
    };
    let _ = write!(
        html,
        "<details class=\"steps\"{open}><summary>{title} ({n} steps)</summary>\n<table>\n\
         <thead><tr><th>#</th><th>client</th><th>operation</th><th>call</th><th>return</th><th>state after</th></tr></thead>\n<tbody>\n",
        n = part.linearization.len(),
    );
    let time = |t: Option<u64>| t.map_or("none".to_string(), |t| t.to_string());
    for (k, &i) in part.linearization.iter().enumerate() {
        let Some(op) = ops.get(i) else { continue };
        let _ = writeln!(
            html,
            "<tr class=\"lin\"><td>{n}</td><td>{c}</td><td>{d}</td><td>{call}</td><td>{ret}</td><td>{s}</td></tr>",
            n = k + 1,
            c = op.client,
            d = esc(&model.describe_operation(&op.input, &op.output)),
            call = op.call,
            ret = time(op.ret),
            s = esc(states.get(k).map(String::as_str).unwrap_or("(refused)")),
        );
    }
    if !part.unplaceable.is_empty() {
        html.push_str("<tr class=\"divider\"><td colspan=\"6\">None of these could be placed next:</td></tr>\n");
        for &i in &part.unplaceable {
            let Some(op) = ops.get(i) else { continue };
            let _ = writeln!(
                html,
                "<tr class=\"bad\"><td>✗</td><td>{c}</td><td>{d}</td><td>{call}</td><td>{ret}</td><td></td></tr>",
                c = op.client,
                d = esc(&model.describe_operation(&op.input, &op.output)),
                call = op.call,
                ret = time(op.ret),
            );
        }
    }
    html.push_str("</tbody>\n</table>\n</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_truncates_by_characters() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 3), "hé…");
    }
}
