// Gathered-buffer storage of sharded parameters, shared by DistributedAdamW's ParamSharding and
// FrozenShards (private to the train module).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace prism::train::detail {

// Elements per piece are padded to this multiple so that every rank's piece starts 256-byte
// aligned in fp32 (NCCL and vectorised kernels like aligned buffers).
constexpr int64_t kAlign = 64;

// A sharded unit's gathered buffer between uses: the parameters stay views of the same storage
// (autograd's saved tensors too), only its memory is released and re-allocated (FSDP1's
// `storage.resize_(0)`), so nothing has to re-point parameters on every gather.
inline void free_storage(const at::Tensor& t) {
  auto st = t.storage();
  st.set_data_ptr_noswap(at::DataPtr(nullptr, t.device()));
  st.set_nbytes(0);
}
inline void alloc_storage(const at::Tensor& t) {
  auto st = t.storage();
  const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
  st.set_data_ptr_noswap(st.allocator()->allocate(nbytes));
  st.set_nbytes(nbytes);
}

}  // namespace prism::train::detail
