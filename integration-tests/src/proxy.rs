//! A TCP proxy that a test can freeze: every byte stops moving while the
//! connections stay open, as when a database or a server stalls (a long GC
//! pause, a saturated disk, a SIGSTOPped process, a partition that drops
//! packets without resetting anything). Thawed, the held bytes move on.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A proxy on `127.0.0.1:0` in front of one target address.
pub struct FreezableProxy {
    address: SocketAddr,
    frozen: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts forwarding every connection made to [`address`](Self::address)
    /// to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let (frozen, watching) = watch::channel(false);
        let accepting = tokio::spawn(async move {
            // Dropped with the accepting task, which ends every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let watching = watching.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, watching.clone()) => {}
                        () = pump(server_read, client_write, watching) => {}
                    }
                });
            }
        });
        FreezableProxy {
            address,
            frozen,
            accepting,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops moving bytes, in both directions, on every connection.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Moves bytes again, starting with those held while frozen.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies bytes from `from` to `to`, holding them while the proxy is frozen,
/// until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
