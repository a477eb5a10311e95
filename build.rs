//! Compiles `csrc/` (C++ always, CUDA with `--features cuda`) and sets rpaths so the binaries run
//! without environment variables. libtorch is located by `torch-sys` (`links = "tch"`), which hands
//! us its lib dir as `DEP_TCH_LIBTORCH_LIB`.

use std::env;
use std::path::{Path, PathBuf};

/// C++ translation units that include torch headers (slow to compile: keep them few).
const TORCH_SOURCES: &[&str] = &[
    "csrc/shim.cpp",
    "csrc/optim.cpp",
    "csrc/profiler.cpp",
    "csrc/layers.cpp",
    "csrc/scan/scan_autograd.cpp",
    "csrc/scan/scan_cpu.cpp",
];
/// C++ translation units with torch headers compiled only under `--features cuda`.
const TORCH_CUDA_SOURCES: &[&str] = &["csrc/scan/scan_cuda.cpp"];
/// CUDA translation units (no torch headers), compiled by nvcc under `--features cuda`; the scan
/// kernels are instantiated once per dtype and direction so nvcc runs in parallel.
const CUDA_SOURCES: &[&str] = &[
    "csrc/cuda/mulaw.cu",
    "csrc/cuda/layers.cu",
    "csrc/cuda/scan_launch.cu",
    "csrc/cuda/scan_fwd_f32.cu",
    "csrc/cuda/scan_fwd_bf16.cu",
    "csrc/cuda/scan_bwd_f32.cu",
    "csrc/cuda/scan_bwd_bf16.cu",
];

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let lib_dir = match env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => fail(
            "torch-sys did not report a libtorch lib dir (DEP_TCH_LIBTORCH_LIB).\n  \
             Run `make setup` (creates .venv with torch==2.11.0 and the .venv/libtorch link)\n  \
             or set LIBTORCH to a libtorch 2.11.0 directory.",
        ),
    };
    if !lib_dir.join("libtorch_cpu.so").exists() {
        fail(&format!(
            "no libtorch_cpu.so in {}: the libtorch there is incomplete. Run `make setup`.",
            lib_dir.display()
        ));
    }
    let torch_root = lib_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lib_dir.clone());
    let includes = [
        torch_root.join("include"),
        torch_root.join("include/torch/csrc/api/include"),
    ];
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some();

    for entry in walk(&manifest.join("csrc")) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=WAVEMAMBA_CUDA_ROOT");

    let cuda_root = cuda.then(|| find_cuda_root(&manifest));

    let mut cpp = cc::Build::new();
    cpp.cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .opt_level(3)
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        // at::parallel_for is inline OpenMP code (libtorch's parallel backend): without -fopenmp
        // it silently runs on one thread. libgomp.so.1 itself comes from the libtorch lib dir.
        .flag("-fopenmp")
        .includes(&includes)
        .include(manifest.join("csrc"))
        .files(TORCH_SOURCES);
    if let Some(root) = &cuda_root {
        cpp.define("WM_WITH_CUDA", "1")
            .include(root.join("include"))
            .files(TORCH_CUDA_SOURCES);
    }
    cpp.compile("wm_csrc");

    // The AVX2/FMA build of the CPU scan kernel; chosen at run time when the CPU has them.
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .opt_level(3)
        .include(manifest.join("csrc"))
        .flag("-mavx2")
        .flag("-mfma")
        .flag("-fno-math-errno")
        .file("csrc/scan/scan_cpu_avx2.cpp")
        .compile("wm_scan_avx2");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .opt_level(3)
        .include(manifest.join("csrc"))
        .flag("-fno-math-errno")
        .file("csrc/scan/scan_cpu_generic.cpp")
        .compile("wm_scan_generic");

    if let Some(root) = &cuda_root {
        compile_cuda(root);
    }

    // Silences alsa-lib's own stderr diagnostics (src/audio/device.rs); libasound is cpal's.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        cc::Build::new()
            .file("csrc/alsa_errors.c")
            .warnings(true)
            .compile("wm_alsa_errors");
        println!("cargo:rustc-link-lib=dylib=asound");
    }

    println!("cargo:rustc-link-lib=dylib=gomp");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
}

/// nvcc-compiles the `.cu` files, links the CUDA runtime and keeps `libtorch_cuda` linked.
fn compile_cuda(root: &Path) {
    // cc finds the CUDA compiler through $NVCC (a plain `.compiler()` would make it pass host
    // flags to nvcc without -Xcompiler).
    env::set_var("NVCC", root.join("bin/nvcc"));
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .cudart("none")
        .include("csrc")
        .include(root.join("include"))
        .flag("-std=c++17")
        .flag("-O3")
        .flag("--expt-relaxed-constexpr")
        .flag("-gencode=arch=compute_90,code=sm_90")
        // PTX for older GPUs: JIT-compiled by the driver on first use.
        .flag("-gencode=arch=compute_80,code=compute_80")
        .files(CUDA_SOURCES);
    let cccl = root.join("include/cccl");
    if cccl.exists() {
        build.include(cccl);
    }
    build.compile("wm_cuda");

    let cuda_lib = root.join("lib");
    println!("cargo:rustc-link-search=native={}", cuda_lib.display());
    println!("cargo:rustc-link-lib=dylib:+verbatim=libcudart.so.13");
    println!("cargo:rustc-link-lib=dylib=c10_cuda"); // CUDA stream and error helpers of the shim
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda_lib.display());
    // Rust code uses no symbol of libtorch_cuda, so --as-needed would drop it and libtorch would
    // then report CUDA unavailable. Keep it (DESIGN.md §3).
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

/// The CUDA toolkit root (with `bin/nvcc`, `include/`, `lib/`): `WAVEMAMBA_CUDA_ROOT`, the directory
/// above `$NVCC`, or the pip wheels in `.venv` (`.venv/cuda`, made by `CUDA=1 make setup`).
fn find_cuda_root(manifest: &Path) -> PathBuf {
    let candidates = [
        env::var_os("WAVEMAMBA_CUDA_ROOT").map(PathBuf::from),
        env::var_os("NVCC")
            .and_then(|n| PathBuf::from(n).parent()?.parent().map(Path::to_path_buf)),
        Some(manifest.join(".venv/cuda")),
    ];
    for root in candidates.into_iter().flatten() {
        if root.join("bin/nvcc").exists() {
            return root;
        }
    }
    fail(
        "--features cuda needs nvcc 13.0 and it was not found.\n  \
         Run `CUDA=1 make setup` (installs the pinned nvidia-cuda-nvcc wheels into .venv),\n  \
         or set WAVEMAMBA_CUDA_ROOT to a CUDA 13 toolkit directory containing bin/nvcc.",
    )
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn fail(message: &str) -> ! {
    eprintln!("\nwavemamba build error: {message}\n");
    std::process::exit(1);
}
