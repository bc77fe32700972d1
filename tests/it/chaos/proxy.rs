//! A fault-injecting TCP proxy for one direction of one peer link: node A
//! dials node B through it (kvd's test-only `--peer-dial-override`). When the
//! link is cut, open connections are dropped and new ones are accepted but
//! black-holed (nothing is forwarded, nothing answered), as a network that
//! loses packets would; healing the link closes those so peers reconnect.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxied link. Dropping it stops the proxy.
pub struct Link {
    pub listen: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts proxying from a fresh loopback port to `target`.
    pub async fn start(target: String) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let listen = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, target.clone(), cut_rx.clone()));
            }
        });
        Link { listen, cut, task }
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, target: String, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        // Black hole: swallow whatever arrives until the link heals.
        let mut sink = [0u8; 4096];
        loop {
            tokio::select! {
                read = conn.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
                changed = cut.changed() => if changed.is_err() || !*cut.borrow() { return },
            }
        }
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}
