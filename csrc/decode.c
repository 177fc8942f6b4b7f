/* decode.c: the decoding entry points of fastlm.h (filters, greedy, the sampler, the beam step) for one
 * dtype. CMake compiles this file once with FL_DTYPE=32 and once with FL_DTYPE=64 (dtype.h); the
 * families below call one another's static functions, so they form one translation unit, included in
 * the order they use each other. Baseline C; the vector passes are select_simd.c's, through the table of
 * the active SIMD level (SIMD->name). The algorithms: csrc/README.md, "Decoding". */
#include "decode.h"

#include "decode_rows.c"      /* per-thread scratch, the row check, rows in parallel */
#include "decode_select.c"    /* exact selection without sorting */
#include "decode_topp_flat.c" /* the row sketch; top-p of flat rows in one pass over a band */
#include "decode_topp.c"      /* top-p candidates and cut */
#include "decode_filters.c"   /* top-k, top-p, min-p, typical filters: fl_*_filter_* */
#include "decode_sample.c"    /* greedy and the fused sampler: fl_greedy_*, fl_sample_* */
#include "decode_beam.c"      /* one beam-search step: fl_beam_step_* */
