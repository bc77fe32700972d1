//! `kvctl endpoint health`: a linearizable read of key `health` on each
//! endpoint, as etcdctl does it, with how long it took.

use std::time::{Duration, Instant};

use serde_json::json;

use super::args::Format;
use super::output::table;
use crate::client::{Client, ClientError, Dial};
use crate::pb;

/// One endpoint's health.
pub struct Health {
    pub endpoint: String,
    pub result: Result<Duration, String>,
}

/// Checks one endpoint.
pub async fn check(endpoint: &str, dial: &Dial) -> Health {
    let started = Instant::now();
    let read = async {
        let mut client = Client::new(vec![endpoint.to_string()], dial)?;
        let req = pb::RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        };
        client.range(req).await
    };
    let result = match read.await {
        // etcd counts "permission denied" as healthy: the member answered.
        Ok(_) => Ok(started.elapsed()),
        Err(ClientError::Status(s)) if s.code() == tonic::Code::PermissionDenied => {
            Ok(started.elapsed())
        }
        Err(e) => Err(e.to_string()),
    };
    Health {
        endpoint: endpoint.to_string(),
        result,
    }
}

/// `Duration` the way Go prints it (`2.345ms`).
fn took(d: &Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{:.3}ms", d.as_secs_f64() * 1000.0)
    }
}

pub fn render(results: &[Health], format: Format) -> String {
    match format {
        Format::Simple => results
            .iter()
            .map(|h| match &h.result {
                Ok(d) => format!(
                    "{} is healthy: successfully committed proposal: took = {}\n",
                    h.endpoint,
                    took(d)
                ),
                Err(e) => format!(
                    "{} is unhealthy: failed to commit proposal: {e}\n",
                    h.endpoint
                ),
            })
            .collect(),
        Format::Json => {
            let list: Vec<_> = results
                .iter()
                .map(|h| match &h.result {
                    Ok(d) => json!({"endpoint": h.endpoint, "health": true, "took": took(d)}),
                    Err(e) => json!({"endpoint": h.endpoint, "health": false, "error": e}),
                })
                .collect();
            serde_json::Value::Array(list).to_string() + "\n"
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|h| match &h.result {
                    Ok(d) => vec![h.endpoint.clone(), "true".into(), took(d), String::new()],
                    Err(e) => vec![h.endpoint.clone(), "false".into(), "-".into(), e.clone()],
                })
                .collect();
            table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_etcdctl() {
        let results = vec![
            Health {
                endpoint: "a:1".into(),
                result: Ok(Duration::from_micros(2345)),
            },
            Health {
                endpoint: "b:2".into(),
                result: Err("unreachable: refused".into()),
            },
        ];
        assert_eq!(
            render(&results, Format::Simple),
            "a:1 is healthy: successfully committed proposal: took = 2.345ms\n\
             b:2 is unhealthy: failed to commit proposal: unreachable: refused\n"
        );
        let v: serde_json::Value = serde_json::from_str(&render(&results, Format::Json)).unwrap();
        assert_eq!(v[0]["health"], true);
        assert_eq!(v[1]["health"], false);
    }
}
