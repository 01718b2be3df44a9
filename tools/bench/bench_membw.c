// Memory read bandwidth: the physical bound of batch-1 decoding, which streams every weight once
// per token (tokens/s <= read bandwidth / weight bytes). Used by tools/bench/run_generate_bench.sh.
//
//   cc -O3 -march=native -fopenmp tools/bench/bench_membw.c -o membw && ./membw [MiB] [threads] [reps]
//
// Reads a buffer far larger than the caches (default 1024 MiB) with `threads` OpenMP threads, each
// summing its contiguous slice with 32 independent accumulators (so the loop is load-bound, not
// add-latency-bound); best of `reps` passes after one warm-up pass that also faults the pages in.
// Prints one JSON line: {"read_gb_per_s": ..., "mib": ..., "threads": ..., "reps": ...} (GB = 1e9 B).
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

// Independent accumulators: 32 doubles = 4 AVX-512 (8 AVX2) vectors, enough to hide the add latency.
enum { W = 32 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
  const int threads = argc > 2 ? atoi(argv[2]) : omp_get_max_threads();
  const int reps = argc > 3 ? atoi(argv[3]) : 5;
  const size_t n = mib * (1u << 20) / sizeof(double);
  double* a = aligned_alloc(64, n * sizeof(double));
  if (!a || threads < 1 || reps < 1) {
    fprintf(stderr, "membw: error: cannot allocate %zu MiB or bad arguments\n", mib);
    return 1;
  }
  omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) a[i] = (double)(i & 1023);
  double best = 1e30, sink = 0.0;
  for (int r = 0; r <= reps; ++r) {
    double t0 = now(), total = 0.0;
#pragma omp parallel reduction(+ : total)
    {
      double s[W] = {0};
#pragma omp for schedule(static)
      for (size_t i = 0; i < n / W; ++i)
        for (int k = 0; k < W; ++k) s[k] += a[W * i + k];
      for (int k = 0; k < W; ++k) total += s[k];
    }
    double dt = now() - t0;
    sink += total;
    if (r > 0 && dt < best) best = dt;  // r == 0 is the warm-up
  }
  printf("{\"read_gb_per_s\": %.2f, \"mib\": %zu, \"threads\": %d, \"reps\": %d, \"checksum\": %.0f}\n",
         (double)(n / W * W) * sizeof(double) / best / 1e9, mib, threads, reps, sink);
  free(a);
  return 0;
}
