// Gathered-buffer storage of sharded parameters, shared by DistributedAdamW's ParamSharding and
// FrozenShards (private to the train module).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "prism/distributed/communicator.h"

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

// One sharded unit's gather lifecycle (ParamSharding's buckets and FrozenShards' units): `flat` is
// the gathered buffer, `shard` this rank's piece, `gathered` whether `flat` holds the full
// parameters, `work` the in-flight (prefetched) all-gather.
// Starts the all-gather unless the unit is gathered or already on its way.
inline void issue_gather(distributed::Communicator& group, const at::Tensor& shard, const at::Tensor& flat,
                         bool gathered, std::shared_ptr<distributed::Work>& work) {
  if (gathered || work) return;
  alloc_storage(flat);
  work = group.all_gather_async(shard, flat);
}
// Waits for an issued all-gather; afterwards the unit is gathered.
inline void finish_gather(std::shared_ptr<distributed::Work>& work, bool& gathered) {
  if (!work) return;
  work->wait();
  work.reset();
  gathered = true;
}
// Frees the gathered buffer. A prefetch nobody consumed still writes into it, so it is waited for
// first; its buffer is freed too.
inline void release_gathered(const at::Tensor& flat, bool& gathered, std::shared_ptr<distributed::Work>& work) {
  if (work) {
    work->wait();
    work.reset();
  }
  if (!gathered && flat.storage().nbytes() == 0) return;
  free_storage(flat);
  gathered = false;
}

/// The handle LayerHooks::gather_all returns: every unit stays gathered (impl->pin()) until the
/// last copy of the handle is released (impl->unpin()); it keeps `impl` alive meanwhile.
template <class Impl>
std::shared_ptr<void> pin_handle(const std::shared_ptr<Impl>& impl) {
  impl->pin();
  return std::shared_ptr<void>(impl.get(), [impl](void*) { impl->unpin(); });
}

}  // namespace prism::train::detail
