// Plain types shared by the Mamba2 kernels (kernels/ssd, kernels/causal_conv1d,
// kernels/gated_rmsnorm). No torch types: the .cu files are compiled by nvcc without torch
// headers; src/ops/*_cuda.cpp fill the params structs from at::Tensors.
#pragma once

#include <cstdint>

#include "../common/kernel_dtype.h"

namespace prism::kernels::ssm {

// The element type of a tensor argument is prism::kernels::DType (kernels/common/kernel_dtype.h),
// given per tensor at run time: the Mamba2 kernels read mixed dtypes, e.g. an fp32 SSD output
// gated by a bf16 z, without a cast kernel in between.

}  // namespace prism::kernels::ssm
