/* dispatch.h: internal. The per-SIMD-level kernel tables and the active one. */
#ifndef FASTLM_DISPATCH_H
#define FASTLM_DISPATCH_H

#include "fastlm.h"

/* The kernel tables: one per SIMD level and dtype, each filled in its level's *_simd.c unit by name
 * (designated initializers). FL_*_KERNELS(T) is the table's layout for element type T. */

/* Row kernels of the softmax family (softmax_simd.c); arguments already checked by softmax.c.
 * xent: class_weight_sum = sum_c w_c (cols when unweighted), grad_scale = s of fastlm.h. */
#define FL_SOFTMAX_KERNELS(T)                                                                            \
    struct {                                                                                             \
        int (*logsumexp)(const T *x, const fl_rows *r, double inv_t, double *out);                       \
        int (*softmax)(const T *x, T *y, const fl_rows *r, double inv_t, int log);                       \
        int (*xent)(const T *x, T *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,       \
                    double grad_scale);                                                                  \
        int (*entropy)(const T *x, const fl_rows *r, double *out);                                       \
        int (*kl)(const T *p, const T *q, const fl_rows *r, double *out);                                \
        int (*temperature_stats)(const T *x, const fl_rows *r, const int64_t *y, const double *xmax,     \
                                 double beta, double *nll, double *g, double *v);                        \
        void (*bf16_to_f32)(const uint16_t *h, float *f, int64_t n);                                     \
        void (*f32_to_bf16)(const float *f, uint16_t *h, int64_t n);                                     \
    }
typedef FL_SOFTMAX_KERNELS(float) fl_softmax_kernels_f32;
typedef FL_SOFTMAX_KERNELS(double) fl_softmax_kernels_f64;

/* Vector passes of decoding (select_simd.c; each is described there). */
#define FL_BMAX_BLOCK 256 /* blocks of exp_candidates' max and of exp_band's weight above the band */
#define FL_BANDS 8        /* thresholds of band_masses */
#define FL_SELECT_KERNELS(T)                                                                             \
    struct {                                                                                             \
        T (*row_max)(const T *x, int64_t n);                                                             \
        T (*row_max_nan)(const T *x, int64_t n, int *nan);                                               \
        int64_t (*argmax)(const T *x, int64_t n, T max);                                                 \
        T (*chunk_bound)(const T *x, int64_t n, int64_t chunks);                                         \
        double (*exp_weights)(const T *x, int64_t n, T m, T it, T *e);                                   \
        double (*exp_candidates)(const T *x, int64_t n, T m, T it, T tau, int32_t *idx, T *vals, T *wts, \
                                 int64_t *count, T *bmax);                                               \
        double (*exp_band)(const T *x, int64_t n, T m, T it, T a, T b, T *vals, int64_t *count,          \
                           double *bup, int32_t *bfirst);                                                \
        int64_t (*count_ge)(const T *v, int64_t n, T tau);                                               \
        int64_t (*collect_ge)(const T *v, int64_t n, T tau, int32_t *idx, T *vals);                      \
        void (*apply_cut)(const T *x, const T *v, T *y, int64_t n, T cv, int64_t split, T fill);         \
        void (*buckets)(const T *v, int64_t n, double lo, double scale, uint16_t *bk);                   \
        void (*band_masses)(const T *v, const T *w, int64_t n, const T *t, double *mass);                \
        int64_t (*collect_band)(const T *v, const T *w, int64_t n, T a, T b, int32_t *pos, T *ov, T *ow, \
                                double *above, int64_t *count_above);                                    \
        double (*kept_sum)(const T *v, const T *q, int64_t n, T cv, int64_t split, T thr);               \
    }
typedef FL_SELECT_KERNELS(float) fl_select_kernels_f32;
typedef FL_SELECT_KERNELS(double) fl_select_kernels_f64;

/* The tables of one SIMD level. */
typedef struct {
    const fl_softmax_kernels_f32 *softmax_f32;
    const fl_softmax_kernels_f64 *softmax_f64;
    const fl_select_kernels_f32 *select_f32;
    const fl_select_kernels_f64 *select_f64;
} fl_level_kernels;

#define FL_LEVEL_TABLES(level)                                                                           \
    extern const fl_softmax_kernels_f32 fl_softmax_f32_##level;                                          \
    extern const fl_softmax_kernels_f64 fl_softmax_f64_##level;                                          \
    extern const fl_select_kernels_f32 fl_select_f32_##level;                                            \
    extern const fl_select_kernels_f64 fl_select_f64_##level;
FL_LEVEL_TABLES(scalar)
FL_LEVEL_TABLES(avx2)
FL_LEVEL_TABLES(avx512)
FL_LEVEL_TABLES(neon)

/* The kernels of the active level (chosen once at load, or by fl_simd_select). */
const fl_level_kernels *fl_active(void);

/* A logit this far below its row's max (or log-sum-exp) has probability 0 in float64 (e^-745 underflows). */
#define FL_P0_GAP 745

/* Per-thread scratch memory of at least `bytes`, kept for the calling thread between calls (up to
 * FL_SCRATCH_CACHE bytes; larger requests, and requests made while the thread's block is still out,
 * are allocated anew). NULL when out of memory. Valid until fl_scratch_release, which every call
 * must be paired with. */
#define FL_SCRATCH_CACHE ((size_t)64 << 20)
void *fl_scratch(size_t bytes);
void fl_scratch_release(void *p, size_t bytes);

/* A row layout is valid: non-negative sizes, rows that do not overlap. */
static inline int fl_rows_ok(const fl_rows *r, int has_output) {
    if (!r || r->rows < 0 || r->cols < 0) return 0;
    if (r->rows > 1 && r->x_stride < r->cols) return 0;
    if (has_output && r->rows > 1 && r->y_stride < r->cols) return 0;
    return 1;
}

/* Rows run in parallel when threads are asked for and there is enough work to pay for them. */
#define FL_PARALLEL_MIN_ELEMS 32768
static inline int fl_threads_for(const fl_rows *r) {
    return (r->num_threads > 1 && r->rows > 1 && r->rows * r->cols >= FL_PARALLEL_MIN_ELEMS) ? r->num_threads : 1;
}

#endif
