// Which implementation an op runs: its CUDA kernel where one applies (CUDA tensors, supported
// dtype/shape), or always the plain ATen reference.
//
// Why a per-call value instead of a global switch: no global mutable state (style.md), and a
// trainer can run the reference for one forward (debugging a kernel, a parity check) while the
// rest of the process uses kernels. Models take it in ForwardOptions; configs spell it
// `model.kernels: auto | reference`.
#pragma once

namespace prism::ops {

enum class Impl {
  kAuto,       ///< the kernel when it supports the inputs, else the reference
  kReference,  ///< always the ATen reference
};

}  // namespace prism::ops
