/* decode.h: internal. The types and tuning constants shared by the decoding families (decode_*.c), which
 * decode.c compiles as one unit per dtype (dtype.h: FL_T). The algorithms are written up in csrc/README.md
 * ("Decoding"). */
#ifndef FASTLM_DECODE_H
#define FASTLM_DECODE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dtype.h"

/* ---------------------------------------------------------------------- tuning constants, in one place */
/* Exact selection (decode_select.c) */
#define FL_HBITS 11                /* bits per histogram level: 2048 buckets */
#define FL_HSIZE (1 << FL_HBITS)
#define FL_SORT_MAX 64             /* a last bucket this small is insertion-sorted */
#define FL_NARROW_MIN 2048         /* weighted selections over more values first narrow by band masses */
/* Relative margin between two float sums of the same weights taken in different orders (band_masses,
 * exp_band's lanes, exp_candidates' groups: relative error below 4e-6 in float32); a decision taken on
 * such a sum holds only beyond the margin, else the exact path runs. */
#define FL_SUM_MARGIN 1e-5
#define FL_CAND_MARGIN 1e-6        /* the same for the top-p candidates' own sum against the row's */
/* Top-p (decode_topp.c): candidates are the logits >= max - FL_TOPP_TIER1 T (weights >= e^-10), then, if
 * they hold less than p, a second tier guessed from the row's sketch (else max - FL_TOPP_TIER2 T), then
 * every finite logit. */
#define FL_TOPP_TIER1 10
#define FL_TOPP_TIER2 18
/* The output pass (decode_filters.c): with at most n / FL_FEW_CAND candidates and n / FL_FEW_KEPT kept
 * tokens, the row is filled and the kept ones written back instead of a vector pass over the row. */
#define FL_FEW_CAND 16
#define FL_FEW_KEPT 64
#define FL_DRAW_BLOCK 512          /* the draw sums kept weights per block of this many candidates */
/* Flat rows (decode_topp_flat.c) */
#define FL_SAMPLE_STRIDE 32        /* the sketch reads one logit in 32: runs of 16 from each 512 */
#define FL_SKETCH_RANGE 20         /* the sketch's bins cover [max - 20 T, max] */
#define FL_QBINS 1024              /* its bins */
#define FL_FLAT_NEFF 50            /* effective sampled tokens, (sum w)^2 / sum w^2, for a row to be flat */
#define FL_FLAT_MIN 4096           /* tokens at or above the guessed band, estimated from the sample */
#define FL_BAND_SIGMAS 4.5         /* the band: p -+ this many standard errors of the sampled fraction */
#define FL_MINP_MARGIN 1e-3        /* min-p's candidates reach this far (in T) below its own bound */

/* ------------------------------------------------------------------------------------------- types */
/* A token of a selection: value, weight, row index. */
typedef struct {
    FL_T v;
    double w;
    int64_t i;
} item;

/* A prefix of the order (value desc, index asc): a token (x, j) is kept iff x > v, or x == v and (ties or
 * j <= i). */
typedef struct {
    FL_T v;
    int64_t i;
    int ties;      /* every token equal to v is kept */
    int64_t count; /* tokens kept */
    double weight; /* their weight (NaN where not computed) */
    int64_t cand;  /* > 0: every kept token is among the candidates s->idx / s->vals [0, cand) */
} cut;

static inline int cut_keeps(const cut *c, FL_T x, int64_t j) {
    return x > c->v || (x == c->v && (c->ties || j <= c->i));
}
/* For the kernels apply_cut and kept_sum over an array whose first entry has index `first`: the
 * tokens equal to the cut value are kept before this place. */
static inline int64_t cut_split(const cut *c, int64_t first) { return c->ties ? INT64_MAX : c->i + 1 - first; }

/* Every token kept (n of them, of the given weight). */
static inline cut cut_all(int64_t n, double weight) {
    cut c = {(FL_T)-INFINITY, 0, 1, n, weight, 0};
    return c;
}

/* 1/T in T's precision, kept finite and > 0: a huge T gives uniform weights over the finite logits, a
 * tiny one (below what Python accepts) the greedy limit. */
static inline FL_T inv_temperature(double it) {
    const FL_T t = (FL_T)it;
    return t > 0 ? (t < FL_MAX ? t : FL_MAX) : FL_TINY;
}

/* xmax + d (d <= 0) as a threshold on x, at least the lowest finite value. */
static inline FL_T below(double xmax, double d) {
    const double t = xmax + d;
    return (FL_T)(t > -FL_MAX ? t : -FL_MAX);
}

/* Scratch of one thread, carved from fl_scratch (decode_rows.c); arrays of a row's length n + 16 unless
 * said otherwise. */
typedef struct {
    FL_T *p, *v, *vals, *wts;
    FL_T *bmax;      /* the max of x per block of FL_BMAX_BLOCK (top-p); n / FL_BMAX_BLOCK + 1 entries */
    double *bup;     /* per block: the weight above the band (flat top-p), or the draw's block sums */
    int32_t *bfirst; /* per block: the band's tokens before it */
    int32_t *idx;    /* candidate indices (rows are < 2^31 long) */
    int32_t *pos;    /* two arrays: positions of the bands of select_weighted */
    uint16_t *bk;    /* first-level bucket of each value in select_hist */
    item *items;
    void *base;
    size_t bytes;
} scratch;

#endif
