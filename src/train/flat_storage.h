// Gathered-buffer storage of sharded parameters, shared by DistributedAdamW's ParamSharding and
// FrozenShards (private to the train module).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

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

/// The handle LayerHooks::gather_all returns: every unit stays gathered (impl->pin()) until the
/// last copy of the handle is released (impl->unpin()); it keeps `impl` alive meanwhile.
template <class Impl>
std::shared_ptr<void> pin_handle(const std::shared_ptr<Impl>& impl) {
  impl->pin();
  return std::shared_ptr<void>(impl.get(), [impl](void*) { impl->unpin(); });
}

}  // namespace prism::train::detail
