// In-process checks of prism::distributed: the local backend, backend selection, argument checks, the
// tcp backend with one rank, and rendezvous failures. Multi-rank behaviour is tested with real
// processes in test_multiprocess.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "distributed/spawn_util.h"
#include "prism/core/error.h"
#include "prism/distributed/communicator.h"

namespace {

using prism::distributed::CommOptions;
using prism::distributed::Communicator;
using prism::distributed::DistEnv;
using prism::distributed::make_communicator;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const prism::Error& e) {
    return e.what();
  }
  return "";
}

CommOptions with_backend(const std::string& backend, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  CommOptions o;
  o.backend = backend;
  o.timeout = timeout;
  return o;
}

/// Collectives with one rank: identity / copies, on any backend.
void check_single_rank(Communicator& c) {
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.world_size(), 1);
  auto x = at::arange(10, at::kFloat);
  const auto x0 = x.clone();
  c.all_reduce_sum(x);
  EXPECT_TRUE(x.equal(x0));
  auto out = at::zeros({10}, at::kFloat);
  c.reduce_scatter_sum_async(x, out)->wait();
  EXPECT_TRUE(out.equal(x0));
  out.zero_();
  c.all_gather_async(x, out)->wait();
  EXPECT_TRUE(out.equal(x0));
  c.broadcast(x, 0);
  EXPECT_TRUE(x.equal(x0));
  c.barrier();
  EXPECT_EQ(c.all_reduce_sum(2.5), 2.5);
  EXPECT_EQ(c.all_reduce_max(-3.0), -3.0);
  std::vector<std::shared_ptr<prism::distributed::Work>> works;
  std::vector<at::Tensor> ts;
  for (int i = 0; i < 20; ++i) {
    ts.push_back(at::full({3}, double(i), at::kLong));
    works.push_back(c.all_reduce_sum_async(ts.back()));
  }
  for (auto& w : works) w->wait();
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(ts[i].equal(at::full({3}, double(i), at::kLong)));
}

TEST(Communicator, LocalIsIdentity) {
  auto c = make_communicator(DistEnv{}, {});
  EXPECT_EQ(c->backend(), "local");  // auto + one process
  check_single_rank(*c);
}

TEST(Communicator, ArgumentsAreCheckedAtIssueTime) {
  auto c = make_communicator(DistEnv{}, with_backend("local"));
  auto msg = error_of([&] { c->all_reduce_sum(at::zeros({4, 4}).t()); });
  EXPECT_NE(msg.find("contiguous"), std::string::npos) << msg;
  EXPECT_NE(msg.find("all_reduce"), std::string::npos) << msg;
  msg = error_of([&] { c->all_reduce_sum(at::zeros({4}, at::kBool)); });
  EXPECT_NE(msg.find("unsupported dtype"), std::string::npos) << msg;
  msg = error_of([&] { c->reduce_scatter_sum_async(at::zeros({4}), at::zeros({3})); });
  EXPECT_NE(msg.find("reduce_scatter"), std::string::npos) << msg;
  EXPECT_NE(msg.find("world_size"), std::string::npos) << msg;
  msg = error_of([&] { c->all_gather_async(at::zeros({4}), at::zeros({4}, at::kDouble)); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  msg = error_of([&] { c->broadcast(at::zeros({4}), 1); });
  EXPECT_NE(msg.find("root 1"), std::string::npos) << msg;
}

TEST(Communicator, BackendSelectionErrors) {
  DistEnv two;
  two.world_size = 2;
  two.rank = 1;
  auto msg = error_of([&] { make_communicator(DistEnv{}, with_backend("gloo")); });
  EXPECT_NE(msg.find("backend"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'gloo'"), std::string::npos) << msg;
  msg = error_of([&] { make_communicator(two, with_backend("local")); });
  EXPECT_NE(msg.find("WORLD_SIZE is 2"), std::string::npos) << msg;
  CommOptions o = with_backend("tcp");
  o.device = "cuda";
  msg = error_of([&] { make_communicator(DistEnv{}, o); });
  EXPECT_NE(msg.find("CPU tensors only"), std::string::npos) << msg;
  o.device = "gpu0";
  msg = error_of([&] { make_communicator(DistEnv{}, o); });
  EXPECT_NE(msg.find("'gpu0'"), std::string::npos) << msg;
  DistEnv bad;
  bad.rank = 3;
  msg = error_of([&] { make_communicator(bad, {}); });
  EXPECT_NE(msg.find("rank 3"), std::string::npos) << msg;
  msg = error_of([&] { make_communicator(DistEnv{}, with_backend("local", std::chrono::milliseconds(0))); });
  EXPECT_NE(msg.find("timeout"), std::string::npos) << msg;
}

TEST(Communicator, NcclWithoutCudaIsAClearError) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA is available here";
  for (const char* device : {"cpu", "cuda"}) {
    CommOptions o = with_backend("nccl");
    o.device = device;
    const auto msg = error_of([&] { make_communicator(DistEnv{}, o); });
    EXPECT_NE(msg.find("dist"), std::string::npos) << msg;
    EXPECT_NE(msg.find("CUDA"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tcp"), std::string::npos) << msg;  // says what to use instead
  }
}

TEST(Communicator, TcpSingleRank) {
  DistEnv env;
  env.master_port = prism::test::dist::free_port();
  auto c = make_communicator(env, with_backend("tcp"));
  EXPECT_EQ(c->backend(), "tcp");
  check_single_rank(*c);
  const auto msg = error_of([&] { c->all_gather_async(at::zeros({4}), at::zeros({5})); });
  EXPECT_NE(msg.find("dist(tcp): all_gather"), std::string::npos) << msg;
  c->barrier();  // a rejected call must not have consumed a sequence number or broken the communicator
}

TEST(Communicator, TcpRendezvousWithoutPeersTimesOut) {
  DistEnv env;
  env.world_size = 2;
  env.master_port = prism::test::dist::free_port();
  const auto start = std::chrono::steady_clock::now();
  auto msg = error_of([&] { make_communicator(env, with_backend("tcp", std::chrono::milliseconds(1500))); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(msg.find("rendezvous"), std::string::npos) << msg;
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(env.master_port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 of 2"), std::string::npos) << msg;
  EXPECT_LT(s, 15.0) << msg;

  env.rank = 1;  // a client whose server never comes up
  msg = error_of([&] { make_communicator(env, with_backend("tcp", std::chrono::milliseconds(1500))); });
  EXPECT_NE(msg.find("rendezvous"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did rank 0 start"), std::string::npos) << msg;
}

}  // namespace
