// Plain argument structs shared by the CPU and CUDA kernels and the bindings.
#pragma once

#include <stdint.h>

#include "macros.h"
#include "row_sampler.h"
#include "status.h"

namespace edlm {

enum class Precision : int32_t { kFP64 = 0, kFP32Gumbel = 1 };

// Strided view of [B, L, V] (or [R, 1, V]) logits whose last dimension is contiguous.
template <typename T>
struct Logits3 {
  const T* data;
  int64_t B, L, V;
  int64_t stride_b, stride_l;
  EDLM_HD const T* row(int64_t b, int64_t l) const { return data + b * stride_b + l * stride_l; }
};

// Row r of a [B, L, V] batch at a temperature (0 is the argmax, which reads z at temperature 1).
template <typename T>
EDLM_HD RowInput<T> row_input(const Logits3<T>& lg, int64_t r, double temperature, const int64_t* excl,
                              int64_t n_excl) {
  return RowInput<T>{lg.row(r / lg.L, r % lg.L), lg.V, temperature > 0 ? 1.0 / temperature : 1.0, excl, n_excl};
}

struct RngArgs {
  uint64_t seed;
  uint64_t offset;
  uint64_t row_offset;  // global index of the first row, so a batch split does not change any draw
};

}  // namespace edlm
