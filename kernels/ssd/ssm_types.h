// Plain types shared by the Mamba2 kernels (kernels/ssd, kernels/causal_conv1d,
// kernels/gated_rmsnorm). No torch types: the .cu files are compiled by nvcc without torch
// headers; src/ops/*_cuda.cpp fill the params structs from at::Tensors.
#pragma once

#include <cstdint>

namespace prism::kernels::ssm {

/// Element type of a tensor argument (runtime: the Mamba2 kernels read mixed dtypes, e.g. an fp32
/// SSD output gated by a bf16 z, without a cast kernel in between).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace prism::kernels::ssm
