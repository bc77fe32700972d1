//! `kvctl watch`: one watch on one endpoint, printed like etcdctl's, until
//! Ctrl-C or until the server cancels it.

use std::io::Write;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::args::{self, Format, WatchArgs};
use super::output;
use crate::client::Client;
use crate::pb;
use crate::pb::watch_client::WatchClient;

/// How a watch ended.
pub enum Ended {
    /// Ctrl-C, or the server closed the stream.
    Stopped,
    /// The server canceled the watch (compaction); the message says why.
    Canceled(String),
}

pub async fn run(
    client: &mut Client,
    a: &WatchArgs,
    format: Format,
    hex: bool,
) -> anyhow::Result<Ended> {
    let channel = client.any_channel().await?;
    let (tx, rx) = mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            args::watch_request(a),
        )),
    };
    tx.send(create).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    // As etcdctl does: refuse to watch a member cut off from the leader.
    request.metadata_mut().insert("hasleader", "true".parse()?);
    let mut responses = WatchClient::new(channel).watch(request).await?.into_inner();
    loop {
        let message = tokio::select! {
            m = responses.message() => m?,
            _ = tokio::signal::ctrl_c() => return Ok(Ended::Stopped),
        };
        let Some(resp) = message else {
            return Ok(Ended::Stopped);
        };
        if resp.canceled {
            let reason = if resp.compact_revision > 0 {
                format!(
                    "required revision {} has been compacted",
                    resp.compact_revision
                )
            } else {
                resp.cancel_reason.clone()
            };
            return Ok(Ended::Canceled(reason));
        }
        let text = match format {
            Format::Json => (output::watch_json(&resp) + "\n").into_bytes(),
            _ => output::watch_events(&resp, hex),
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&text)?;
        stdout.flush()?;
    }
}
