// prism-dist-selftest: runs prism::distributed collectives on deterministic data in every rank of a real
// multi-process job and checks the results against values computed locally, bit for bit.
//
// Why a separate program: the multi-process tests (tests/distributed) must use real processes, and the
// same binary doubles as a smoke test of a cluster's setup (network, NCCL, launch script):
//
//     tools/launch.sh --nproc 2 -- build/bin/prism-dist-selftest all
//     torchrun --no-python --nproc-per-node 8 build/bin/prism-dist-selftest all --backend nccl --device cuda
//
// Exit codes: 0 all checks passed, 1 a check failed, 2 usage, 3 a prism::Error that the scenario
// did not expect. Each rank prints "rank r/W: <check> ok" lines.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <CLI/CLI.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "prism/core/error.h"
#include "prism/distributed/communicator.h"

namespace {

using prism::distributed::Communicator;

struct Options {
  std::string scenario = "all";
  std::string backend = "auto";
  std::string device = "cpu";
  int64_t timeout_ms = 60000;
  int victim = 1;
  int code = 7;
};

/// A failed check: exit code 1.
struct CheckFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Selftest {
 public:
  Selftest(Communicator& comm, const Options& o)
      : comm_(comm), o_(o), W_(comm.world_size()), r_(comm.rank()), device_(o.device) {}

  void ok(const std::string& what) const {
    std::printf("rank %d/%d: %s ok\n", r_, W_, what.c_str());
    std::fflush(stdout);
  }

  void expect(bool cond, const std::string& what) const {
    if (!cond) throw CheckFailure(what);
  }

  void expect_equal(const at::Tensor& got, const at::Tensor& want, const std::string& what) const {
    auto g = got.cpu(), w = want.cpu();
    if (g.sizes() == w.sizes() && g.scalar_type() == w.scalar_type() && g.equal(w)) return;
    std::string detail;
    if (g.sizes() != w.sizes()) {
      detail = prism::str("shape ", g.sizes(), " != ", w.sizes());
    } else {
      auto d = (g.to(at::kDouble) - w.to(at::kDouble)).abs().reshape(-1);
      const int64_t i = d.argmax().item<int64_t>();
      detail = prism::str("max |diff| ", d[i].item<double>(), " at flat index ", i, ": got ",
                          g.reshape(-1)[i].item<double>(), ", want ", w.reshape(-1)[i].item<double>());
    }
    throw CheckFailure(what + " mismatch: " + detail);
  }

  at::TensorOptions opt(at::ScalarType t) const { return at::TensorOptions().dtype(t).device(device_); }

  /// Rank s's random contribution (the same on every rank that computes it).
  at::Tensor random_of(int s, int64_t n, at::ScalarType t, uint64_t salt) const {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + 7919 * salt + s);
    return at::randn({n}, gen, at::TensorOptions().dtype(at::kFloat)).to(t).to(device_);
  }

  void all_reduce() {
    const int64_t n = 37;
    const double tri = W_ * (W_ + 1) / 2.0;
    uint64_t salt = 0;
    for (auto t : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kLong, at::kInt}) {
      const std::string name = prism::str("all_reduce ", t);
      // Integer-valued data: exact in every dtype, so the expectation is unambiguous.
      auto x = at::arange(n, opt(t)) * (r_ + 1);
      comm_.all_reduce_sum(x);
      expect_equal(x, at::arange(n, opt(at::kDouble)).mul(tri).to(t), name + " (r+1)*arange");
      if (at::isFloatingType(t)) {
        // Random data: the result must be bit-equal to adding the contributions in rank order.
        auto y = random_of(r_, n, t, ++salt);
        comm_.all_reduce_sum(y);
        auto want = random_of(0, n, t, salt);
        for (int s = 1; s < W_; ++s) want.add_(random_of(s, n, t, salt));
        expect_equal(y, want, name + " random, rank-ordered sum");
        // ... and identical on every rank: gather everyone's result and compare.
        auto all = at::empty({W_ * n}, opt(t));
        comm_.all_gather_async(y, all)->wait();
        for (int s = 0; s < W_; ++s)
          expect_equal(all.narrow(0, s * n, n), y, name + prism::str(" rank ", s, " vs mine"));
      }
      ok(name);
    }
    auto e = at::empty({0}, opt(at::kFloat));
    comm_.all_reduce_sum(e);
    ok("all_reduce empty tensor");
  }

  void reduce_scatter() {
    const int64_t n = 5;
    for (auto t : {at::kFloat, at::kBFloat16, at::kLong}) {
      auto input_of = [&](int s) { return (at::arange(W_ * n, opt(at::kDouble)) * (s + 1) + 100 * s).to(t); };
      auto want = at::zeros({n}, opt(at::kDouble));
      for (int s = 0; s < W_; ++s) want += input_of(s).to(at::kDouble).narrow(0, r_ * n, n);
      auto out = at::empty({n}, opt(t));
      comm_.reduce_scatter_sum_async(input_of(r_), out)->wait();
      expect_equal(out, want.to(t), prism::str("reduce_scatter ", t));
      // In place: the output is this rank's chunk of the input.
      auto buf = input_of(r_);
      auto mine = buf.narrow(0, r_ * n, n);
      comm_.reduce_scatter_sum_async(buf, mine)->wait();
      expect_equal(mine, want.to(t), prism::str("reduce_scatter in place ", t));
      ok(prism::str("reduce_scatter ", t));
    }
  }

  void all_gather() {
    const int64_t n = 6;
    for (auto t : {at::kFloat, at::kBFloat16, at::kLong}) {
      auto input_of = [&](int s) { return (at::arange(n, opt(at::kDouble)) + 10 * s).to(t); };
      std::vector<at::Tensor> parts;
      for (int s = 0; s < W_; ++s) parts.push_back(input_of(s));
      const auto want = at::cat(parts);
      auto out = at::empty({W_ * n}, opt(t));
      comm_.all_gather_async(input_of(r_), out)->wait();
      expect_equal(out, want, prism::str("all_gather ", t));
      auto buf = at::zeros({W_ * n}, opt(t));
      auto mine = buf.narrow(0, r_ * n, n);
      mine.copy_(input_of(r_));
      comm_.all_gather_async(mine, buf)->wait();
      expect_equal(buf, want, prism::str("all_gather in place ", t));
      ok(prism::str("all_gather ", t));
    }
  }

  void broadcast() {
    for (int root : {0, W_ - 1}) {
      auto want = at::arange(11, opt(at::kFloat)) * 7 + root;
      auto x = r_ == root ? want.clone() : at::zeros({11}, opt(at::kFloat));
      comm_.broadcast(x, root);
      expect_equal(x, want, prism::str("broadcast from ", root));
      ok(prism::str("broadcast root ", root));
    }
  }

  void barrier() {
    comm_.barrier();
    const auto start = std::chrono::steady_clock::now();
    if (r_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    comm_.barrier();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    expect(ms >= 250, prism::str("barrier returned after ", ms, " ms while rank 0 slept 300 ms"));
    ok("barrier");
  }

  void scalars() {
    expect(comm_.all_reduce_sum(double(r_ + 1)) == W_ * (W_ + 1) / 2.0, "all_reduce_sum(r+1)");
    const double big = 1099511627776.0;  // 2^40: integers stay exact up to 2^53
    expect(comm_.all_reduce_sum(big + r_) == W_ * big + W_ * (W_ - 1) / 2.0, "all_reduce_sum(2^40 + r)");
    expect(comm_.all_reduce_max(1.5 * r_) == 1.5 * (W_ - 1), "all_reduce_max(1.5 r)");
    expect(comm_.all_reduce_max(-1.0 - r_) == -1.0, "all_reduce_max(-1 - r)");
    ok("scalar helpers");
  }

  void async_order() {
    // Two in-flight all-reduces of the same tensor are only right if they run in issue order.
    auto a = at::ones({3}, opt(at::kFloat));
    auto w1 = comm_.all_reduce_sum_async(a);
    auto w2 = comm_.all_reduce_sum_async(a);
    w2->wait();
    w1->wait();
    w1->wait();  // waiting twice is fine
    expect_equal(a, at::full({3}, double(W_ * W_), opt(at::kFloat)), "two queued all_reduces of one tensor");

    // Many collectives of mixed kinds in flight, waited for in reverse order.
    const int k = 48;
    const int64_t n = 7;
    std::vector<at::Tensor> ts, outs, wants;
    std::vector<std::shared_ptr<prism::distributed::Work>> works;
    const at::ScalarType types[] = {at::kFloat, at::kLong, at::kBFloat16};
    for (int i = 0; i < k; ++i) {
      const auto t = types[i % 3];
      if (i % 4 == 3) {  // an all_gather among the all-reduces
        ts.push_back(at::full({n}, double(i + r_), opt(t)));
        outs.push_back(at::empty({W_ * n}, opt(t)));
        std::vector<at::Tensor> parts;
        for (int s = 0; s < W_; ++s) parts.push_back(at::full({n}, double(i + s), opt(t)));
        wants.push_back(at::cat(parts));
        works.push_back(comm_.all_gather_async(ts.back(), outs.back()));
      } else {
        ts.push_back(at::full({n}, double(i + r_), opt(t)));
        outs.push_back(ts.back());
        wants.push_back(at::full({n}, double(W_ * i + W_ * (W_ - 1) / 2), opt(t)));
        works.push_back(comm_.all_reduce_sum_async(ts.back()));
      }
    }
    for (int i = k - 1; i >= 0; --i) works[i]->wait();
    for (int i = 0; i < k; ++i) expect_equal(outs[i], wants[i], prism::str("in-flight collective ", i));
    ok(prism::str(k, " async collectives in flight"));
  }

  void large() {
    // > 16 MiB: the tcp transport splits it into several store values.
    const int64_t n = (int64_t{5} << 20) + 3;
    auto x = (at::arange(n, opt(at::kFloat)).remainder(1000)) * (r_ + 1);
    comm_.all_reduce_sum(x);
    expect_equal(x, at::arange(n, opt(at::kFloat)).remainder(1000) * (W_ * (W_ + 1) / 2), "large all_reduce");
    auto out = at::empty({W_ * n}, opt(at::kFloat));
    auto in = at::full({n}, double(r_), opt(at::kFloat));
    comm_.all_gather_async(in, out)->wait();
    for (int s = 0; s < W_; ++s) {
      expect_equal(out.narrow(0, s * n, n), at::full({n}, double(s), opt(at::kFloat)), "large all_gather");
    }
    ok("large tensors (20 MiB)");
  }

  /// The tcp transport deletes each collective's keys once every rank has read them: the number
  /// of keys on rank 0's store must not grow with the number of collectives.
  void store_keys(const prism::distributed::DistEnv& env) {
    if (comm_.backend() != "tcp") return;
    for (int i = 0; i < 100; ++i) {
      auto x = at::ones({3}, opt(at::kFloat));
      comm_.all_reduce_sum_async(x);
      comm_.reduce_scatter_sum_async(at::ones({3 * W_}, opt(at::kFloat)), x);
    }
    comm_.barrier();
    comm_.barrier();
    if (r_ == 0) {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(env.master_port);
      so.waitWorkers = false;
      so.timeout = std::chrono::milliseconds(o_.timeout_ms);
      so.useLibUV = false;
      auto probe = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
      const int64_t keys = probe->getNumKeys();
      // Left over at most: rendezvous bookkeeping and the last barrier's keys (being deleted).
      expect(keys <= 2 * W_ + 8, prism::str(keys, " keys on the store after 200 collectives"));
      std::printf("rank 0/%d: %lld keys left on the store\n", W_, static_cast<long long>(keys));
    }
    comm_.barrier();
    ok("store keys cleaned up");
  }

  /// The victim dies without a word after the rendezvous; the others must get a clear error
  /// within the timeout (not hang), and the communicator must stay failed afterwards.
  int dead_peer() {
    comm_.barrier();
    if (r_ == o_.victim) {
      // Let the barrier finish everywhere first (rank 0 serves the store the others still read).
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      std::printf("rank %d/%d: exiting abruptly\n", r_, W_);
      std::fflush(stdout);
      std::_Exit(0);  // no destructors, no shutdown handshake: like a crash
    }
    auto x = at::ones({4}, opt(at::kFloat));
    const auto start = std::chrono::steady_clock::now();
    std::string msg;
    try {
      comm_.all_reduce_sum(x);
    } catch (const prism::Error& e) {
      msg = e.what();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    expect(!msg.empty(), "all_reduce with a dead peer succeeded");
    std::printf("rank %d/%d: error after %.2f s: %s\n", r_, W_, s, msg.c_str());
    expect(msg.find(prism::str("rank ", o_.victim)) != std::string::npos,
           "the error does not name rank " + std::to_string(o_.victim));
    expect(s <= o_.timeout_ms / 1000.0 + 5.0, prism::str("the error took ", s, " s (timeout ", o_.timeout_ms, " ms)"));
    std::string again;
    try {
      comm_.barrier();
    } catch (const prism::Error& e) {
      again = e.what();
    }
    expect(again.find("earlier collective failed") != std::string::npos,
           "a collective after the failure did not report the earlier failure: '" + again + "'");
    ok("dead peer detected");
    return 0;
  }

 private:
  Communicator& comm_;
  const Options& o_;
  int W_, r_;
  at::Device device_;
};

int run(const Options& o) {
  const auto env = prism::distributed::DistEnv::from_env();
  if (o.scenario == "env") {
    std::printf("RANK=%d WORLD_SIZE=%d LOCAL_RANK=%d LOCAL_WORLD_SIZE=%d MASTER=%s:%d\n", env.rank, env.world_size,
                env.local_rank, env.local_world_size, env.master_addr.c_str(), env.master_port);
    return 0;
  }
  if (o.scenario == "die_rank" && env.rank == o.victim) {
    std::printf("rank %d/%d: exiting with code %d\n", env.rank, env.world_size, o.code);
    std::fflush(stdout);
    return o.code;
  }
  prism::distributed::CommOptions co;
  co.backend = o.backend;
  co.device = o.device;
  co.timeout = std::chrono::milliseconds(o.timeout_ms);
  auto comm = prism::distributed::make_communicator(env, co);
  std::printf("rank %d/%d: backend %s up\n", comm->rank(), comm->world_size(), comm->backend().c_str());
  std::fflush(stdout);
  Selftest t(*comm, o);
  if (o.scenario == "die_rank") {  // survivors: block in collectives until the launcher kills us
    for (;;) comm->barrier();
  }
  if (o.scenario == "dead_peer") return t.dead_peer();
  const bool all = o.scenario == "all";
  bool known = all;
  auto step = [&](const char* name, auto fn) {
    if (all || o.scenario == name) {
      known = true;
      (t.*fn)();
    }
  };
  step("all_reduce", &Selftest::all_reduce);
  step("reduce_scatter", &Selftest::reduce_scatter);
  step("all_gather", &Selftest::all_gather);
  step("broadcast", &Selftest::broadcast);
  step("barrier", &Selftest::barrier);
  step("scalars", &Selftest::scalars);
  step("async", &Selftest::async_order);
  if (all || o.scenario == "store_keys") {
    known = true;
    t.store_keys(env);
  }
  if (o.scenario == "large") {
    known = true;
    t.large();
  }
  if (!known) throw CLI::ValidationError("scenario", "unknown scenario '" + o.scenario + "'");
  comm->barrier();
  std::printf("rank %d/%d: %s ok\n", comm->rank(), comm->world_size(), o.scenario.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "prism-dist-selftest: check prism::distributed collectives across the ranks of a job.\n"
      "Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun, "
      "tools/launch.sh)."};
  app.add_option(
         "scenario", o.scenario,
         "all | all_reduce | reduce_scatter | all_gather | broadcast | barrier | scalars | async | store_keys | "
         "large | dead_peer | die_rank | env")
      ->capture_default_str();
  app.add_option("--backend", o.backend, "auto | local | tcp | nccl")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--timeout-ms", o.timeout_ms, "per-collective and rendezvous timeout")->capture_default_str();
  app.add_option("--victim", o.victim, "dead_peer / die_rank: the rank that exits")->capture_default_str();
  app.add_option("--code", o.code, "die_rank: the victim's exit code")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(o);
  } catch (const CheckFailure& e) {
    std::fprintf(stderr, "prism-dist-selftest: FAILED: %s\n", e.what());
    return 1;
  } catch (const CLI::ValidationError& e) {
    std::fprintf(stderr, "prism-dist-selftest: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg = msg.substr(0, nl);
    std::fprintf(stderr, "prism-dist-selftest: error: %s\n", msg.c_str());
    return 3;
  }
}
