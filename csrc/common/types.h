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

struct RngArgs {
  uint64_t seed;
  uint64_t offset;
  uint64_t row_offset;  // global index of the first row, so a batch split does not change any draw
};

}  // namespace edlm
