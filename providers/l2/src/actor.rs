//! The one handshake of the L2 actors (announcer, gossip membership, speaker): a command
//! carrying a reply channel, sent to the task that owns the sockets, and a wait for the
//! task to confirm, so the caller knows the effect took place (the last answer sent, the
//! goodbye gossiped) before it moves on.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Sends the command `make` builds around a reply channel and waits for the reply; a task
/// that is gone already has nothing left to do.
pub(crate) async fn ask<C>(
    cmd: &mpsc::UnboundedSender<C>,
    make: impl FnOnce(oneshot::Sender<()>) -> C,
) {
    let (tx, rx) = oneshot::channel();
    if cmd.send(make(tx)).is_ok() {
        let _ = rx.await;
    }
}

/// [`ask`] for the command that ends the task, then waits for the task itself.
pub(crate) async fn stop<C>(
    cmd: &mpsc::UnboundedSender<C>,
    task: JoinHandle<()>,
    make: impl FnOnce(oneshot::Sender<()>) -> C,
) {
    ask(cmd, make).await;
    let _ = task.await;
}
