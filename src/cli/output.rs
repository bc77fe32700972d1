//! kvctl's printers: each response rendered as etcdctl would (`simple`,
//! `json`) or as an aligned table. Pure functions from a response to text, so
//! they are tested without a server.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::args::Format;
use crate::pb;

/// One endpoint's answer to `Status`, or why there is none.
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: Result<pb::StatusResponse, String>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key or value as etcdctl prints it: its bytes as they are, or with
/// `hex` each byte as `\xNN` (etcdctl's `--hex`).
fn push_bytes(out: &mut Vec<u8>, bytes: &[u8], hex: bool) {
    if hex {
        for b in bytes {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    } else {
        out.extend_from_slice(bytes);
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Inserts `key: value` unless the value is zero, empty or false, as Go's
/// `omitempty` does in etcdctl's JSON.
fn put_nonzero(map: &mut Map<String, Value>, key: &str, value: Value) {
    let zero = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if !zero {
        map.insert(key.to_string(), value);
    }
}

pub(super) fn header_json(h: &Option<pb::ResponseHeader>) -> Value {
    let mut m = Map::new();
    if let Some(h) = h {
        put_nonzero(&mut m, "cluster_id", json!(h.cluster_id));
        put_nonzero(&mut m, "member_id", json!(h.member_id));
        put_nonzero(&mut m, "revision", json!(h.revision));
        put_nonzero(&mut m, "raft_term", json!(h.raft_term));
    }
    Value::Object(m)
}

fn kv_json(kv: &pb::KeyValue) -> Value {
    let mut m = Map::new();
    put_nonzero(&mut m, "key", json!(b64(&kv.key)));
    put_nonzero(&mut m, "create_revision", json!(kv.create_revision));
    put_nonzero(&mut m, "mod_revision", json!(kv.mod_revision));
    put_nonzero(&mut m, "version", json!(kv.version));
    put_nonzero(&mut m, "value", json!(b64(&kv.value)));
    put_nonzero(&mut m, "lease", json!(kv.lease));
    Value::Object(m)
}

fn simple_kv(out: &mut Vec<u8>, kv: &pb::KeyValue, hex: bool) {
    push_bytes(out, &kv.key, hex);
    out.push(b'\n');
    push_bytes(out, &kv.value, hex);
    out.push(b'\n');
}

fn kv_table(kvs: &[pb::KeyValue], hex: bool) -> String {
    let cell = |b: &[u8]| {
        if hex {
            let mut out = Vec::new();
            push_bytes(&mut out, b, true);
            text(&out)
        } else {
            text(b)
        }
    };
    let rows = kvs
        .iter()
        .map(|kv| {
            vec![
                cell(&kv.key),
                cell(&kv.value),
                kv.create_revision.to_string(),
                kv.mod_revision.to_string(),
                kv.version.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["KEY", "VALUE", "CREATE REVISION", "MOD REVISION", "VERSION"],
        &rows,
    )
}

fn put_value(resp: &pb::PutResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&resp.header));
    if let Some(prev) = &resp.prev_kv {
        m.insert("prev_kv".into(), kv_json(prev));
    }
    Value::Object(m)
}

fn range_value(resp: &pb::RangeResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&resp.header));
    put_nonzero(
        &mut m,
        "kvs",
        Value::Array(resp.kvs.iter().map(kv_json).collect()),
    );
    put_nonzero(&mut m, "more", json!(resp.more));
    put_nonzero(&mut m, "count", json!(resp.count));
    Value::Object(m)
}

fn del_value(resp: &pb::DeleteRangeResponse) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&resp.header));
    put_nonzero(&mut m, "deleted", json!(resp.deleted));
    put_nonzero(
        &mut m,
        "prev_kvs",
        Value::Array(resp.prev_kvs.iter().map(kv_json).collect()),
    );
    Value::Object(m)
}

fn txn_value(resp: &pb::TxnResponse) -> Value {
    use pb::response_op::Response;
    let responses: Vec<Value> = resp
        .responses
        .iter()
        .filter_map(|r| r.response.as_ref())
        .map(|r| {
            let (name, value) = match r {
                Response::ResponseRange(g) => ("ResponseRange", range_value(g)),
                Response::ResponsePut(p) => ("ResponsePut", put_value(p)),
                Response::ResponseDeleteRange(d) => ("ResponseDeleteRange", del_value(d)),
                Response::ResponseTxn(t) => ("ResponseTxn", txn_value(t)),
            };
            json!({ "Response": { name: value } })
        })
        .collect();
    let mut m = Map::new();
    m.insert("header".into(), header_json(&resp.header));
    put_nonzero(&mut m, "succeeded", json!(resp.succeeded));
    put_nonzero(&mut m, "responses", Value::Array(responses));
    Value::Object(m)
}

/// A transaction's response as etcdctl's JSON.
pub fn txn_json(resp: &pb::TxnResponse) -> String {
    txn_value(resp).to_string()
}

/// A watch response as one line of JSON.
pub fn watch_json(resp: &pb::WatchResponse) -> String {
    let events: Vec<Value> = resp
        .events
        .iter()
        .map(|e| {
            let mut m = Map::new();
            put_nonzero(&mut m, "type", json!(e.r#type));
            if let Some(kv) = &e.kv {
                m.insert("kv".into(), kv_json(kv));
            }
            if let Some(kv) = &e.prev_kv {
                m.insert("prev_kv".into(), kv_json(kv));
            }
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("Header".into(), header_json(&resp.header));
    m.insert("Events".into(), Value::Array(events));
    put_nonzero(&mut m, "CompactRevision", json!(resp.compact_revision));
    put_nonzero(&mut m, "Canceled", json!(resp.canceled));
    put_nonzero(&mut m, "Created", json!(resp.created));
    Value::Object(m).to_string()
}

/// A watch's events as etcdctl prints them: the event type, then the
/// previous pair (if asked for and present), then the pair.
pub fn watch_events(resp: &pb::WatchResponse, hex: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in &resp.events {
        out.extend_from_slice(if e.r#type == pb::mvccpb::event::EventType::Delete as i32 {
            b"DELETE\n"
        } else {
            b"PUT\n"
        });
        if let Some(prev) = &e.prev_kv {
            simple_kv(&mut out, prev, hex);
        }
        if let Some(kv) = &e.kv {
            simple_kv(&mut out, kv, hex);
        }
    }
    out
}

/// Output with keys and values: bytes, as they may not be text.
pub fn put(resp: &pb::PutResponse, format: Format, hex: bool) -> Vec<u8> {
    match format {
        Format::Json => (put_value(resp).to_string() + "\n").into_bytes(),
        Format::Simple | Format::Table => {
            let mut out = b"OK\n".to_vec();
            if let Some(prev) = &resp.prev_kv {
                simple_kv(&mut out, prev, hex);
            }
            out
        }
    }
}

/// How `get` prints in the simple format.
#[derive(Debug, Clone, Copy, Default)]
pub struct GetStyle {
    pub print_value_only: bool,
    pub count_only: bool,
    /// Keys and values as `\xNN` escapes.
    pub hex: bool,
}

pub fn get(resp: &pb::RangeResponse, format: Format, style: GetStyle) -> Vec<u8> {
    match format {
        Format::Json => (range_value(resp).to_string() + "\n").into_bytes(),
        Format::Table => kv_table(&resp.kvs, style.hex).into_bytes(),
        Format::Simple if style.count_only => format!("{}\n", resp.count).into_bytes(),
        Format::Simple => {
            let mut out = Vec::new();
            for kv in &resp.kvs {
                if style.print_value_only {
                    push_bytes(&mut out, &kv.value, style.hex);
                    out.push(b'\n');
                } else {
                    simple_kv(&mut out, kv, style.hex);
                }
            }
            out
        }
    }
}

pub fn del(resp: &pb::DeleteRangeResponse, format: Format, hex: bool) -> Vec<u8> {
    match format {
        Format::Json => (del_value(resp).to_string() + "\n").into_bytes(),
        Format::Simple | Format::Table => {
            let mut out = format!("{}\n", resp.deleted).into_bytes();
            for kv in &resp.prev_kvs {
                simple_kv(&mut out, kv, hex);
            }
            out
        }
    }
}

/// `member add`: etcdctl's first line, then the kvd command line that
/// starts the new member (`name` only labels it).
pub fn member_added(resp: &pb::MemberAddResponse, name: Option<&str>, format: Format) -> String {
    let cluster = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    let Some(member) = &resp.member else {
        return "the cluster did not say which member it added\n".into();
    };
    if format == Format::Json {
        let m = json!({
            "ID": member.id,
            "peerURLs": member.peer_ur_ls,
            "isLearner": member.is_learner,
        });
        return json!({"header": header_json(&resp.header), "member": m}).to_string() + "\n";
    }
    let strip = |u: &str| {
        u.trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string()
    };
    let initial: Vec<String> = resp
        .members
        .iter()
        .filter_map(|m| {
            m.peer_ur_ls
                .first()
                .map(|u| format!("{}={}", m.id, strip(u)))
        })
        .collect();
    let peer = member
        .peer_ur_ls
        .first()
        .map(|u| strip(u))
        .unwrap_or_default();
    let kind = if member.is_learner {
        " as a learner"
    } else {
        ""
    };
    let label = name.map(|n| format!(" ({n})")).unwrap_or_default();
    format!(
        "Member {id} added to cluster {cluster:x}{kind}\n\n\
         Start it{label} on an empty data dir with:\n\n\
         kvd --id {id} --data-dir DATA_DIR --listen-peer {peer} \\\n  \
         --listen-client HOST:CLIENT_PORT --listen-metrics HOST:METRICS_PORT \\\n  \
         --initial-cluster {initial} \\\n  \
         --initial-cluster-state existing\n",
        id = member.id,
        initial = initial.join(","),
    )
}

/// `member remove|update|promote`: etcdctl's one line.
pub fn member_changed(
    what: &str,
    id: u64,
    header: Option<&pb::ResponseHeader>,
    format: Format,
) -> String {
    if format == Format::Json {
        return json!({"header": header_json(&header.cloned())}).to_string() + "\n";
    }
    let cluster = header.map_or(0, |h| h.cluster_id);
    format!("Member {id} {what} cluster {cluster:x}\n")
}

pub fn member_list(resp: &pb::MemberListResponse, format: Format) -> String {
    let started = |m: &pb::Member| {
        if m.name.is_empty() {
            "unstarted"
        } else {
            "started"
        }
    };
    match format {
        Format::Json => {
            let members: Vec<Value> = resp
                .members
                .iter()
                .map(|m| {
                    let mut o = Map::new();
                    put_nonzero(&mut o, "ID", json!(m.id));
                    put_nonzero(&mut o, "name", json!(m.name));
                    put_nonzero(&mut o, "peerURLs", json!(m.peer_ur_ls));
                    put_nonzero(&mut o, "clientURLs", json!(m.client_ur_ls));
                    put_nonzero(&mut o, "isLearner", json!(m.is_learner));
                    Value::Object(o)
                })
                .collect();
            json!({"header": header_json(&resp.header), "members": members}).to_string() + "\n"
        }
        Format::Simple => resp
            .members
            .iter()
            .map(|m| {
                format!(
                    "{}, {}, {}, {}, {}, {}\n",
                    m.id,
                    started(m),
                    m.name,
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner
                )
            })
            .collect(),
        Format::Table => {
            let rows: Vec<Vec<String>> = resp
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        started(m).to_string(),
                        m.name.clone(),
                        m.peer_ur_ls.join(","),
                        m.client_ur_ls.join(","),
                        m.is_learner.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "STATUS",
                    "NAME",
                    "PEER ADDRS",
                    "CLIENT ADDRS",
                    "IS LEARNER",
                ],
                &rows,
            )
        }
    }
}

/// Whether this endpoint's member is the leader, as etcdctl decides it.
pub fn is_leader(s: &pb::StatusResponse) -> bool {
    s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader)
}

pub fn endpoint_status(rows: &[EndpointStatus], format: Format) -> String {
    match format {
        Format::Json => {
            let list: Vec<Value> = rows
                .iter()
                .filter_map(|r| r.status.as_ref().ok().map(|s| (r, s)))
                .map(|(r, s)| {
                    let mut st = Map::new();
                    st.insert("header".into(), header_json(&s.header));
                    put_nonzero(&mut st, "version", json!(s.version));
                    put_nonzero(&mut st, "dbSize", json!(s.db_size));
                    put_nonzero(&mut st, "leader", json!(s.leader));
                    put_nonzero(&mut st, "raftIndex", json!(s.raft_index));
                    put_nonzero(&mut st, "raftTerm", json!(s.raft_term));
                    put_nonzero(&mut st, "raftAppliedIndex", json!(s.raft_applied_index));
                    put_nonzero(&mut st, "errors", json!(s.errors));
                    put_nonzero(&mut st, "dbSizeInUse", json!(s.db_size_in_use));
                    json!({"Endpoint": r.endpoint, "Status": st})
                })
                .collect();
            Value::Array(list).to_string() + "\n"
        }
        Format::Simple => rows
            .iter()
            .filter_map(|r| r.status.as_ref().ok().map(|s| (r, s)))
            .map(|(r, s)| {
                format!(
                    "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}\n",
                    r.endpoint,
                    member_id(s),
                    s.version,
                    human_bytes(s.db_size),
                    is_leader(s),
                    s.is_learner,
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    s.errors.join(", ")
                )
            })
            .collect(),
        Format::Table => {
            let data: Vec<Vec<String>> = rows
                .iter()
                .map(|r| match &r.status {
                    Ok(s) => vec![
                        r.endpoint.clone(),
                        member_id(s).to_string(),
                        is_leader(s).to_string(),
                        s.raft_term.to_string(),
                        s.raft_index.to_string(),
                        s.raft_applied_index.to_string(),
                        s.header.as_ref().map_or(0, |h| h.revision).to_string(),
                        human_bytes(s.db_size),
                        s.errors.join(", "),
                    ],
                    Err(e) => {
                        let mut row = vec![r.endpoint.clone()];
                        row.extend(std::iter::repeat_n("-".to_string(), 7));
                        row.push(e.clone());
                        row
                    }
                })
                .collect();
            table(
                &[
                    "ENDPOINT",
                    "ID",
                    "IS LEADER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "APPLIED INDEX",
                    "REVISION",
                    "DB SIZE",
                    "ERRORS",
                ],
                &data,
            )
        }
    }
}

fn member_id(s: &pb::StatusResponse) -> u64 {
    s.header.as_ref().map_or(0, |h| h.member_id)
}

/// Sizes as etcdctl prints them (decimal units: `20 kB`, `1.5 MB`).
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let n = n as f64;
    let exp = (n.log10() / 3.0).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let val = (n / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[exp])
    } else {
        format!("{val:.0} {}", UNITS[exp])
    }
}

/// How many terminal columns `s` takes (東京 takes four).
fn display_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// `s` padded with spaces to `width` columns: on the left (`right`) or
/// split around it.
fn pad(s: &str, width: usize, right: bool) -> String {
    let gap = width.saturating_sub(display_width(s));
    if right {
        format!("{}{s}", " ".repeat(gap))
    } else {
        format!("{}{s}{}", " ".repeat(gap / 2), " ".repeat(gap - gap / 2))
    }
}

/// An ASCII table: centered headers, right-aligned cells, columns as wide
/// as their widest cell on a terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| display_width(&r[i]))
                .chain([display_width(h)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        out.push_str(&format!("| {} ", pad(h, *w, false)));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!("| {} ", pad(cell, *w, true)));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 7,
            member_id: 2,
            revision: 5,
            raft_term: 3,
        })
    }

    fn kv(k: &str, v: &str) -> pb::KeyValue {
        pb::KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: 4,
            mod_revision: 4,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn get_like_etcdctl() {
        let resp = pb::RangeResponse {
            header: header(),
            kvs: vec![kv("foo", "bar")],
            more: false,
            count: 1,
        };
        let get = |resp: &pb::RangeResponse, format, style| {
            String::from_utf8(get(resp, format, style)).unwrap()
        };
        assert_eq!(
            get(&resp, Format::Simple, GetStyle::default()),
            "foo\nbar\n"
        );
        let style = GetStyle {
            print_value_only: true,
            ..Default::default()
        };
        assert_eq!(get(&resp, Format::Simple, style), "bar\n");
        // The exact JSON etcdctl prints for the same response.
        assert_eq!(
            get(&resp, Format::Json, GetStyle::default()),
            r#"{"header":{"cluster_id":7,"member_id":2,"revision":5,"raft_term":3},"kvs":[{"key":"Zm9v","create_revision":4,"mod_revision":4,"version":1,"value":"YmFy"}],"count":1}"#
                .to_string()
                + "\n"
        );
        let empty = pb::RangeResponse {
            header: header(),
            ..Default::default()
        };
        assert_eq!(get(&empty, Format::Simple, GetStyle::default()), "");
    }

    #[test]
    fn put_and_del_like_etcdctl() {
        let resp = pb::PutResponse {
            header: header(),
            prev_kv: Some(kv("foo", "old")),
        };
        assert_eq!(put(&resp, Format::Simple, false), b"OK\nfoo\nold\n");
        let resp = pb::DeleteRangeResponse {
            header: header(),
            deleted: 0,
            prev_kvs: vec![],
        };
        assert_eq!(del(&resp, Format::Simple, false), b"0\n");
        assert_eq!(
            del(&resp, Format::Json, false),
            b"{\"header\":{\"cluster_id\":7,\"member_id\":2,\"revision\":5,\"raft_term\":3}}\n"
        );
    }

    /// Keys and values are printed as the bytes they are, or with --hex as
    /// etcdctl's `\xNN` escapes.
    #[test]
    fn binary_keys_print_raw_or_hex() {
        let resp = pb::RangeResponse {
            header: header(),
            kvs: vec![pb::KeyValue {
                key: vec![0xff, b'k'],
                value: vec![0x00, 0xc3],
                ..Default::default()
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            get(&resp, Format::Simple, GetStyle::default()),
            b"\xffk\n\x00\xc3\n"
        );
        let hex = GetStyle {
            hex: true,
            ..Default::default()
        };
        assert_eq!(get(&resp, Format::Simple, hex), b"\\xff\\x6b\n\\x00\\xc3\n");
    }

    /// Wide characters take two columns each: the table still lines up.
    #[test]
    fn tables_align_by_display_width() {
        let t = table(
            &["KEY", "VALUE"],
            &[
                vec!["東京".into(), "x".into()],
                vec!["ab".into(), "yy".into()],
            ],
        );
        let widths: Vec<usize> = t.lines().map(display_width).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
        assert!(t.contains("| 東京 |"), "{t}");
        assert!(t.contains("|   ab |"), "{t}");
    }

    #[test]
    fn sizes_like_etcdctl() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(3_400_000), "3.4 MB");
    }

    #[test]
    fn status_table_shows_down_endpoints() {
        let up = pb::StatusResponse {
            header: header(),
            leader: 2,
            raft_term: 3,
            raft_index: 9,
            ..Default::default()
        };
        let rows = vec![
            EndpointStatus {
                endpoint: "a:1".into(),
                status: Ok(up),
            },
            EndpointStatus {
                endpoint: "b:2".into(),
                status: Err("unreachable".into()),
            },
        ];
        let t = endpoint_status(&rows, Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("ENDPOINT") && lines[1].contains("IS LEADER"));
        assert!(lines[3].contains("a:1") && lines[3].contains("true"));
        assert!(lines[4].contains("b:2") && lines[4].contains("unreachable"));
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }
}
