/* decode_beam.c: one beam-search step (csrc/README.md, "Decoding: filters, sampler, beam step"): per group
 * of rows (one prompt's beams), the k best (beam, token) pairs by score[b] + log_softmax(x[b])[v]. Part of
 * the decode.c unit (one per dtype). */
#include "decode.h"

typedef struct {
    double s;
    int64_t beam, token;
} candidate;

/* score desc, then beam asc, then token asc */
static int candidate_cmp(const void *pa, const void *pb) {
    const candidate *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    if (a->beam != b->beam) return a->beam < b->beam ? -1 : 1;
    return (a->token > b->token) - (a->token < b->token);
}

int FL_PICK(fl_beam_step_f32, fl_beam_step_f64)(const FL_T *x, const fl_rows *r, const double *score,
                                                const int64_t *group, int64_t ngroups, int64_t k,
                                                int64_t *out_beam, int64_t *out_token, double *out_score,
                                                fl_decode *d) {
    if (!fl_rows_ok(r, 0) || r->cols > INT32_MAX || !score || !d || k < 0 || ngroups < 0 || !group ||
        group[0] != 0 || group[ngroups] != r->rows)
        return FL_ERR_ARG;
    for (int64_t g = 0; g < ngroups; g++)
        if (group[g + 1] < group[g]) return FL_ERR_ARG;
    if (k == 0 || ngroups == 0) return FL_OK;
    const int64_t per_row = k < r->cols ? k : r->cols;
    double *lse = malloc(sizeof(double) * (size_t)(r->rows + 1));
    candidate *cand = malloc(sizeof(candidate) * (size_t)(r->rows * per_row + 1));
    scratch s;
    int st = !lse || !cand || !scratch_get(&s, r->cols) ? FL_ERR_NOMEM : FL_OK;
    const int have_scratch = st == FL_OK;
    if (st == FL_OK) st = check_rows(x, r, lse, d);
    if (st == FL_OK) SOFTMAX_KERNELS->logsumexp(x, r, 1.0, lse);
    int64_t m = 0;
    for (int64_t b = 0; st == FL_OK && b < r->rows; b++) {
        /* the row's per_row best tokens (exactly: ties to the lower index), scored in float64 */
        const FL_T *xb = x + b * r->x_stride;
        const cut c = top_count(xb, r->cols, per_row, &s);
        for (int64_t j = 0, taken = 0; j < r->cols && taken < per_row; j++)
            if (cut_keeps(&c, xb[j], j)) {
                const candidate e = {score[b] + ((double)xb[j] - lse[b]), b, j};
                cand[m++] = e;
                taken++;
            }
    }
    for (int64_t g = 0; st == FL_OK && g < ngroups; g++) { /* a group's rows' candidates are contiguous */
        candidate *c = cand + group[g] * per_row;
        const int64_t n = (group[g + 1] - group[g]) * per_row;
        qsort(c, (size_t)n, sizeof *c, candidate_cmp);
        for (int64_t q = 0; q < k; q++) {
            const int64_t o = g * k + q;
            out_beam[o] = q < n ? c[q].beam : -1;
            out_token[o] = q < n ? c[q].token : -1;
            out_score[o] = q < n ? c[q].s : -INFINITY;
        }
    }
    if (have_scratch) scratch_put(&s);
    free(lse);
    free(cand);
    return st;
}
