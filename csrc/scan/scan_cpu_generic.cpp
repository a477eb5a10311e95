// The CPU scan kernels for any x86-64 / other CPU (scalar packs); fallback when AVX2 is absent.
#define WM_SCAN_NS generic
#include "scan/scan_kernel.inc"
