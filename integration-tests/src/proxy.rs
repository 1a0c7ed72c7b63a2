//! A TCP proxy that a test can freeze or cut. Frozen, every byte stops
//! moving while the connections stay open, as when a database or a server
//! stalls (a long pause, a saturated disk, a SIGSTOPped process, a
//! partition that drops packets); thawed, the held bytes move on. Cut, every
//! connection is closed and new ones are closed at once, as when a database
//! restarts; restored, connections work again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flowing,
    Frozen,
    Cut,
}

/// A proxy on `127.0.0.1:0` in front of one target address.
pub struct FaultProxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding every connection made to [`address`](Self::address)
    /// to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let (mode, watching) = watch::channel(Mode::Flowing);
        let accepting = tokio::spawn(async move {
            // Dropped with the accepting task, which ends every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Mode::Cut {
                    continue;
                }
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
        FaultProxy {
            address,
            mode,
            accepting,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops moving bytes, in both directions, on every connection.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Closes every connection, and each new one as it arrives.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Moves bytes again (after [`freeze`](Self::freeze), starting with
    /// those held), or accepts connections again (after [`cut`](Self::cut)).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Flowing);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies bytes from `from` to `to`, holding them while the proxy is frozen,
/// until either side closes or the proxy is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|mode| *mode == Mode::Cut) => return,
        };
        let read = match read {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let flowing = mode
            .wait_for(|mode| *mode != Mode::Frozen)
            .await
            .map(|mode| *mode == Mode::Flowing);
        if !matches!(flowing, Ok(true)) || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
