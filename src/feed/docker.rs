//! Docker feed: a bollard thread on its own current-thread tokio runtime (to be written).
//!
//! Interface (fixed): `spawn(host: Option<String>, tx: Sender<FeedEvent>, waker: Arc<mio::Waker>)
//! -> io::Result<DockerHandle>`, and `DockerHandle::request(&self, DockerRequest)`.
