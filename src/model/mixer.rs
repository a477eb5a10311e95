//! `Mixer` = the official `mamba_ssm.modules.mamba_simple.Mamba` (Mamba-1 selective SSM block).

use tch::{nn, Kind, Tensor};

use super::init;
use super::state::LayerState;
use crate::config::MambaConfig;
use crate::ops::{selective_scan, ScanInputs};
use crate::Result;

/// Parameters with the official names (`mixer.in_proj.weight`, `mixer.A_log`, …).
#[derive(Debug)]
pub struct Mixer {
    /// (2·d_inner, d_model)
    pub in_proj: Tensor,
    /// (d_inner, 1, d_conv) and (d_inner)
    pub conv1d_weight: Tensor,
    pub conv1d_bias: Tensor,
    /// (dt_rank + 2·d_state, d_inner)
    pub x_proj: Tensor,
    /// (d_inner, dt_rank) and (d_inner)
    pub dt_proj_weight: Tensor,
    pub dt_proj_bias: Tensor,
    /// (d_inner, d_state); A = −exp(A_log)
    pub a_log: Tensor,
    /// (d_inner)
    pub d: Tensor,
    /// (d_model, d_inner)
    pub out_proj: Tensor,
    pub d_inner: i64,
    pub d_state: i64,
    pub d_conv: i64,
    pub dt_rank: i64,
}

impl Mixer {
    /// Creates the parameters under `p` (e.g. `backbone.layers.3.mixer`), initialised as upstream
    /// (`out_proj` rescaled by 1/√n_layer as `_init_weights` does with one residual per layer).
    pub fn new(p: &nn::Path, c: &MambaConfig) -> Mixer {
        let dev = p.device();
        let (dm, di, n, k, r) = (
            c.d_model,
            c.d_inner(),
            c.ssm_cfg.d_state,
            c.ssm_cfg.d_conv,
            c.dt_rank(),
        );
        let s = &c.ssm_cfg;
        let dt_std = (r as f64).powf(-0.5) * s.dt_scale;
        let dt_w = if s.dt_init == "constant" {
            Tensor::full([di, r], dt_std, (Kind::Float, dev))
        } else {
            Tensor::empty([di, r], (Kind::Float, dev)).uniform_(-dt_std, dt_std)
        };
        let out = init::torch_default(&[dm, di], di, dev) / (c.n_layer as f64).sqrt();
        Mixer {
            in_proj: init::param(
                p,
                "in_proj.weight",
                &init::torch_default(&[2 * di, dm], dm, dev),
            ),
            conv1d_weight: init::param(
                p,
                "conv1d.weight",
                &init::torch_default(&[di, 1, k], k, dev),
            ),
            conv1d_bias: init::param(p, "conv1d.bias", &init::torch_default(&[di], k, dev)),
            x_proj: init::param(
                p,
                "x_proj.weight",
                &init::torch_default(&[r + 2 * n, di], di, dev),
            ),
            dt_proj_weight: init::param(p, "dt_proj.weight", &dt_w),
            dt_proj_bias: init::param(
                p,
                "dt_proj.bias",
                &init::dt_bias(di, s.dt_min, s.dt_max, s.dt_init_floor, dev),
            ),
            a_log: init::param(p, "A_log", &init::a_log(di, n, dev)),
            d: init::param(p, "D", &Tensor::ones([di], (Kind::Float, dev))),
            out_proj: init::param(p, "out_proj.weight", &out),
            d_inner: di,
            d_state: n,
            d_conv: k,
            dt_rank: r,
        }
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: i64) -> LayerState {
        let opts = (Kind::Float, self.in_proj.device());
        LayerState {
            conv: Tensor::zeros([batch, self.d_inner, self.d_conv], opts),
            ssm: Tensor::zeros([batch, self.d_inner, self.d_state], opts),
        }
    }

    /// Parallel forward over a whole sequence, continuing from `state` when given (and then
    /// leaving the final state in it).
    ///
    /// # Shapes
    /// `h`: (B, L, d_model) → (B, L, d_model).
    ///
    /// # Errors
    /// Kernel errors from the selective scan.
    pub fn forward(&self, h: &Tensor, state: Option<&mut LayerState>) -> Result<Tensor> {
        let (batch, len) = (h.size()[0], h.size()[1]);
        let (di, n, k, r) = (self.d_inner, self.d_state, self.d_conv, self.dt_rank);
        // Channel-first products (W @ Xᵀ) give the scan its (B, ·, L) layouts without transposed
        // copies. x and z come from separate products of in_proj's halves: slices of one (B,
        // 2·d_inner, L) product would cost two zero-filled full-size gradients in the backward.
        let ht = h.transpose(1, 2);
        let x = batched(&self.in_proj.narrow(0, 0, di), &ht); // (B, d_inner, L)
        let z = batched(&self.in_proj.narrow(0, di, di), &ht); // (B, d_inner, L)

        // Causal depthwise conv over [history, x]: history = the previous d_conv − 1 inputs (zero
        // without a state: then on CUDA one fused kernel does conv and SiLU, float32 out).
        let (x, x_for_proj, xc) = if state.is_none()
            && crate::ops::layers::fused_layers_for(x.device())
        {
            // Under bf16 autocast x_proj gets the kernel's bf16 twin instead of casting.
            let autocast_bf16 = crate::ops::cuda_autocast_state() == (true, Some(Kind::BFloat16));
            let (y, y16) = crate::ops::layers::causal_conv1d_silu(
                &x,
                &self.conv1d_weight,
                Some(&self.conv1d_bias),
                autocast_bf16,
            )?;
            let for_proj = y16.unwrap_or_else(|| y.shallow_clone());
            (y, for_proj, None)
        } else {
            let history = match &state {
                Some(s) => s.conv.narrow(2, 1, k - 1),
                None => Tensor::zeros([batch, di, k - 1], (x.kind(), x.device())),
            };
            let xc = Tensor::cat(&[&history, &x], 2); // (B, d_inner, L + d_conv − 1)
            let y = self.conv_silu_composite(&xc);
            (y.shallow_clone(), y, Some(xc))
        }; // x: (B, d_inner, L)
        let x_dbl = batched(&self.x_proj, &x_for_proj); // (B, dt_rank + 2·d_state, L)

        // dt_proj stays under autocast: in float32 its weight gradient, a (d_inner × dt_rank)
        // product summed over all B·L steps, costs cuBLAS ~0.5 ms per layer at 16 × 16384.
        let dt = batched(&self.dt_proj_weight, &x_dbl.narrow(1, 0, r)); // (B, d_inner, L)
        let b = x_dbl.narrow(1, r, n); // (B, d_state, L)
        let c = x_dbl.narrow(1, r + n, n); // (B, d_state, L)
        let a = -self.a_log.to_kind(Kind::Float).exp(); // (d_inner, d_state)

        // Under bf16 autocast the projections hand the scan bf16 tensors; it runs in float32 (see
        // `scan_operand`). Its output goes on in float32; autocast casts it for out_proj.
        let (x, dt, b, c, z) = (
            scan_operand(&x),
            scan_operand(&dt),
            scan_operand(&b),
            scan_operand(&c),
            scan_operand(&z),
        );
        let scan = selective_scan(&ScanInputs {
            u: &x,
            delta: &dt,
            a: &a,
            b: &b,
            c: &c,
            d: Some(&self.d),
            z: Some(&z),
            delta_bias: Some(&self.dt_proj_bias),
            initial_state: state.as_ref().map(|s| &s.ssm),
            delta_softplus: true,
        })?;
        if let (Some(s), Some(xc)) = (state, xc) {
            s.conv = xc.narrow(2, len + k - 1 - k, k).contiguous(); // last d_conv inputs
            s.ssm = scan.last_state;
        }
        let w_out = self
            .out_proj
            .tr()
            .unsqueeze(0)
            .expand([batch, -1, -1], false);
        Ok(scan.out.transpose(1, 2).bmm(&w_out)) // (B, L, d_model)
    }

    /// `silu(conv1d(xc) + bias)` in ATen ops, valid part only.
    ///
    /// # Shapes
    /// `xc`: (B, d_inner, L + d_conv − 1) → (B, d_inner, L)
    fn conv_silu_composite(&self, xc: &Tensor) -> Tensor {
        xc.conv1d(
            &self.conv1d_weight,
            Some(&self.conv1d_bias),
            [1],
            [0],
            [1],
            self.d_inner,
        )
        .silu()
    }

    /// One time step, as upstream `Mamba.step`.
    ///
    /// # Shapes
    /// `h`: (B, d_model) → (B, d_model); updates `state` in place.
    pub fn step(&self, h: &Tensor, state: &mut LayerState) -> Tensor {
        let (di, n, r) = (self.d_inner, self.d_state, self.dt_rank);
        let xz = h.matmul(&self.in_proj.tr()); // (B, 2·d_inner)
        let (x, z) = (xz.narrow(1, 0, di), xz.narrow(1, di, di));
        state.conv = Tensor::cat(
            &[state.conv.narrow(2, 1, self.d_conv - 1), x.unsqueeze(-1)],
            2,
        ); // (B, d_inner, d_conv)
        let x = ((&state.conv * self.conv1d_weight.squeeze_dim(1)).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        ) + &self.conv1d_bias)
            .silu(); // (B, d_inner)
        let x_db = x.matmul(&self.x_proj.tr()); // (B, dt_rank + 2·d_state)
        let dt = (x_db.narrow(1, 0, r).matmul(&self.dt_proj_weight.tr()) + &self.dt_proj_bias)
            .softplus(); // (B, d_inner)
        let b = x_db.narrow(1, r, n); // (B, d_state)
        let c = x_db.narrow(1, r + n, n); // (B, d_state)
        let a = -self.a_log.to_kind(Kind::Float).exp(); // (d_inner, d_state)
        let da = (dt.unsqueeze(-1) * &a).exp(); // (B, d_inner, d_state)
        let dbx = (&dt * &x).unsqueeze(-1) * b.unsqueeze(1); // (B, d_inner, d_state)
        state.ssm = &state.ssm * da + dbx;
        let y =
            (&state.ssm * c.unsqueeze(1)).sum_dim_intlist(-1, false, Kind::Float) + &self.d * &x; // (B, d_inner)
        (y * z.silu()).matmul(&self.out_proj.tr()) // (B, d_model)
    }
}

/// The selective scan's operands in float32: a bf16/fp16 tensor (what autocast's projections
/// produce) is cast up, anything else is returned as it is.
///
/// The values are the same either way (bf16 widens exactly) and the gradients flow back through
/// the cast in the input's dtype; what changes is which kernels run: the float32 ones, faster
/// than the bf16 ones in forward+backward alone (BENCHMARKS.md; whole training steps are within
/// 2% either way). `WM_SCAN_BF16_IO=1` hands bf16 operands to the bf16 kernels instead (to
/// compare; see "bf16 autocast training").
pub fn scan_operand(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::BFloat16 | Kind::Half if !bf16_scan_io() => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}

/// `WM_SCAN_BF16_IO=1`: hand the scan bf16 operands as they come (read once per process).
fn bf16_scan_io() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WM_SCAN_BF16_IO").is_ok_and(|v| v == "1"))
}

/// `w @ x` per batch entry through `bmm`, which hands the strided operands to BLAS as they are.
/// (`matmul` of a 2-D weight that requires grad — every parameter, even under `no_grad` — by a
/// 3-D tensor folds the batch and then copies the transposed product back: 3× slower for
/// `in_proj` and 10× for `dt_proj` at L = 64000, d_model 64, one thread.)
///
/// # Shapes
/// `w`: (m, k), `x`: (B, k, n) any strides → (B, m, n) contiguous.
fn batched(w: &Tensor, x: &Tensor) -> Tensor {
    w.unsqueeze(0).expand([x.size()[0], -1, -1], false).bmm(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn scan_operands_are_float32_under_autocast_dtypes() {
        let f = Tensor::from_slice(&[1.5f32, -2.25, 3.0]);
        for kind in [Kind::BFloat16, Kind::Half] {
            let t = f.to_kind(kind);
            let s = scan_operand(&t);
            assert_eq!(s.kind(), Kind::Float, "from {kind:?}");
            assert_eq!(Vec::<f32>::try_from(&s).unwrap(), vec![1.5, -2.25, 3.0]);
        }
        assert_eq!(scan_operand(&f).kind(), Kind::Float);
        let d = Tensor::zeros([2], (Kind::Double, Device::Cpu));
        assert_eq!(scan_operand(&d).kind(), Kind::Double);
    }

    #[test]
    fn scan_operand_cast_passes_gradients_back_in_the_input_dtype() {
        let x = Tensor::from_slice(&[1.0f32, 2.0])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let y = scan_operand(&x);
        (y * 3.0).sum(Kind::Float).backward();
        let g = x.grad();
        assert_eq!(g.kind(), Kind::BFloat16);
        assert_eq!(
            Vec::<f32>::try_from(&g.to_kind(Kind::Float)).unwrap(),
            vec![3.0, 3.0]
        );
    }
}
