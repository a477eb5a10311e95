//! Causal pooling for the U-Net (SaShiMi's `DownPool`/`UpPool`, without the activation), and
//! the recurrent state of one pooling level.
//!
//! Both reshape position-major: `p` consecutive vectors of width `H` are one vector of width
//! `p·H` whose element `j·H + h` is channel `h` of position `j` of the group.

use tch::{nn, Tensor};

use super::init;

/// Down-pool by `p`: `p` consecutive inputs (width `h`) → one linear map → width `h_inner`.
/// Parameters `linear.weight` (h_inner, p·h) and `linear.bias` (h_inner).
#[derive(Debug)]
pub struct DownPool {
    pub weight: Tensor,
    pub bias: Tensor,
    pub pool: i64,
}

/// Up-pool by `p`: one inner vector (width `h_inner`) → linear → `p` outer vectors (width `h`).
/// Parameters `linear.weight` (p·h, h_inner) and `linear.bias` (p·h). The one-step shift that
/// makes it causal is applied by the caller ([`super::unet`]), which owns the timing.
#[derive(Debug)]
pub struct UpPool {
    pub weight: Tensor,
    pub bias: Tensor,
    pub pool: i64,
}

impl DownPool {
    /// Parameters under `p` (e.g. `unet.down.0`), PyTorch's default `nn.Linear` init.
    pub fn new(p: &nn::Path, h: i64, h_inner: i64, pool: i64) -> DownPool {
        let dev = p.device();
        let fan_in = pool * h;
        DownPool {
            weight: init::param(
                p,
                "linear.weight",
                &init::torch_default(&[h_inner, fan_in], fan_in, dev),
            ),
            bias: init::param(
                p,
                "linear.bias",
                &init::torch_default(&[h_inner], fan_in, dev),
            ),
            pool,
        }
    }

    /// Pools complete groups.
    ///
    /// # Shapes
    /// `x`: (B, n·p, h) → (B, n, h_inner).
    ///
    /// # Panics
    /// If the length is not a multiple of `p` (callers cut to whole groups first).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, len, h) = x.size3().expect("DownPool input is (B, L, H)");
        assert_eq!(
            len % self.pool,
            0,
            "DownPool length {len} vs pool {}",
            self.pool
        );
        x.reshape([b, len / self.pool, self.pool * h]) // (B, n, p·h)
            .matmul(&self.weight.tr())
            + &self.bias // (B, n, h_inner)
    }
}

impl UpPool {
    /// Parameters under `p` (e.g. `unet.up.0`), PyTorch's default `nn.Linear` init.
    pub fn new(p: &nn::Path, h: i64, h_inner: i64, pool: i64) -> UpPool {
        let dev = p.device();
        UpPool {
            weight: init::param(
                p,
                "linear.weight",
                &init::torch_default(&[pool * h, h_inner], h_inner, dev),
            ),
            bias: init::param(
                p,
                "linear.bias",
                &init::torch_default(&[pool * h], h_inner, dev),
            ),
            pool,
        }
    }

    /// Expands every inner step into `p` outer positions (not shifted).
    ///
    /// # Shapes
    /// `z`: (B, n, h_inner) → (B, n·p, h).
    pub fn forward(&self, z: &Tensor) -> Tensor {
        let (b, n, _) = z.size3().expect("UpPool input is (B, n, H')");
        let y = z.matmul(&self.weight.tr()) + &self.bias; // (B, n, p·h)
        y.reshape([b, n * self.pool, -1]) // (B, n·p, h)
    }
}

/// The recurrent state of one pooling level (one outer stage and the inner stage it feeds).
///
/// # Shapes
/// `buffer`: (B, c, h) with 0 ≤ c < p: the inputs of the current, incomplete group (oldest
/// first); `c` is where the level stands inside its group. `pending`: (B, p, h): the up-pooled
/// outputs for the current group's positions, computed from the previous inner step (zeros
/// before the first inner step: the one-step shift).
#[derive(Debug)]
pub struct PoolState {
    pub buffer: Tensor,
    pub pending: Tensor,
}

impl PoolState {
    /// Position inside the current group (0 ≤ c < p).
    pub fn filled(&self) -> i64 {
        self.buffer.size()[1]
    }
}
