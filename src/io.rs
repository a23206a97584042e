//! Small I/O helpers shared by the wrappers around connections.

/// Writes the body of an `AsyncWrite` impl that forwards every call to the field `$field`, for
/// wrappers that only watch the read side (they implement `AsyncRead` themselves). tokio offers
/// no such delegation, and three wrappers need it.
macro_rules! forward_async_write {
    ($field:ident) => {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_flush(cx)
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_shutdown(cx)
        }
    };
    // The same, passing every write, flush or shutdown error through the method `$hook(&mut
    // self, io::Error, &mut Context) -> io::Error` first.
    ($field:ident, $hook:ident) => {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            match std::pin::Pin::new(&mut this.$field).poll_write(cx, buf) {
                std::task::Poll::Ready(Err(error)) => {
                    std::task::Poll::Ready(Err(this.$hook(error, cx)))
                }
                other => other,
            }
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = self.get_mut();
            match std::pin::Pin::new(&mut this.$field).poll_flush(cx) {
                std::task::Poll::Ready(Err(error)) => {
                    std::task::Poll::Ready(Err(this.$hook(error, cx)))
                }
                other => other,
            }
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = self.get_mut();
            match std::pin::Pin::new(&mut this.$field).poll_shutdown(cx) {
                std::task::Poll::Ready(Err(error)) => {
                    std::task::Poll::Ready(Err(this.$hook(error, cx)))
                }
                other => other,
            }
        }
    };
}

pub(crate) use forward_async_write;
