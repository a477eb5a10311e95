//! Graceful stop of a training run on SIGINT (Ctrl-C) or SIGTERM.
//!
//! After [`install`], a signal that arrives before [`arm`] ends the process at once (nothing has
//! been written yet). Once armed, the first signal only sets [`stop_flag`]: the training loop
//! finishes its current step, writes a checkpoint and returns; a second signal ends the process
//! at once (the last complete checkpoint stays, as after a kill). The exit status is 128 + the
//! signal number (130 for SIGINT, 143 for SIGTERM), see [`exit_code`].
//!
//! The handler only touches atomics and calls `write(2)` and `_exit(2)`, which are
//! async-signal-safe. Unix only, like the rest of the binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::{Error, Result};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

const FIRST: &str = "\ninterrupt: finishing the current step and writing a checkpoint \
                     (interrupt again to stop at once)\n";
const SECOND: &str =
    "\ninterrupt: stopped at once; the last complete checkpoint is kept (resume with --resume)\n";
const EARLY: &str = "\ninterrupt: stopped before training started; nothing was written\n";

/// Installs the SIGINT and SIGTERM handlers (once per process; later calls do nothing).
///
/// # Errors
/// [`Error::Io`] when the operating system refuses a handler.
pub fn install() -> Result<()> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid value to fill in; `on_signal` is async-signal-safe
        // (atomics, write, _exit) and has the `sa_handler` signature.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(Error::Io {
                path: PathBuf::from(format!("signal {sig} handler")),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// From now on the first signal requests a graceful stop instead of ending the process.
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// Set by the first signal after [`arm`]; the training loop polls it after each step.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

/// The exit status for a run stopped by a signal: 128 + its number (130 for SIGINT).
pub fn exit_code() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 128 + libc::SIGINT,
        sig => 128 + sig,
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if ARMED.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
        SIGNAL.store(sig, Ordering::SeqCst);
        say(FIRST);
        return;
    }
    say(if ARMED.load(Ordering::SeqCst) {
        SECOND
    } else {
        EARLY
    });
    // SAFETY: _exit is async-signal-safe; checkpoints are written atomically, so ending here
    // leaves only complete ones.
    unsafe { libc::_exit(128 + sig) }
}

/// Writes `msg` to stderr from a signal handler (no allocation, no lock).
fn say(msg: &str) {
    // SAFETY: write(2) on a valid buffer of `msg.len()` bytes; the result is deliberately ignored.
    let _ = unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}
