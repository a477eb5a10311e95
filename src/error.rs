//! The library's error type: one enum whose variants carry the context a user needs.

use std::path::PathBuf;

/// Every fallible library function returns this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A C++/CUDA kernel in `csrc/` reported an error (message from the C++ side).
    #[error("kernel error in {op}: {message}")]
    Kernel { op: &'static str, message: String },

    /// A tensor argument has the wrong shape.
    #[error("{op}: argument `{arg}` must have shape {expected}, got {got:?}")]
    Shape {
        op: &'static str,
        arg: &'static str,
        expected: String,
        got: Vec<i64>,
    },

    /// A tensor argument has the wrong dtype.
    #[error("{op}: argument `{arg}` must be {expected}, got {got:?}")]
    DType {
        op: &'static str,
        arg: &'static str,
        expected: &'static str,
        got: tch::Kind,
    },

    /// Tensor arguments live on different devices.
    #[error("{op}: argument `{arg}` is on {got:?} but `{reference}` is on {expected:?}")]
    Device {
        op: &'static str,
        arg: &'static str,
        reference: &'static str,
        expected: tch::Device,
        got: tch::Device,
    },

    /// A model configuration that is malformed or asks for something wavemamba cannot run.
    #[error("config: {reason}")]
    Config { reason: String },

    /// A checkpoint whose tensors do not match the model (lists every problem by key).
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// A dataset file or pack that cannot be used.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },

    /// An audio file that cannot be decoded or written (unreadable, truncated, empty, not audio,
    /// or an unsupported encoding); `reason` says which.
    #[error("{path}: {reason}")]
    Audio { path: PathBuf, reason: String },

    /// Training cannot go on (non-finite loss or gradients, …).
    #[error("training stopped at step {step}: {reason}")]
    Training { step: u64, reason: String },

    /// A parameter outside its valid range.
    #[error("invalid value for {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },

    /// An audio device (cpal) that cannot be found, opened or kept running; `device` names it
    /// (or the host when no device was chosen yet).
    #[error("audio device {device}: {reason}")]
    AudioDevice { device: String, reason: String },

    /// A request that does not fit where it has to go: its buffers in memory, its output on disk
    /// or in a WAV file; `what` names the options asking for it, `reason` the sizes.
    #[error("{what}: {reason}")]
    TooLarge { what: String, reason: String },

    /// No sound device of one direction can be opened (no sound card and no sound server);
    /// `hint` says what to do instead.
    #[error("no audio {direction} device available ({reason}); {hint}")]
    NoAudioDevice {
        direction: &'static str,
        reason: String,
        hint: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Shorthand for `std::result::Result<T, wavemamba::Error>`.
pub type Result<T> = std::result::Result<T, Error>;
