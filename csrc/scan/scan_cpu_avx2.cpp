// The CPU scan kernels compiled with -mavx2 -mfma (8 floats per pack); used when the CPU has them.
#define WM_SCAN_NS avx2
#define WM_SCAN_WIDE simd::PackF8
#include "scan/scan_kernel.inc"
