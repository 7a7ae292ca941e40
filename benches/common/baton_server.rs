//! baton in-process for the HTTP benches (`load`, `soak`): on its own thread and actix System,
//! as `tests/api/helpers.rs` starts it. Included with `#[path = "common/baton_server.rs"] mod`.

use std::thread::JoinHandle;

use anyhow::Context as _;
use baton::{Application, Settings};
use baton_actors::store::Store;

/// A running baton with its admin key and a handle to its store.
#[derive(Debug)]
pub(crate) struct BatonServer {
    pub(crate) address: String,
    pub(crate) admin_key: String,
    pub(crate) store: Store,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl BatonServer {
    pub(crate) fn start(settings: Settings) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let app = match Application::build(settings).await {
                    Ok(app) => app,
                    Err(error) => return drop(ready_tx.send(Err(error))),
                };
                let _ = ready_tx.send(Ok((app.port(), app.bootstrap_key().map(str::to_string), app.store())));
                if let Err(error) = app.run_until(async { drop(shutdown_rx.await) }).await {
                    eprintln!("baton stopped with an error: {error:#}");
                }
            });
        });
        let (port, key, store) = ready_rx.recv().context("baton thread died")??;
        Ok(Self {
            address: format!("http://127.0.0.1:{port}"),
            admin_key: key.context("a fresh data dir yields an admin key")?,
            store,
            shutdown,
            thread,
        })
    }

    /// Stops baton gracefully and waits for its thread; the data directory is free afterwards.
    pub(crate) fn stop(self) {
        let Self { store, shutdown, thread, .. } = self;
        drop(store);
        let _ = shutdown.send(());
        let _ = thread.join();
    }
}

/// Runs the actix-web server that `build` makes from `listener` on its own thread and actix
/// System (the bare handler of `load`, the webhook receiver of `soak`); returns once it serves.
/// `what` names it in errors.
pub(crate) fn serve_on_own_thread(
    what: &'static str,
    listener: std::net::TcpListener,
    build: impl FnOnce(std::net::TcpListener) -> std::io::Result<actix_web::dev::Server> + Send + 'static,
) -> anyhow::Result<(actix_web::dev::ServerHandle, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            match build(listener) {
                Ok(server) => {
                    let _ = ready_tx.send(Ok(server.handle()));
                    if let Err(error) = server.await {
                        eprintln!("{what} stopped with an error: {error}");
                    }
                }
                Err(error) => drop(ready_tx.send(Err(error))),
            }
        });
    });
    let handle = ready_rx.recv().with_context(|| format!("{what} thread died"))??;
    Ok((handle, thread))
}
