// CPU sampling kernels: raw pointers in, a status out.  No torch here.
#pragma once

#include <stdint.h>

#include "../common/filter.h"
#include "../common/types.h"

namespace edlm {

namespace cpu {

// tokens/logp: [rows, num_samples]; excl: sorted ids, duplicates allowed; an id outside [0, V) is kBadExclude.
template <typename T>
Status categorical(Logits3<T> logits, int64_t num_samples, RngArgs rng, double temperature, const FilterArgs& f,
                   const int64_t* excl, int64_t n_excl, Precision precision, int64_t* tokens, double* logp);

// x_t, x_s: [B, L] contiguous; p_unmask: [B].
template <typename T>
Status sample_masked(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, const double* p_unmask,
                     RngArgs rng, double temperature, const FilterArgs& f, Precision precision, int64_t* x_s);

// x0: [k, B, L]; log_q: [k, B].
template <typename T>
Status sample_candidates(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                         double temperature, const FilterArgs& f, Precision precision, int64_t* x0, double* log_q);

// One draw per masked position of x_t (every position when mask_id is -1, nothing excluded then) with the scores of
// its filtered distribution (filter.h): tokens [B, L]
// (other positions copied), scores [4, B, L] = p_draw, p_top1, p_top2, entropy (0, 0, 0, +inf where not masked).
// argmax [B, L]: the first index of each read row's largest drawable logit (the draw at temperature 0).
template <typename T>
Status sample_scored(Logits3<T> logits, const int64_t* x_t, int64_t mask_id, RngArgs rng, double temperature,
                     const FilterArgs& f, int64_t* tokens, double* scores, int64_t* argmax);

// energies: [B, k] contiguous float64; index, ess: [B].
Status importance_resample(const double* energies, int64_t B, int64_t k, RngArgs rng, double temperature,
                           int64_t* index, double* ess);

// out[r] = the 53-bit uniform of global row row_offset + r: words 2,3 of its sub-stream-0 block, the same
// number sample_masked compares with p_unmask.
void uniform(int64_t n, RngArgs rng, double* out);

int max_threads();

}  // namespace cpu
}  // namespace edlm
