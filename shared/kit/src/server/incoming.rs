//! The connections a service accepts: at most [`super::MAX_CONNECTIONS`] at a
//! time (issue 11 item 3). A connection past the limit waits in the
//! listener's backlog until one closes, so a flood of clients queues instead
//! of taking file descriptors, memory and tasks from the ones already served.
//!
//! Each connection also ends when the drain deadline passes
//! ([`crate::shutdown::Drain`]): its reads and writes fail from then on, so
//! a stream that would never finish by itself (a Health/Watch, a client
//! that keeps a RecordSales stream open) cannot hold the process past it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection holding one of the limit's permits until it
/// closes (is dropped), cut off when `cut` is cancelled.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limited").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl Limited {
    /// An error once the connection has been cut off; polling registers
    /// the waker, so a read or write waiting on the socket wakes up for it.
    fn check_cut(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the server's drain deadline has passed"))
            }
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check_cut(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check_cut(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_cut(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_cut(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts from `listener` while fewer than `limit` accepted connections are
/// open; TCP_NODELAY on each (small unary replies are not held back). Every
/// connection is cut off when `cut` is cancelled.
pub fn limited(listener: TcpListener, limit: usize, cut: CancellationToken) -> impl Stream<Item = io::Result<Limited>> {
    let permits = Arc::new(Semaphore::new(limit));
    futures::stream::unfold((listener, permits, cut), |(listener, permits, cut)| async move {
        // The semaphore is never closed, so acquiring only waits.
        let permit = permits.clone().acquire_owned().await.ok()?;
        let accepted = listener.accept().await.and_then(|(stream, _)| {
            stream.set_nodelay(true)?;
            Ok(Limited { stream, _permit: permit, cut: Box::pin(cut.clone().cancelled_owned()) })
        });
        Some((accepted, (listener, permits, cut)))
    })
}
