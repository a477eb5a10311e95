#!/usr/bin/env python3
"""Writes tests/fixtures/golden_tiny/: a tiny MambaLMHeadModel (official key names and shapes),
an input and the logits, computed here from the official math in plain PyTorch (float64),
independently of the Rust code. Regenerate with:  .venv/bin/python scripts/golden_fixtures.py

The math follows mamba_ssm (Mamba-1): Mamba.forward's reference path (in_proj, causal depthwise
conv1d + SiLU, x_proj, dt_proj, selective_scan_ref with D, z, delta_bias, softplus, out_proj),
Block (residual = h + residual; h = mixer(RMSNorm(residual))), MixerModel (norm_f), tied lm_head.
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
D_MODEL, N_LAYER, D_STATE, D_CONV, EXPAND, VOCAB = 16, 2, 8, 4, 2, 256
D_INNER = EXPAND * D_MODEL
DT_RANK = math.ceil(D_MODEL / 16)
BATCH, LEN = 2, 300
EPS = 1e-5


def randn(*shape, scale=1.0):
    return torch.randn(*shape, dtype=torch.float64) * scale


# Random weights in the regime of a trained model (never zeros, never the plain init).
w = {"backbone.embedding.weight": randn(VOCAB, D_MODEL, scale=0.5)}
for i in range(N_LAYER):
    p = f"backbone.layers.{i}."
    w[p + "norm.weight"] = 1.0 + randn(D_MODEL, scale=0.1)
    w[p + "mixer.in_proj.weight"] = randn(2 * D_INNER, D_MODEL, scale=D_MODEL ** -0.5)
    w[p + "mixer.conv1d.weight"] = randn(D_INNER, 1, D_CONV, scale=0.5)
    w[p + "mixer.conv1d.bias"] = randn(D_INNER, scale=0.1)
    w[p + "mixer.x_proj.weight"] = randn(DT_RANK + 2 * D_STATE, D_INNER, scale=D_INNER ** -0.5)
    w[p + "mixer.dt_proj.weight"] = randn(D_INNER, DT_RANK, scale=DT_RANK ** -0.5)
    w[p + "mixer.dt_proj.bias"] = randn(D_INNER, scale=0.5) - 3.0
    w[p + "mixer.A_log"] = torch.log(torch.arange(1, D_STATE + 1, dtype=torch.float64)).repeat(D_INNER, 1) + randn(D_INNER, D_STATE, scale=0.1)
    w[p + "mixer.D"] = 1.0 + randn(D_INNER, scale=0.2)
    w[p + "mixer.out_proj.weight"] = randn(D_MODEL, D_INNER, scale=D_INNER ** -0.5)
w["backbone.norm_f.weight"] = 1.0 + randn(D_MODEL, scale=0.1)
w["lm_head.weight"] = w["backbone.embedding.weight"]  # tied, written explicitly


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    delta = F.softplus(delta + delta_bias[..., None])
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = y + u * D[..., None]
    return out * F.silu(z)


def mamba(h, p):
    L = h.shape[1]
    xz = torch.einsum("ed,bld->bel", w[p + "in_proj.weight"], h)
    x, z = xz.chunk(2, dim=1)
    x = F.conv1d(x, w[p + "conv1d.weight"], w[p + "conv1d.bias"], padding=D_CONV - 1, groups=D_INNER)[..., :L]
    x = F.silu(x)
    x_dbl = torch.einsum("ed,bdl->ble", w[p + "x_proj.weight"], x)
    dt, B, C = torch.split(x_dbl, [DT_RANK, D_STATE, D_STATE], dim=-1)
    dt = torch.einsum("dr,blr->bdl", w[p + "dt_proj.weight"], dt)
    A = -torch.exp(w[p + "A_log"])
    y = selective_scan_ref(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), w[p + "D"], z, w[p + "dt_proj.bias"])
    return torch.einsum("md,bdl->blm", w[p + "out_proj.weight"], y)


tokens = torch.randint(0, VOCAB, (BATCH, LEN))
h = w["backbone.embedding.weight"][tokens]
residual = None
for i in range(N_LAYER):
    p = f"backbone.layers.{i}."
    residual = h if residual is None else residual + h
    h = mamba(rms_norm(residual, w[p + "norm.weight"]), p + "mixer.")
residual = residual + h
h = rms_norm(residual, w["backbone.norm_f.weight"])
logits = h @ w["lm_head.weight"].T


def write_safetensors(path, tensors):
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = bytes(t.untyped_storage())[: t.numel() * t.element_size()]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "golden_tiny")
os.makedirs(out, exist_ok=True)
write_safetensors(os.path.join(out, "model.safetensors"), {k: v.float() for k, v in w.items()})
write_safetensors(os.path.join(out, "io.safetensors"), {"tokens": tokens, "logits": logits.float()})
config = {
    "d_model": D_MODEL, "d_intermediate": 0, "n_layer": N_LAYER, "vocab_size": VOCAB,
    "ssm_cfg": {"d_state": D_STATE, "d_conv": D_CONV, "expand": EXPAND},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
    "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True,
}
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
print(f"wrote {out}: logits {tuple(logits.shape)}, |logits| = {logits.norm():.4f}")
