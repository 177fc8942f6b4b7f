/* fastlm C API: fused kernels for language-model probability math.
 *
 * Conventions
 *   - Raw pointers, 64-bit sizes and strides (strides in elements, not bytes).
 *   - A matrix is `rows` x `cols` with the class axis (cols) contiguous and rows `stride` elements apart.
 *   - Every entry point returns an fl_status; arguments are checked before anything is written.
 *   - No allocation inside kernels; no Python.
 *   - Results are bitwise identical for any num_threads: rows are independent, reductions over rows
 *     are serial in row order, in float64.
 *
 * Precision (float32 path; the float64 path is about 1e-15 relative throughout)
 *   - exp: range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial, <= 2 ulp for x in [-87, 88];
 *     results below e^-87 flush to 0 (absolute error < 2e-38), above e^88 they are +inf.
 *   - row sums of exp are accumulated in float64; log(sum) uses libm once per row.
 *   - softmax / log-softmax elements: relative error <= ~2e-6 (float32), absolute for log-softmax.
 *   - softcap tanh: absolute error <= 4 * 2^-24 * cap (float32).
 */
#ifndef FASTLM_H
#define FASTLM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FL_OK = 0,
    FL_ERR_ARG = 1,     /* a size, stride or option is invalid */
    FL_ERR_TARGET = 2,  /* a target is outside [0, cols) and is not ignore_index; see fl_xent.bad_index */
} fl_status;

/* SIMD levels, in increasing order on x86-64; NEON is arm64's baseline. */
typedef enum { FL_SIMD_SCALAR = 0, FL_SIMD_AVX2 = 1, FL_SIMD_AVX512 = 2, FL_SIMD_NEON = 3 } fl_simd;

const char *fl_simd_name(int level);
int fl_simd_compiled(int level);   /* 1 if this build has kernels for `level` */
int fl_simd_supported(int level);  /* 1 if compiled and this CPU (and OS) can run them */
int fl_simd_active(void);
int fl_simd_select(int level);     /* use `level`; FL_ERR_ARG if unsupported */
int fl_openmp_enabled(void);
int fl_max_threads(void);

/* A row-major matrix view: rows x cols, class axis contiguous. */
typedef struct {
    int64_t rows, cols;
    int64_t x_stride;   /* elements between consecutive input rows (>= cols unless rows <= 1) */
    int64_t y_stride;   /* elements between consecutive output rows, where there is a matrix output */
    int num_threads;    /* <= 1: serial */
} fl_rows;

/* logsumexp of z = x / T per row, into out[rows] (float64). inv_temperature = 1/T > 0.
 * An all -inf row gives -inf, a row holding +inf gives +inf, NaN gives NaN, cols == 0 gives -inf. */
int fl_logsumexp_f32(const float *x, const fl_rows *r, double inv_temperature, double *out);
int fl_logsumexp_f64(const double *x, const fl_rows *r, double inv_temperature, double *out);

/* y = softmax(x / T) or log_softmax(x / T) per row. y may equal x (in place).
 * Rows with NaN or +inf, and all -inf rows, give NaN rows (as torch). */
int fl_softmax_f32(const float *x, float *y, const fl_rows *r, double inv_temperature, int log);
int fl_softmax_f64(const double *x, double *y, const fl_rows *r, double inv_temperature, int log);

typedef enum { FL_REDUCE_NONE = 0, FL_REDUCE_SUM = 1, FL_REDUCE_MEAN = 2 } fl_reduction;

/* Fused cross-entropy (loss and, optionally, its gradient w.r.t. the logits).
 *
 * Per row i with target y (rows with y == ignore_index contribute 0 and get a zero gradient row):
 *   u_c = cap * tanh(x_c / cap)   (softcap > 0; else u_c = x_c)
 *   z_c = u_c / T,  lse = log sum_c exp(z_c),  log p_c = z_c - lse
 *   l_i = (1-e) w_y (lse - z_y) + (e/V) sum_c w_c (lse - z_c) + zl w_y lse^2
 * with w = weight (all ones when NULL), e = label_smoothing, zl = z_loss, V = cols.
 * loss = sum_i l_i (SUM), sum_i l_i / sum_i w_{y_i} over non-ignored rows (MEAN; NaN when that is 0/0).
 * Gradient: g_c = s * du_c/dx_c / T * (A p_c - (e/V) w_c - (1-e) w_y [c == y]),
 *   A = (1-e) w_y + (e/V) sum_c w_c + 2 zl w_y lse,  s = 1/sum w (MEAN) or 1 (SUM, NONE).
 * grad may equal logits (in place): each row is read before it is written.
 */
typedef struct {
    const int64_t *targets;     /* rows entries */
    const double *weight;       /* cols entries or NULL */
    const void *weight_t;       /* the same weights in the logits dtype (NULL when weight is NULL) */
    int64_t ignore_index;
    int reduction;              /* fl_reduction */
    double label_smoothing;     /* in [0, 1] */
    double z_loss;              /* >= 0 */
    double softcap;             /* > 0, or 0 for none */
    double inv_temperature;     /* > 0 */
    double *row_loss;           /* out: rows entries, l_i (0 at ignored rows) */
    /* outputs */
    double loss;                /* the reduced loss (SUM / MEAN); equals the sum for NONE */
    double weight_sum;          /* sum of w_{y_i} over non-ignored rows */
    int64_t bad_index;          /* first row with an invalid target, on FL_ERR_TARGET */
} fl_xent;

int fl_xent_f32(const float *logits, float *grad, const fl_rows *r, fl_xent *p);
int fl_xent_f64(const double *logits, double *grad, const fl_rows *r, fl_xent *p);

#ifdef __cplusplus
}
#endif
#endif
