// The "tcp" backend: collectives over the c10d::TCPStore that rank 0 serves. For development and
// CPU tests (the torch wheel ships no gloo headers, build-and-libtorch.md §2): correct,
// deterministic and slow — every byte goes through one server process. Not for production.
//
// Protocol. Collectives get consecutive sequence numbers in issue order (the same on every rank,
// since every rank issues the same collectives in the same order). For collective #seq a rank
// `set`s its payload under `prism/<seq>/<slot>/<piece>` (slot "3": rank 3's contribution for all;
// slot "3>1": rank 3's chunk for rank 1), `wait`s — bounded by the timeout — for the peers' keys
// and reads them. Payloads are cut into pieces of at most kPieceBytes and requests batched to at
// most kBatchBytes, so message sizes stay bounded whatever the tensor size. Afterwards every rank
// increments `prism/<seq>/done`; the rank that brings it to world_size has seen everyone finish
// reading and deletes the collective's keys, so the store does not grow over a run.
//
// Determinism. A reduction gathers all W contributions and adds them in rank order 0..W-1 in the
// tensor's own dtype (bf16/fp16 round after every addition, like `a + b` would; integers are
// exact). Every rank performs the identical sequence of operations on identical bytes, so results
// are bit-identical across ranks and a 2-rank sum is exactly g0 + g1.
//
// Threads. Each communicator owns ONE worker thread that runs collectives in issue order (FIFO);
// that thread is the only user of the store client. The first failure (a timeout, a lost server)
// breaks the communicator: every later collective fails at once with that cause, because the
// ranks' sequence numbers can no longer be trusted to agree.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm_impl.h"
#include "prism/core/error.h"

namespace prism::distributed::detail {
namespace {

constexpr const char* kName = "dist(tcp)";
constexpr size_t kPieceBytes = size_t{16} << 20;  ///< largest single store value
constexpr size_t kBatchBytes = size_t{64} << 20;  ///< largest multiSet/multiGet request

std::string describe(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

/// Completion flag + error of one collective, set by the worker.
class TcpWork final : public Work {
 public:
  void wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }
  void finish(std::exception_ptr error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      error_ = std::move(error);
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

struct OpInfo {
  uint64_t seq = 0;
  const char* name = "";
};

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(const DistEnv& env, const CommOptions& opts)
      : TcpCommunicator(env, opts.timeout, connect_store(kName, env, opts.timeout), /*subgroup=*/false) {}

  /// `env` holds the group rank and size (master address and port for messages); a subgroup
  /// talks through its own connection to the same server, under its own key prefix.
  TcpCommunicator(const DistEnv& env, std::chrono::milliseconds timeout, c10::intrusive_ptr<c10d::Store> store,
                  bool subgroup)
      : env_(env), timeout_(timeout), store_(std::move(store)), subgroup_(subgroup) {
    worker_ = std::thread([this] { worker_loop(); });
  }

  ~TcpCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();  // drains the queue: issued collectives still complete (each bounded by the timeout)
    // A subgroup's server is the parent's: the parent's handshake covers it (subgroups die first).
    if (!subgroup_) store_goodbye(*store_, kName, env_, timeout_, /*clean=*/!broken_);
  }

  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend() const override { return "tcp"; }

  std::shared_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override {
    check_all_reduce(kName, tensor);
    check_cpu("all_reduce", tensor);
    return submit("all_reduce", [this, t = tensor.detach()](const OpInfo& op) { run_all_reduce(op, t); });
  }

  std::shared_ptr<Work> reduce_scatter_sum_async(const at::Tensor& input, const at::Tensor& output) override {
    check_reduce_scatter(kName, env_.world_size, input, output);
    check_cpu("reduce_scatter", input);
    return submit("reduce_scatter", [this, in = input.detach(), out = output.detach()](const OpInfo& op) {
      run_reduce_scatter(op, in, out);
    });
  }

  std::shared_ptr<Work> all_gather_async(const at::Tensor& input, const at::Tensor& output) override {
    check_all_gather(kName, env_.world_size, input, output);
    check_cpu("all_gather", input);
    return submit("all_gather", [this, in = input.detach(), out = output.detach()](const OpInfo& op) {
      run_all_gather(op, in, out);
    });
  }

  void broadcast(const at::Tensor& tensor, int root) override {
    check_broadcast(kName, env_.world_size, tensor, root);
    check_cpu("broadcast", tensor);
    submit("broadcast", [this, t = tensor.detach(), root](const OpInfo& op) { run_broadcast(op, t, root); })->wait();
  }

  void barrier() override {
    submit("barrier", [this](const OpInfo& op) { run_barrier(op); })->wait();
  }

 protected:
  std::unique_ptr<Communicator> make_subgroup(const std::vector<int>& members, int group_rank,
                                              const std::string& tag) override {
    DistEnv sub = env_;
    sub.rank = group_rank;
    sub.world_size = static_cast<int>(members.size());
    sub.local_rank = group_rank;
    sub.local_world_size = sub.world_size;
    // clone(): a new client connection, so the subgroup's worker never shares a socket with ours.
    auto store = c10::make_intrusive<c10d::PrefixStore>("prism/" + tag, store_->clone());
    return std::make_unique<TcpCommunicator>(sub, timeout_, std::move(store), /*subgroup=*/true);
  }

 private:
  struct Task {
    OpInfo op;
    std::function<void(const OpInfo&)> fn;
    std::shared_ptr<TcpWork> work;
  };
  struct Outgoing {
    std::string slot;
    const uint8_t* data;
    size_t nbytes;
  };
  struct Incoming {
    int src;
    std::string slot;
    uint8_t* data;
    size_t nbytes;
  };

  static void check_cpu(const char* op, const at::Tensor& t) {
    PRISM_CHECK(t.device().is_cpu(), kName, ": ", op, ": tensor is on ", t.device(),
                ", but the tcp backend moves CPU tensors only (use backend 'nccl' for CUDA tensors)");
  }

  std::shared_ptr<Work> submit(const char* name, std::function<void(const OpInfo&)> fn) {
    auto work = std::make_shared<TcpWork>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(Task{OpInfo{next_seq_++, name}, std::move(fn), work});
    }
    cv_.notify_all();
    return work;
  }

  void worker_loop() {
    // Collectives write into tensors that may belong to autograd graphs (gradients of leaves):
    // never record them.
    c10::AutoGradMode no_grad(false);
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      std::exception_ptr error;
      if (broken_) {
        error = std::make_exception_ptr(Error(prism::str(kName, ": collective #", task.op.seq, " (", task.op.name,
                                                         ") not run: an earlier collective failed: ", first_error_)));
      } else {
        try {
          task.fn(task.op);
        } catch (const Error& e) {
          error = std::current_exception();
          first_error_ = e.what();
        } catch (const std::exception& e) {
          first_error_ =
              prism::str(kName, ": collective #", task.op.seq, " (", task.op.name, ") failed: ", describe(e));
          error = std::make_exception_ptr(Error(first_error_));
        }
        broken_ = error != nullptr;
      }
      task.work->finish(error);
    }
  }

  // ---- store protocol (worker thread only) ----

  static std::string slot_all(int src) { return std::to_string(src); }
  static std::string slot_to(int src, int dst) { return std::to_string(src) + ">" + std::to_string(dst); }

  /// Piece keys of payload `slot` of collective `seq` (at least one, so empty payloads still signal).
  static std::vector<std::string> piece_keys(uint64_t seq, const std::string& slot, size_t nbytes) {
    const size_t n = std::max<size_t>(1, (nbytes + kPieceBytes - 1) / kPieceBytes);
    std::vector<std::string> keys;
    keys.reserve(n);
    for (size_t i = 0; i < n; ++i) keys.push_back(prism::str("prism/", seq, "/", slot, "/", i));
    return keys;
  }

  [[noreturn]] void throw_lost_server(const OpInfo& op, const std::exception& e) const {
    throw Error(prism::str(kName, ": rank ", env_.rank, " lost the connection to the store served by rank 0 at ",
                           env_.master_addr, ":", env_.master_port, " during collective #", op.seq, " (", op.name,
                           ") — rank 0 probably died: ", describe(e)));
  }

  void post(const OpInfo& op, const std::vector<Outgoing>& out) {
    std::vector<std::string> keys;
    std::vector<std::vector<uint8_t>> values;
    size_t batch = 0;
    auto flush = [&] {
      if (keys.empty()) return;
      try {
        store_->multiSet(keys, values);
      } catch (const std::exception& e) {
        throw_lost_server(op, e);
      }
      keys.clear();
      values.clear();
      batch = 0;
    };
    for (const auto& o : out) {
      const auto ks = piece_keys(op.seq, o.slot, o.nbytes);
      for (size_t i = 0; i < ks.size(); ++i) {
        const size_t begin = i * kPieceBytes, len = std::min(kPieceBytes, o.nbytes - std::min(o.nbytes, begin));
        if (batch + len > kBatchBytes) flush();
        keys.push_back(ks[i]);
        values.emplace_back(o.data + begin, o.data + begin + len);
        batch += len;
      }
    }
    flush();
  }

  void fetch(const OpInfo& op, const std::vector<Incoming>& in) {
    struct Piece {
      std::string key;
      int src;
      uint8_t* dst;
      size_t len;
    };
    std::vector<Piece> pieces;
    for (const auto& p : in) {
      const auto ks = piece_keys(op.seq, p.slot, p.nbytes);
      for (size_t i = 0; i < ks.size(); ++i) {
        const size_t begin = i * kPieceBytes, len = std::min(kPieceBytes, p.nbytes - std::min(p.nbytes, begin));
        pieces.push_back(Piece{ks[i], p.src, p.data + begin, len});
      }
    }
    if (pieces.empty()) return;
    std::vector<std::string> all;
    for (const auto& p : pieces) all.push_back(p.key);
    try {
      store_->wait(all, timeout_);
    } catch (const std::exception& e) {
      report_missing(
          op, pieces.size(), [&](size_t i) { return std::make_pair(pieces[i].key, pieces[i].src); }, e);
    }
    for (size_t first = 0; first < pieces.size();) {
      size_t last = first, batch = 0;
      std::vector<std::string> keys;
      while (last < pieces.size() && (keys.empty() || batch + pieces[last].len <= kBatchBytes)) {
        keys.push_back(pieces[last].key);
        batch += pieces[last].len;
        ++last;
      }
      std::vector<std::vector<uint8_t>> values;
      try {
        values = store_->multiGet(keys);
      } catch (const std::exception& e) {
        throw_lost_server(op, e);
      }
      for (size_t i = first; i < last; ++i) {
        const auto& v = values[i - first];
        PRISM_CHECK(v.size() == pieces[i].len, kName, ": rank ", pieces[i].src, " sent ", v.size(), " bytes for ",
                    pieces[i].key, " of collective #", op.seq, " (", op.name, "), expected ", pieces[i].len,
                    " — ranks issued different collectives or shapes (every rank must issue the same sequence)");
        if (pieces[i].len) std::memcpy(pieces[i].dst, v.data(), pieces[i].len);
      }
      first = last;
    }
  }

  /// After a failed wait: names the ranks whose keys are missing, or reports a lost server.
  /// Returns normally only if everything arrived after all (just after the deadline).
  template <typename KeyAt>
  void report_missing(const OpInfo& op, size_t num_keys, KeyAt key_at, const std::exception& cause) {
    std::vector<int> missing;
    try {
      for (size_t i = 0; i < num_keys; ++i) {
        auto [key, src] = key_at(i);
        if (std::find(missing.begin(), missing.end(), src) != missing.end()) continue;
        if (!store_->check({key})) missing.push_back(src);
      }
    } catch (const std::exception& e) {
      throw_lost_server(op, e);
    }
    if (missing.empty()) return;
    std::sort(missing.begin(), missing.end());
    std::string who = missing.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < missing.size(); ++i) who += (i ? ", " : "") + std::to_string(missing[i]);
    throw Error(prism::str(kName, ": ", who, " did not deliver collective #", op.seq, " (", op.name, ") within ",
                           format_seconds(timeout_), " — a rank probably died or hung (seen by rank ", env_.rank,
                           "; store: ", describe(cause), ")"));
  }

  /// Every rank calls this once it has read everything; the last one deletes the keys.
  void retire(const OpInfo& op, const std::vector<std::string>& keys) {
    const std::string done = prism::str("prism/", op.seq, "/done");
    try {
      if (store_->add(done, 1) < env_.world_size) return;
      for (const auto& k : keys) store_->deleteKey(k);
      store_->deleteKey(done);
    } catch (const std::exception& e) {
      throw_lost_server(op, e);
    }
  }

  std::vector<std::string> keys_of(uint64_t seq, const std::vector<std::string>& slots, size_t nbytes) const {
    std::vector<std::string> keys;
    for (const auto& s : slots) {
      auto k = piece_keys(seq, s, nbytes);
      keys.insert(keys.end(), k.begin(), k.end());
    }
    return keys;
  }

  // ---- collectives (worker thread only) ----

  /// Gathers every rank's `nbytes` payload of slot_all(rank) into rows of `rows` (row r = rank r),
  /// `mine` being this rank's contribution. Returns the keys to retire.
  void exchange_all(const OpInfo& op, const uint8_t* mine, uint8_t* rows, size_t nbytes) {
    const int W = env_.world_size, me = env_.rank;
    post(op, {Outgoing{slot_all(me), mine, nbytes}});
    if (nbytes && rows + me * nbytes != mine) std::memmove(rows + me * nbytes, mine, nbytes);
    std::vector<Incoming> in;
    std::vector<std::string> slots;
    for (int s = 0; s < W; ++s) {
      slots.push_back(slot_all(s));
      if (s != me) in.push_back(Incoming{s, slot_all(s), rows + s * nbytes, nbytes});
    }
    fetch(op, in);
    retire(op, keys_of(op.seq, slots, nbytes));
  }

  /// out = rows[0] + rows[1] + ... in rank order (see the determinism note at the top).
  static void sum_rows(const at::Tensor& rows, const at::Tensor& out) {
    auto flat = out.view({-1});
    flat.copy_(rows[0]);
    for (int64_t r = 1; r < rows.size(0); ++r) flat.add_(rows[r]);
  }

  void run_all_reduce(const OpInfo& op, const at::Tensor& t) {
    auto rows = at::empty({env_.world_size, t.numel()}, t.options());
    exchange_all(op, static_cast<const uint8_t*>(t.data_ptr()), static_cast<uint8_t*>(rows.data_ptr()), t.nbytes());
    sum_rows(rows, t);
  }

  void run_all_gather(const OpInfo& op, const at::Tensor& input, const at::Tensor& output) {
    exchange_all(op, static_cast<const uint8_t*>(input.data_ptr()), static_cast<uint8_t*>(output.data_ptr()),
                 input.nbytes());
  }

  void run_reduce_scatter(const OpInfo& op, const at::Tensor& input, const at::Tensor& output) {
    const int W = env_.world_size, me = env_.rank;
    const size_t nb = output.nbytes();
    const auto* src = static_cast<const uint8_t*>(input.data_ptr());
    auto rows = at::empty({W, output.numel()}, output.options());
    auto* g = static_cast<uint8_t*>(rows.data_ptr());
    std::vector<Outgoing> out;
    for (int d = 0; d < W; ++d) {
      if (d != me) out.push_back(Outgoing{slot_to(me, d), src + d * nb, nb});
    }
    post(op, out);
    if (nb) std::memcpy(g + me * nb, src + me * nb, nb);  // before `output` (which may alias input) is written
    std::vector<Incoming> in;
    std::vector<std::string> slots;
    for (int s = 0; s < W; ++s) {
      if (s != me) in.push_back(Incoming{s, slot_to(s, me), g + s * nb, nb});
      for (int d = 0; d < W; ++d) {
        if (d != s) slots.push_back(slot_to(s, d));
      }
    }
    fetch(op, in);
    retire(op, keys_of(op.seq, slots, nb));
    sum_rows(rows, output);
  }

  void run_broadcast(const OpInfo& op, const at::Tensor& t, int root) {
    auto* data = static_cast<uint8_t*>(t.data_ptr());
    if (env_.rank == root) {
      post(op, {Outgoing{slot_all(root), data, t.nbytes()}});
    } else {
      fetch(op, {Incoming{root, slot_all(root), data, t.nbytes()}});
    }
    retire(op, keys_of(op.seq, {slot_all(root)}, t.nbytes()));
  }

  void run_barrier(const OpInfo& op) { exchange_all(op, nullptr, nullptr, 0); }

  DistEnv env_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  bool subgroup_ = false;

  std::mutex mu_;  // guards queue_, stop_, next_seq_
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  uint64_t next_seq_ = 0;

  // Worker-thread state (read by the destructor only after join()).
  bool broken_ = false;
  std::string first_error_;
  std::thread worker_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp(const DistEnv& env, const CommOptions& opts) {
  return std::make_unique<TcpCommunicator>(env, opts);
}

}  // namespace prism::distributed::detail
