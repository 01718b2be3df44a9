// Parameter sharding for a frozen model (GRPO's reference policy): the FSDP layout of
// DistributedAdamW's ParamSharding without anything an optimizer needs. Each decoder layer's
// parameters become views of one flat buffer of which a rank keeps only its 1/S piece between
// uses; the layer hooks all-gather a layer before it runs (prefetching the next) and free it
// after. No gradients, no master copy, no moments. Parameters outside the decoder layers
// (embeddings, final norm, lm_head) stay resident, as the policy's root unit does.
//
// Every forward is collective over the shard group (each rank must run the same forwards), like
// the sharded policy's; CausalLM::gather_to_host() copies it whole, one layer at a time (to save it).
//
// **Example**:
//
//     FrozenShards shards(*ref, *ctx->gather_comm());  // installs ref's layer hooks
//     auto lp = token_logprobs(*ref, mb, device);        // gathers layer by layer
//     {
//       auto full = policy->gather_parameters();
//       shards.blend_from(*policy, alpha);               // Polyak, on this rank's pieces
//     }
#pragma once

#include <memory>

namespace prism::distributed {
class Communicator;
}
namespace prism::models {
class CausalLM;
}

namespace prism::train {

class FrozenShards {
 public:
  /// Shards `model`'s decoder-layer parameters over `group` (whose ranks all hold the same
  /// weights now) and installs the model's layer hooks. Parameters get requires_grad = false.
  /// Both must outlive this object's use; the hooks keep the buffers alive.
  FrozenShards(models::CausalLM& model, distributed::Communicator& group);
  ~FrozenShards();
  FrozenShards(const FrozenShards&) = delete;
  FrozenShards& operator=(const FrozenShards&) = delete;

  /// Polyak averaging w <- (1 - alpha) w + alpha * source, elementwise on this rank's pieces (and
  /// on the resident parameters), with the same arithmetic as on full tensors. `source` has the
  /// same architecture (named_parameters aligned by index) and every parameter readable (its
  /// gather_parameters() handle held). Not while this model's parameters are gathered.
  void blend_from(const models::CausalLM& source, double alpha);

  /// Bytes this rank keeps between uses: its pieces plus the resident parameters.
  int64_t resident_bytes() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // shared with the model's layer hooks
};

}  // namespace prism::train
