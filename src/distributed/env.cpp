// DistEnv: the torchrun environment contract (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT), so prism runs unchanged under torchrun, tools/launch.sh or Slurm.
//
// Why strict: a typo'd or half-set environment would otherwise surface as a rendezvous that hangs
// for the whole timeout (or, worse, as two independent single-process runs writing the same
// output dir). Every rejected value is named together with what it should have been.
#include <charconv>
#include <cstdlib>
#include <optional>
#include <string>

#include "prism/core/error.h"
#include "prism/distributed/communicator.h"

namespace prism::distributed {
namespace {

constexpr const char* kWhere = "environment";

std::optional<int64_t> parse_int(const std::string& s) {
  int64_t v = 0;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || ptr != end || s.empty()) return std::nullopt;
  return v;
}

// Reads variable `name` as an integer in [lo, hi]; `range` describes the bound for the message.
std::optional<int> read_int(const DistEnv::Lookup& lookup, const char* name, int64_t lo, int64_t hi,
                            const std::string& range) {
  auto raw = lookup(name);
  if (!raw) return std::nullopt;
  auto v = parse_int(*raw);
  if (!v || *v < lo || *v > hi) {
    throw Error("dist: invalid torchrun variable", key_context(kWhere, name, range, "'" + *raw + "'"));
  }
  return static_cast<int>(*v);
}

}  // namespace

DistEnv DistEnv::parse(const Lookup& lookup) {
  DistEnv env;
  const auto world = read_int(lookup, "WORLD_SIZE", 1, 1 << 20, "an integer >= 1");
  env.world_size = world.value_or(1);
  const auto rank =
      read_int(lookup, "RANK", 0, env.world_size - 1, prism::str("an integer in [0, WORLD_SIZE=", env.world_size, ")"));
  // Half a torchrun environment is a launcher bug: refuse it rather than silently run single-process.
  if (rank && !world) {
    throw Error("dist: RANK is set but WORLD_SIZE is not", key_context(kWhere, "WORLD_SIZE", "set together with RANK"));
  }
  if (!rank && env.world_size > 1) {
    throw Error("dist: WORLD_SIZE > 1 but RANK is not set",
                key_context(kWhere, "RANK", prism::str("an integer in [0, ", env.world_size, ")"), "unset"));
  }
  env.rank = rank.value_or(0);

  const auto lws = read_int(lookup, "LOCAL_WORLD_SIZE", 1, env.world_size,
                            prism::str("an integer in [1, WORLD_SIZE=", env.world_size, "]"));
  env.local_world_size = lws.value_or(env.world_size);
  const auto lr = read_int(lookup, "LOCAL_RANK", 0, env.local_world_size - 1,
                           prism::str("an integer in [0, LOCAL_WORLD_SIZE=", env.local_world_size, ")"));
  // Without LOCAL_RANK (e.g. a hand-written srun line) assume ranks are packed node by node.
  env.local_rank = lr.value_or(env.rank % env.local_world_size);

  // torchrun always sets both; a multi-process run without them would rendezvous on a default
  // address and hang (multi-node) instead of failing, so they are required when WORLD_SIZE > 1.
  if (auto addr = lookup("MASTER_ADDR")) {
    if (addr->empty())
      throw Error("dist: invalid torchrun variable", key_context(kWhere, "MASTER_ADDR", "a host name or IP", "''"));
    env.master_addr = *addr;
  } else if (env.world_size > 1) {
    throw Error("dist: WORLD_SIZE > 1 but MASTER_ADDR is not set",
                key_context(kWhere, "MASTER_ADDR", "the host of rank 0", "unset"));
  }
  const auto port = read_int(lookup, "MASTER_PORT", 1, 65535, "a port in [1, 65535]");
  if (!port && env.world_size > 1) {
    throw Error("dist: WORLD_SIZE > 1 but MASTER_PORT is not set",
                key_context(kWhere, "MASTER_PORT", "a port in [1, 65535]", "unset"));
  }
  env.master_port = port.value_or(env.master_port);
  return env;
}

DistEnv DistEnv::from_env() {
  return parse([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace prism::distributed
