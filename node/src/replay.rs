//! The animated replay of a [`ClusterTrace`]: one self-contained HTML page (inline CSS and
//! JavaScript, the trace embedded as JSON, nothing fetched), in the manner of RaftScope.
//!
//! The servers sit on a circle, filled with their term's colour (a leader darker, with a thick
//! rim), each follower and candidate ringed by its election timer; messages travel between
//! them (requests filled, responses hollow, coloured by kind; a dropped message ends in a red
//! cross, one never received in an orange one); beside them each server's log, an entry
//! coloured by its term, dashed until committed, with the commit index as a red bar; below, a
//! timeline of the whole run with each server's role, the event density and the faults
//! (crash, restart, partition, heal, ...). Play, pause, step to the next or previous notable
//! event, scrub, change the speed, click the timeline to jump; click a server, a message or
//! an entry for its details.
//!
//! Large traces stay smooth: the page rebuilds the state at any moment from checkpoints taken
//! every 2,000 events, draws only the messages in flight around the current time, keeps the
//! last 400 entries of each log, and draws the timeline once per pixel column.

use std::fmt::Write as _;

use crate::trace::ClusterTrace;

const STYLE: &str = include_str!("replay/replay.css");
const SCRIPT: &str = include_str!("replay/replay.js");

/// The replay page of `trace`.
pub fn replay_html(trace: &ClusterTrace) -> String {
    // `<` only appears inside JSON strings, where `\u003c` means the same: the JSON cannot
    // close its <script> element.
    let json = trace.to_json().replace('<', "\\u003c");
    let seconds = trace.events.last().map_or(0.0, |e| e.t_us as f64 / 1e6)
        - trace.events.first().map_or(0.0, |e| e.t_us as f64 / 1e6);
    let mut html = String::with_capacity(json.len() + STYLE.len() + SCRIPT.len() + 4096);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<title>raftkv cluster replay</title>\n<style>\n");
    html.push_str(STYLE);
    html.push_str("</style>\n</head>\n<body>\n<header>\n<h1>raftkv cluster replay</h1>\n");
    let _ = write!(
        html,
        "<p class=\"summary\">{} nodes, {} events over {:.1} s",
        trace.nodes.len(),
        trace.events.len(),
        seconds.max(0.0)
    );
    if trace.dropped > 0 {
        let _ = write!(
            html,
            " <span class=\"warn\">(the {} oldest events were dropped: the trace keeps the \
             last {} messages and log events, and the elections and faults before them)</span>",
            trace.dropped, trace.events_max
        );
    }
    html.push_str(
        ". Messages are slowed down to stay visible; a server's election timer is the ring \
         around it.</p>\n</header>\n",
    );
    html.push_str(
        "<div id=\"controls\">\
         <button id=\"back\" title=\"previous event (left arrow)\">&laquo; prev</button>\
         <button id=\"play\" title=\"play / pause (space)\">play</button>\
         <button id=\"fwd\" title=\"next event (right arrow)\">next &raquo;</button>\
         <label for=\"speed\">speed</label><select id=\"speed\">\
         <option value=\"0.01\">0.01\u{d7}</option><option value=\"0.03\">0.03\u{d7}</option>\
         <option value=\"0.1\" selected>0.1\u{d7}</option><option value=\"0.3\">0.3\u{d7}</option>\
         <option value=\"1\">1\u{d7}</option><option value=\"3\">3\u{d7}</option>\
         <option value=\"10\">10\u{d7}</option></select>\
         <input id=\"scrub\" type=\"range\" min=\"0\" max=\"10000\" value=\"0\" aria-label=\"time\">\
         <span id=\"clock\"></span></div>\n",
    );
    html.push_str(
        "<div id=\"stage\"><canvas id=\"cluster\" aria-label=\"servers and messages\"></canvas>\
         <div id=\"side\"><canvas id=\"logs\" aria-label=\"logs\"></canvas>\
         <pre id=\"details\"></pre><pre id=\"recent\"></pre></div></div>\n\
         <div id=\"timeline-wrap\"><canvas id=\"timeline\" aria-label=\"timeline\"></canvas></div>\n",
    );
    html.push_str(
        "<div class=\"legend\"><span><i class=\"dot\" style=\"background:#1f6fd1\"></i>append</span>\
         <span><i class=\"dot\" style=\"background:#2a9d8f\"></i>heartbeat</span>\
         <span><i class=\"dot\" style=\"background:#6a3fbf\"></i>vote</span>\
         <span><i class=\"dot\" style=\"background:#8e6cc9\"></i>pre-vote</span>\
         <span><i class=\"dot\" style=\"background:#d17a1f\"></i>snapshot</span>\
         <span><i class=\"dot\" style=\"background:#c2185b\"></i>timeout-now</span>\
         <span>hollow: a response</span><span>red \u{d7}: dropped</span>\
         <span>orange \u{d7}: never received</span><span>log: colour = term, dashed = not \
         committed, red bar = commit index</span></div>\n",
    );
    html.push_str("<script type=\"application/json\" id=\"trace-data\">");
    html.push_str(&json);
    html.push_str("</script>\n<script>\n");
    html.push_str(SCRIPT);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceRecorder;
    use raftkv_raft::driver::observer::EventKind;
    use std::time::Duration;

    #[test]
    fn replay_page_is_self_contained_and_its_json_cannot_close_the_script() {
        let r = TraceRecorder::new(Duration::ZERO, 10);
        r.add_node(1);
        r.record(
            Duration::from_millis(5),
            1,
            EventKind::Stop {
                reason: "</script><b>".into(),
            },
        );
        let html = replay_html(&r.snapshot());
        assert_eq!(html.matches("</script>").count(), 2, "only the page's own");
        assert!(html.contains("\\u003c/script>\\u003cb>"));
        for remote in ["http://", "https://", "src=", "@import"] {
            assert!(!html.contains(remote), "fetches nothing: {remote}");
        }
        assert!(html.contains("id=\"play\"") && html.contains("id=\"scrub\""));
    }
}
