// Element types the kernels are instantiated for, shared by every kernels/<op>/ parameter header
// (plain C++: the bindings in src/ops/*_cuda.cpp map at::ScalarType onto it).
#pragma once

namespace prism::kernels {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace prism::kernels
