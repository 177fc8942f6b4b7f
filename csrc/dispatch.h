/* dispatch.h: internal. The per-SIMD-level kernel tables and the active one. */
#ifndef FASTLM_DISPATCH_H
#define FASTLM_DISPATCH_H

#include "fastlm.h"

/* Row kernels of the softmax family (softmax_simd.c); arguments already checked by softmax.c.
 * xent: class_weight_sum = sum_c w_c (cols when unweighted), grad_scale = s of fastlm.h. */
typedef struct {
    int (*logsumexp_f32)(const float *x, const fl_rows *r, double inv_t, double *out);
    int (*logsumexp_f64)(const double *x, const fl_rows *r, double inv_t, double *out);
    int (*softmax_f32)(const float *x, float *y, const fl_rows *r, double inv_t, int log);
    int (*softmax_f64)(const double *x, double *y, const fl_rows *r, double inv_t, int log);
    int (*xent_f32)(const float *x, float *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                    double grad_scale);
    int (*xent_f64)(const double *x, double *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                    double grad_scale);
    int (*entropy_f32)(const float *x, const fl_rows *r, double *out);
    int (*entropy_f64)(const double *x, const fl_rows *r, double *out);
    int (*kl_f32)(const float *p, const float *q, const fl_rows *r, double *out);
    int (*kl_f64)(const double *p, const double *q, const fl_rows *r, double *out);
    int (*tstats_f32)(const float *x, const fl_rows *r, const int64_t *y, const double *xmax, double beta,
                      double *nll, double *g, double *v);
    int (*tstats_f64)(const double *x, const fl_rows *r, const int64_t *y, const double *xmax, double beta,
                      double *nll, double *g, double *v);
} fl_softmax_kernels;

extern const fl_softmax_kernels fl_softmax_kernels_scalar;
extern const fl_softmax_kernels fl_softmax_kernels_avx2;
extern const fl_softmax_kernels fl_softmax_kernels_avx512;
extern const fl_softmax_kernels fl_softmax_kernels_neon;

/* Vector passes of decoding (select_simd.c). */
#define FL_BMAX_BLOCK 256 /* blocks of exp_collect's max and of exp_band's weight above the band */
#define FL_BANDS 8         /* thresholds of band_masses */
typedef struct {
    float (*max_f32)(const float *x, int64_t n);
    double (*max_f64)(const double *x, int64_t n);
    float (*max_nan_f32)(const float *x, int64_t n, int *nan);
    double (*max_nan_f64)(const double *x, int64_t n, int *nan);
    int64_t (*argmax_f32)(const float *x, int64_t n, float max); /* max: the row's max */
    int64_t (*argmax_f64)(const double *x, int64_t n, double max);
    float (*chunk_bound_f32)(const float *x, int64_t n, int64_t chunks);
    double (*chunk_bound_f64)(const double *x, int64_t n, int64_t chunks);
    double (*exp_collect_f32)(const float *x, int64_t n, float m, float it, float *e, float tau, int32_t *idx,
                              float *vals, float *wts, int64_t *count, float *bmax);
    double (*exp_collect_f64)(const double *x, int64_t n, double m, double it, double *e, double tau,
                              int32_t *idx, double *vals, double *wts, int64_t *count, double *bmax);
    double (*exp_band_f32)(const float *x, int64_t n, float m, float it, float a, float b, float *vals,
                           int64_t *count, double *bup, int32_t *bfirst);
    double (*exp_band_f64)(const double *x, int64_t n, double m, double it, double a, double b, double *vals,
                           int64_t *count, double *bup, int32_t *bfirst);
    int64_t (*collect_ge_f32)(const float *v, int64_t n, float tau, int32_t *idx, const float *xa, float *a,
                              const float *xb, float *b);
    int64_t (*collect_ge_f64)(const double *v, int64_t n, double tau, int32_t *idx, const double *xa, double *a,
                              const double *xb, double *b);
    void (*apply_cut_f32)(const float *x, const float *v, float *y, int64_t n, float cv, int64_t ci, float fill);
    void (*apply_cut_f64)(const double *x, const double *v, double *y, int64_t n, double cv, int64_t ci,
                          double fill);
    void (*buckets_f32)(const float *v, int64_t n, double lo, double scale, uint16_t *bk);
    void (*buckets_f64)(const double *v, int64_t n, double lo, double scale, uint16_t *bk);
    void (*band_masses_f32)(const float *v, const float *w, int64_t n, const float *t, double *mass);
    void (*band_masses_f64)(const double *v, const double *w, int64_t n, const double *t, double *mass);
    int64_t (*collect_band_f32)(const float *v, const float *w, int64_t n, float a, float b, int32_t *pos, float *ov,
                                float *ow, double *above, int64_t *count_above);
    int64_t (*collect_band_f64)(const double *v, const double *w, int64_t n, double a, double b, int32_t *pos,
                                double *ov, double *ow, double *above, int64_t *count_above);
    double (*kept_sum_f32)(const float *v, const float *q, int64_t n, float cv, int64_t split, float thr);
    double (*kept_sum_f64)(const double *v, const double *q, int64_t n, double cv, int64_t split, double thr);
} fl_select_kernels;

extern const fl_select_kernels fl_select_kernels_scalar;
extern const fl_select_kernels fl_select_kernels_avx2;
extern const fl_select_kernels fl_select_kernels_avx512;
extern const fl_select_kernels fl_select_kernels_neon;

/* The kernels of the active level (chosen once at load, or by fl_simd_select). */
const fl_softmax_kernels *fl_softmax_active(void);
const fl_select_kernels *fl_select_active(void);

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
