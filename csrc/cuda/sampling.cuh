// CUDA launchers for the sampling kernels: raw pointers and a stream in, cudaError_t out.  No torch here.
//
// Each launcher needs a device workspace of workspace_bytes(rows, V, reads_tiles) bytes (reads_tiles: the op
// summarizes rows, i.e. temperature > 0 or sample_scored; bounded whatever the row count: blocks stride over rows) and a device status word that the caller
// sets to kStatusClear (status.h); a failing row leaves (row << 8 | code) there, the lowest such row winning.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "../common/filter.h"
#include "../common/status.h"
#include "../common/types.h"
#include "../common/verify.h"

namespace edlm {
namespace cuda {

size_t workspace_bytes(int64_t rows, int64_t V, bool reads_tiles);

template <typename T>
cudaError_t categorical(Logits3<T> logits, int64_t num_samples, RngArgs rng, double temperature, FilterArgs filter,
                        const int64_t* excl, int64_t n_excl, Precision precision, int64_t* tokens, double* logp,
                        void* workspace, unsigned long long* status, cudaStream_t stream);

template <typename T>
cudaError_t sample_masked(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, const double* p_unmask,
                          RngArgs rng, double temperature, FilterArgs filter, Precision precision, int64_t* x_s,
                          void* workspace, unsigned long long* status, cudaStream_t stream);

// logp_ws: rows * k doubles of scratch for the per-position log-probabilities.
template <typename T>
cudaError_t sample_candidates(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                              double temperature, FilterArgs filter, Precision precision, int64_t* x0,
                              double* log_q, double* logp_ws, void* workspace, unsigned long long* status,
                              cudaStream_t stream);

// tokens [rows] (unmasked positions copied); scores [4, rows]: p_draw, p_top1, p_top2, entropy (0, 0, 0, +inf where not read).
// argmax [rows]: the first index of each read row's largest drawable logit.
template <typename T>
cudaError_t sample_scored(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, RngArgs rng, double temperature,
                          FilterArgs filter, int64_t* tokens, double* scores, int64_t* argmax, void* workspace,
                          unsigned long long* status, cudaStream_t stream);

cudaError_t importance_resample(const double* energies, int64_t B, int64_t k, RngArgs rng, double temperature,
                                int64_t* index, double* ess, unsigned long long* status, cudaStream_t stream);

cudaError_t uniform(int64_t n, RngArgs rng, double* out, cudaStream_t stream);

size_t verify_workspace_bytes(int64_t rows, int64_t V, int64_t Va);

// One block per particle (verify.h); workspace: verify_workspace_bytes(rows, V, Va).
template <typename T>
cudaError_t speculative_verify(const VerifyArgs<T>& args, RngArgs rng, VerifyOut out, void* workspace,
                               unsigned long long* status, cudaStream_t stream);

}  // namespace cuda
}  // namespace edlm
