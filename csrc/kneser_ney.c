/* kneser_ney.c: one order of interpolated modified Kneser-Ney (csrc/README.md, "Modified Kneser-Ney"),
 * steps 4 and 5: per context h, u(h w) = (a(h w) - D(a)) / sum_x a(h x) and
 * gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)) / sum_x a(h x), then
 * p(w | h) = u(h w) + gamma(h) p_lower[suffix], all in float64. A pruned n-gram adds its whole adjusted
 * count to gamma's numerator instead of its discount (lmplz's normalizer), and its p is not used.
 */
#include <stdint.h>
#include "fastlm.h"

/* Entries j < m of one order, sorted so that the n-grams of a context are contiguous: keys[j] >> 32 is the
 * context's index (ctx_shift 32; 0 for the unigrams, whose one context is the empty one), a[j] the
 * adjusted count, pruned[j] (NULL: none) whether it is pruned, suffix[j] the index of the lower-order n-gram (unused when lower is NULL, where
 * lower_uniform is the lower-order probability). Writes p[j] and gamma[context] (contexts without
 * entries keep their value). */
void fl_kn_order(const uint64_t *keys, int ctx_shift, const int64_t *a, const uint8_t *pruned, int64_t m,
                 const double d[4], const int64_t *suffix, const double *lower, double lower_uniform, double *p,
                 double *gamma) {
    for (int64_t lo = 0; lo < m;) {
        const uint64_t ctx = ctx_shift ? keys[lo] >> ctx_shift : 0;
        int64_t hi = lo;
        double den = 0.0, num = 0.0;
        for (; hi < m && (ctx_shift ? keys[hi] >> ctx_shift : 0) == ctx; hi++) {
            den += (double)a[hi];
            if (pruned && pruned[hi]) num += (double)a[hi];
            else if (a[hi] > 0) num += d[a[hi] < 3 ? a[hi] : 3];
        }
        const double g = den > 0 ? num / den : 0.0;
        gamma[ctx] = g;
        for (int64_t j = lo; j < hi; j++) {
            const double u = den > 0 ? ((double)a[j] - d[a[j] < 3 ? a[j] : 3]) / den : 0.0;
            p[j] = u + g * (lower ? lower[suffix[j]] : lower_uniform);
        }
        lo = hi;
    }
}
