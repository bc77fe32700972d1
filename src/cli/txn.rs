//! `kvctl txn` and `put --if-*`: etcdctl's transaction format in, etcdctl's
//! output out.
//!
//! The input is three sections, each ended by a blank line: compares such
//! as `mod("key") > "0"` or `value("k") = "v"`, then the requests to run if
//! all hold (`put k v`, `get k --prefix`, `del k`), then those to run if
//! not.

use std::io::{BufRead, Write};

use clap::Parser;

use super::args::{self, Command, Format};
use super::output::{self, GetStyle};
use crate::pb;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};

/// Splits a line into words the way a shell would: whitespace separates,
/// quotes group, backslash escapes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => word.extend(chars.next()),
                        Some(other) => word.push(other),
                        None => return Err(format!("unterminated quote in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses `target("key") op "value"`.
pub fn parse_compare(line: &str) -> Result<pb::Compare, String> {
    let bad = || format!("bad compare {line:?}: expected e.g. mod(\"key\") > \"0\"");
    let (target, rest) = line.split_once('(').ok_or_else(bad)?;
    let (key, rest) = rest.split_once(')').ok_or_else(bad)?;
    let key = split_words(key)?.pop().ok_or_else(bad)?;
    let mut words = split_words(rest.trim())?.into_iter();
    let (op, value) = (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => {
            return Err(format!(
                "bad compare operator {op:?} in {line:?}: use =, !=, > or <"
            ))
        }
    };
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("{value:?} is not a number in {line:?}"))
    };
    let (target, union) = match target.trim() {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.clone().into_bytes()),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(i64::from_str_radix(&value, 16).map_err(|_| bad())?),
        ),
        other => {
            return Err(format!(
                "bad compare target {other:?}: use version, create, mod, value or lease"
            ))
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

/// One request line parsed with kvctl's own flags.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct OpLine {
    #[command(subcommand)]
    op: Command,
}

/// Parses `put k v`, `get k [flags]` or `del k [flags]`.
pub fn parse_op(line: &str) -> Result<pb::RequestOp, String> {
    use pb::request_op::Request;
    let words = split_words(line)?;
    let parsed = OpLine::try_parse_from(&words).map_err(|e| {
        format!(
            "bad request {line:?}: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    let request = match parsed.op {
        Command::Put(a) => {
            let value = a
                .value
                .clone()
                .ok_or_else(|| format!("bad request {line:?}: put needs a value"))?;
            Request::RequestPut(args::put_request(&a, value.into_bytes()))
        }
        Command::Get(a) => Request::RequestRange(args::get_request(&a)),
        Command::Del(a) => Request::RequestDeleteRange(args::del_request(&a)),
        _ => {
            return Err(format!(
                "bad request {line:?}: only put, get and del go in a txn"
            ))
        }
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// Reads a transaction: with `interactive`, prompting on `prompt` before
/// each section.
pub fn read_txn(
    input: &mut impl BufRead,
    prompt: Option<&mut dyn Write>,
) -> Result<pb::TxnRequest, String> {
    let mut prompt = prompt;
    let mut section = |title: &str| -> Result<Vec<String>, String> {
        if let Some(p) = prompt.as_mut() {
            let _ = writeln!(p, "{title}");
            let _ = p.flush();
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if input.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Ok(lines);
            }
            let line = line.trim();
            if line.is_empty() {
                return Ok(lines);
            }
            lines.push(line.to_string());
        }
    };
    let compare = section("compares:")?
        .iter()
        .map(|l| parse_compare(l))
        .collect::<Result<_, _>>()?;
    let success = section("success requests (get, put, del):")?
        .iter()
        .map(|l| parse_op(l))
        .collect::<Result<_, _>>()?;
    let failure = section("failure requests (get, put, del):")?
        .iter()
        .map(|l| parse_op(l))
        .collect::<Result<_, _>>()?;
    Ok(pb::TxnRequest {
        compare,
        success,
        failure,
    })
}

/// etcdctl's txn output: SUCCESS or FAILURE, then each response after a
/// blank line (or the response as JSON).
pub fn render(resp: &pb::TxnResponse, format: Format, hex: bool) -> Vec<u8> {
    use pb::response_op::Response;
    if format == Format::Json {
        return (output::txn_json(resp) + "\n").into_bytes();
    }
    let mut out = if resp.succeeded {
        b"SUCCESS\n".to_vec()
    } else {
        b"FAILURE\n".to_vec()
    };
    let get = GetStyle {
        hex,
        ..GetStyle::default()
    };
    for r in &resp.responses {
        out.push(b'\n');
        match &r.response {
            Some(Response::ResponsePut(p)) => out.extend(output::put(p, Format::Simple, hex)),
            Some(Response::ResponseRange(g)) => out.extend(output::get(g, Format::Simple, get)),
            Some(Response::ResponseDeleteRange(d)) => {
                out.extend(output::del(d, Format::Simple, hex))
            }
            Some(Response::ResponseTxn(t)) => out.extend(render(t, Format::Simple, hex)),
            None => {}
        }
    }
    out
}

/// Why a `put --if-*` did not happen, from the failure branch's read.
pub fn precondition_failed(key: &str, resp: &pb::TxnResponse) -> String {
    use pb::response_op::Response;
    let current = resp.responses.iter().find_map(|r| match &r.response {
        Some(Response::ResponseRange(g)) => Some(g.kvs.first().cloned()),
        _ => None,
    });
    match current.flatten() {
        Some(kv) => format!(
            "precondition failed: {key} is at version {} (mod revision {}) with value {:?}",
            kv.version,
            kv.mod_revision,
            String::from_utf8_lossy(&kv.value)
        ),
        None => format!("precondition failed: {key} does not exist"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_a_shell() {
        assert_eq!(
            split_words(r#"put k "a b" c\ d 'e"f'"#).unwrap(),
            vec!["put", "k", "a b", "c d", "e\"f"]
        );
        assert!(split_words("put \"k").is_err());
        assert_eq!(split_words("put k \"\"").unwrap(), vec!["put", "k", ""]);
    }

    #[test]
    fn compares_like_etcdctl() {
        let c = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(
            (c.key.as_slice(), c.target, c.result),
            (
                &b"key1"[..],
                CompareTarget::Mod as i32,
                CompareResult::Greater as i32
            )
        );
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(0)));
        let c = parse_compare(r#"value("k") = "two words""#).unwrap();
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Value(b"two words".to_vec()))
        );
        let c = parse_compare(r#"create("k") = "0""#).unwrap();
        assert_eq!(c.target, CompareTarget::Create as i32);
        for bad in [
            r#"mod("k") >> "0""#,
            r#"size("k") = "1""#,
            r#"version("k") = "x""#,
            "nonsense",
        ] {
            assert!(parse_compare(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_three_sections() {
        let text = "mod(\"k\") > \"0\"\n\nput k v\nget k --prefix\n\ndel k\n\n";
        let mut prompts = Vec::new();
        let t = read_txn(&mut text.as_bytes(), Some(&mut prompts)).unwrap();
        assert_eq!(
            (t.compare.len(), t.success.len(), t.failure.len()),
            (1, 2, 1)
        );
        assert_eq!(
            String::from_utf8(prompts).unwrap(),
            "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
        );
        assert!(read_txn(&mut "\nwatch k\n\n\n".as_bytes(), None).is_err());
        assert!(read_txn(&mut "\nput k\n\n\n".as_bytes(), None).is_err());
    }
}
