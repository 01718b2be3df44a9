// One kernel source is compiled twice into the test binaries: by nvcc into libprism_kernels (real
// kernels, whose host-side launch stubs carry the kernels' names) and by the host compiler for the
// CPU emulator tests (PRISM_KERNEL_EMULATE / PRISM_FLASH_EMULATE). Both copies would have the same
// mangled names: a link error for plain functions, and, worse, a silent merge of template
// instantiations (weak symbols), after which a real launch could pass cudaLaunchKernel the
// address of the host emulation ("invalid device function" on a GPU). Each kernel header opens
// PRISM_KERNEL_ABI_BEGIN inside its namespace: an inline namespace whose name differs between
// the two compilations, so the symbols differ while unqualified names resolve as before.
#pragma once

#if defined(__CUDACC__)
#define PRISM_KERNEL_ABI_BEGIN inline namespace cuda_device {
#else
#define PRISM_KERNEL_ABI_BEGIN inline namespace host_emulation {
#endif
#define PRISM_KERNEL_ABI_END }
