//! The plain-TCP listener's connections, set up as the TLS listener's are
//! (see [`crate::transport::tls`]).

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// Turns off Nagle's algorithm on an accepted connection. tonic does this
/// for listeners it binds itself but not for connections handed to it, and
/// with Nagle on, a small HTTP/2 frame written right behind another waits
/// for the peer's delayed ACK: 40 ms on Linux, which W2 showed as
/// enqueue-to-start outliers of 38–40 ms.
pub fn send_at_once(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "cannot turn off Nagle's algorithm; small replies may wait for ACKs");
    }
}

/// The plain-TCP connections to serve, each set to [`send_at_once`].
pub fn plain_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| accepted.inspect(send_at_once))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn served_connections_send_small_frames_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(plain_incoming(listener));
        let _client = TcpStream::connect(address).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
        // Without it, an accepted socket has Nagle on: the check can fail.
        let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _other = TcpStream::connect(raw.local_addr().unwrap()).await.unwrap();
        assert!(!raw.accept().await.unwrap().0.nodelay().unwrap());
    }
}
