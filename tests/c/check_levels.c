/* check_levels.c: every compiled SIMD level against the portable scalar kernels, through the C API.
 * Used where Python is not at hand, e.g. a cross build run under an emulator (see cross_neon.sh).
 * Prints "N passed, M failed" and exits non-zero on a failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastlm.h"

static int passed, failed;

static double urand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (*s >> 8) / 16777216.0;
}

/* |a - b| <= atol + rtol |b|, NaN matching NaN */
static int near(double a, double b, double rtol, double atol) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b)) return a == b;
    return fabs(a - b) <= atol + rtol * fabs(b);
}

static void expect(int ok, const char *what, int level, int64_t V) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s at level %s, V=%lld\n", what, fl_simd_name(level), (long long)V);
    }
}

#define CHECK_DTYPE(SFX, T, RTOL, ATOL)                                                               \
    static void check_##SFX(int level, int64_t V, unsigned seed) {                                    \
        const int64_t N = 5;                                                                           \
        T *x = malloc(sizeof(T) * N * V + 1), *y0 = malloc(sizeof(T) * N * V + 1);                     \
        T *y1 = malloc(sizeof(T) * N * V + 1), *w_t = malloc(sizeof(T) * V + 1);                       \
        double *l0 = malloc(sizeof(double) * N), *l1 = malloc(sizeof(double) * N);                     \
        double *w = malloc(sizeof(double) * V + 1);                                                    \
        int64_t tg[5];                                                                                 \
        for (int64_t i = 0; i < N * V; i++) x[i] = (T)((urand(&seed) - 0.5) * 12);                   \
        for (int64_t c = 0; c < V; c++) w_t[c] = (T)(w[c] = 0.5 + urand(&seed));                        \
        if (V > 3) { x[V + 1] = -INFINITY; x[2 * V] = NAN; x[3 * V + 2] = 80; }                          \
        for (int64_t i = 0; i < N; i++) tg[i] = i == 4 ? -100 : (int64_t)(urand(&seed) * V);           \
        fl_rows r = {N, V, V, V, 1};                                                                   \
        int ok = 1;                                                                                    \
        for (int lg = 0; lg < 2; lg++) {                                                               \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_softmax_##SFX(x, y0, &r, 0.8, lg);                                                      \
            fl_simd_select(level);                                                                     \
            fl_softmax_##SFX(x, y1, &r, 0.8, lg);                                                      \
            for (int64_t i = 0; i < N * V; i++) ok &= near(y1[i], y0[i], RTOL, lg ? ATOL * 100 : ATOL); \
        }                                                                                              \
        expect(ok, #SFX " softmax/log_softmax", level, V);                                             \
        ok = 1;                                                                                        \
        fl_simd_select(FL_SIMD_SCALAR);                                                                \
        fl_logsumexp_##SFX(x, &r, 1.0, l0);                                                            \
        fl_simd_select(level);                                                                         \
        fl_logsumexp_##SFX(x, &r, 1.0, l1);                                                            \
        for (int64_t i = 0; i < N; i++) ok &= near(l1[i], l0[i], RTOL, ATOL * 10);                     \
        expect(ok, #SFX " logsumexp", level, V);                                                       \
        for (int opt = 0; opt < 2; opt++) {                                                            \
            fl_xent p0 = {tg, opt ? w : NULL, opt ? w_t : NULL, -100, FL_REDUCE_NONE,                  \
                          opt ? 0.1 : 0.0, opt ? 1e-3 : 0.0, opt ? 7.0 : 0.0, 1.0, l0, 0, 0, 0};        \
            fl_xent p1 = p0;                                                                           \
            p1.row_loss = l1;                                                                          \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_xent_##SFX(x, y0, &r, &p0);                                                             \
            fl_simd_select(level);                                                                     \
            memcpy(y1, x, sizeof(T) * N * V);                                                          \
            fl_xent_##SFX(y1, y1, &r, &p1); /* in place */                                             \
            ok = 1;                                                                                    \
            for (int64_t i = 0; i < N; i++) ok &= near(l1[i], l0[i], RTOL, ATOL * 10);                 \
            for (int64_t i = 0; i < N * V; i++) ok &= near(y1[i], y0[i], RTOL * 10, ATOL);             \
            expect(ok, opt ? #SFX " xent with every option" : #SFX " xent", level, V);                   \
        }                                                                                              \
        /* entropy, KL and temperature statistics */                                                  \
        {                                                                                              \
            double e0[5], e1[5], k0[5], k1[5], mx[5], n0[5], n1[5], g0[5], g1[5], v0[5], v1[5];         \
            int64_t lab[5] = {0, 1, 2, 3, 4};                                                          \
            for (int i = 0; i < 5; i++) lab[i] %= V;                                                   \
            fl_rows r2 = r; /* KL of rows 0..3 against rows 1..4 */                                    \
            r2.rows = N - 1;                                                                           \
            r2.y_stride = V;                                                                           \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_entropy_##SFX(x, &r, e0);                                                               \
            fl_kl_##SFX(x, x + V, &r2, k0);                                                            \
            fl_rowmax_##SFX(x, &r, mx);                                                                \
            fl_temperature_stats_##SFX(x, &r, lab, mx, 0.7, n0, g0, v0);                               \
            fl_simd_select(level);                                                                     \
            fl_entropy_##SFX(x, &r, e1);                                                               \
            fl_kl_##SFX(x, x + V, &r2, k1);                                                            \
            fl_temperature_stats_##SFX(x, &r, lab, mx, 0.7, n1, g1, v1);                               \
            ok = 1;                                                                                    \
            for (int i = 0; i < 4; i++)                                                                \
                ok &= near(e1[i], e0[i], RTOL * 10, ATOL * 10) && near(k1[i], k0[i], RTOL * 10, ATOL * 100) && \
                      near(n1[i], n0[i], RTOL * 10, ATOL * 10) && near(g1[i], g0[i], RTOL * 10, ATOL * 100) && \
                      near(v1[i], v0[i], RTOL * 100, ATOL * 100);                                      \
            expect(ok, #SFX " entropy, KL, temperature statistics", level, V);                          \
        }                                                                                              \
        /* decoding: logit-space decisions are exact on every level */                               \
        x[2 * V] = 0.5f; /* no NaN here */                                                             \
        {                                                                                              \
            int64_t kk[5] = {1, 3, 0, 7, 2}, ids0[5], ids1[5];                                         \
            double mp[5] = {0.5, 0.1, 0.9, 0.0, 1.0}, tt[5] = {1, 0.7, 0, 1.3, 1}, pp[5] = {1, 1, 1, 1, 1}; \
            uint64_t sd[5] = {1, 2, 3, 4, 5};                                                          \
            fl_sample_params sp = {tt, kk, pp, mp, sd};                                                \
            fl_decode dd = {1, -1};                                                                    \
            ok = 1;                                                                                    \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_top_k_filter_##SFX(x, y0, &r, kk, -1, &dd);                                             \
            fl_simd_select(level);                                                                     \
            fl_top_k_filter_##SFX(x, y1, &r, kk, -1, &dd);                                             \
            ok &= !memcmp(y0, y1, sizeof(T) * N * V);                                                  \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_min_p_filter_##SFX(x, y0, &r, mp, -1, &dd);                                             \
            fl_greedy_##SFX(x, &r, ids0, &dd);                                                         \
            fl_simd_select(level);                                                                     \
            fl_min_p_filter_##SFX(x, y1, &r, mp, -1, &dd);                                             \
            fl_greedy_##SFX(x, &r, ids1, &dd);                                                         \
            ok &= !memcmp(y0, y1, sizeof(T) * N * V) && !memcmp(ids0, ids1, sizeof ids0);              \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_sample_##SFX(x, &r, &sp, ids0, &dd);                                                    \
            fl_simd_select(level);                                                                     \
            fl_sample_##SFX(x, &r, &sp, ids1, &dd);                                                    \
            ok &= !memcmp(ids0, ids1, sizeof ids0);                                                    \
            expect(ok, #SFX " top-k, min-p, greedy, top-k sampling", level, V);                         \
        }                                                                                              \
        /* top-p filter and sampler: weights exp(x - max) may differ by an ulp between levels, far */   \
        /* from these rows' decisions */                                                               \
        {                                                                                              \
            int64_t kk[5] = {0, 0, 5, 0, 0}, ids0[5], ids1[5];                                         \
            double pp[5] = {0.9, 0.5, 0.8, 0.0, 0.99}, mp[5] = {0, 0.01, 0, 0, 0.001};                 \
            double tt[5] = {1, 0.7, 1, 1, 1.5};                                                        \
            uint64_t sd[5] = {6, 7, 8, 9, 10};                                                         \
            fl_sample_params sp = {tt, kk, pp, mp, sd};                                                \
            fl_decode dd = {2, -1};                                                                    \
            fl_simd_select(FL_SIMD_SCALAR);                                                            \
            fl_top_p_filter_##SFX(x, y0, &r, pp, -1, &dd);                                             \
            fl_sample_##SFX(x, &r, &sp, ids0, &dd);                                                    \
            fl_simd_select(level);                                                                     \
            fl_top_p_filter_##SFX(x, y1, &r, pp, -1, &dd);                                             \
            fl_sample_##SFX(x, &r, &sp, ids1, &dd);                                                    \
            expect(!memcmp(y0, y1, sizeof(T) * N * V) && !memcmp(ids0, ids1, sizeof ids0),             \
                   #SFX " top-p filter and sampling", level, V);                                       \
        }                                                                                              \
        /* the raw C API takes p < 0 and NaN as p = 0 (Python rejects them) */                      \
        {                                                                                              \
            double pn[5] = {-0.5, NAN, -1e-300, -INFINITY, 0}, pz[5] = {0, 0, 0, 0, 0};                \
            fl_decode dd = {1, -1};                                                                    \
            fl_simd_select(level);                                                                     \
            fl_top_p_filter_##SFX(x, y0, &r, pn, -1, &dd);                                             \
            fl_top_p_filter_##SFX(x, y1, &r, pz, -1, &dd);                                             \
            expect(!memcmp(y0, y1, sizeof(T) * N * V), #SFX " top-p filter, p < 0 or NaN", level, V);  \
        }                                                                                              \
        free(x); free(y0); free(y1); free(w_t); free(l0); free(l1); free(w);                           \
    }

CHECK_DTYPE(f32, float, 2e-5, 1e-6)
CHECK_DTYPE(f64, double, 1e-12, 1e-14)

int main(void) {
    /* 40000: flat rows of top-p take the sampled band (16384 tokens or more) */
    static const int64_t sizes[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 65, 1000, 2047, 2049, 5000, 40000};
    for (int level = 0; level < 4; level++) {
        if (!fl_simd_supported(level)) continue;
        printf("level %s\n", fl_simd_name(level));
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            check_f32(level, sizes[k], 17u + (unsigned)k);
            check_f64(level, sizes[k], 91u + (unsigned)k);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
