/* ngram_score.c: scoring token sequences against n-gram tables in one pass (csrc/README.md, "N-gram
 * scoring").
 *
 * Tables use rank keys (ngram.c): the k-gram ending at position i has the key
 * E_{k-1}(i-1) << 32 | t_i, where E_{k-1}(i-1) is the index of the (k-1)-gram ending at i-1, so the
 * indices of every order ending at i follow from those ending at i-1 with one hash probe each:
 *     E_1(i) = find_1(t_i),   E_k(i) = find_k(E_{k-1}(i-1) << 32 | t_i)   (-1 once a link is missing).
 * Two models read them:
 *   backoff (ARPA, Kneser-Ney): log10 p(w | h) = prob_L[E_L(i)] + sum_{m=L}^{o-1} backoff_m[E_m(i-1)],
 *     with o = min(n, the tokens of the sequence up to i) and L the longest order <= o whose entry
 *     exists with a probability (NaN marks a context-only entry); a word without a unigram is read as
 *     <unk> (unk_index) when the model has one, else L = 0 gives the unseen-word value. A word is
 *     out of vocabulary when it has no unigram or is <unk> itself (KenLM's full_scores);
 *   add-alpha: ln p(w | h) = ln(c_o(h w) + alpha) - ln(c(h) + alpha V) with c(h) the total of the
 *     o-grams extending h (order 1: every unigram).
 * Per token it writes the log probability, the matched order L (longest counted n-gram ending at i for
 * add-alpha, where a word is unseen when L = 0) and the unseen flag; per sequence the sum and the
 * unseen count.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "fastlm.h"

static inline int64_t find(const fl_ngram_order *t, uint64_t key) {
    const uint64_t mask = ((uint64_t)1 << t->log2cap) - 1;
    uint64_t s = (key * 0x9e3779b97f4a7c15ULL) >> (64 - t->log2cap);
    for (int32_t i; (i = t->table[s]) >= 0; s = (s + 1) & mask)
        if (t->keys[i] == key) return i;
    return -1;
}

/* log p of token i given the entries e (ending at i) and prev (ending at i-1) of orders 1..o. */
static double backoff_logp(const fl_ngram_model *m, const int64_t *e, const int64_t *prev, int o, int *matched) {
    int L = o;
    while (L > 0 && (e[L - 1] < 0 || isnan(m->t[L - 1].prob[e[L - 1]]))) L--;
    double lp = L ? m->t[L - 1].prob[e[L - 1]] : m->unseen;
    for (int k = (L > 1 ? L : 1); k < o; k++) /* contexts of orders L .. o-1 (order >= 1) */
        if (prev[k - 1] >= 0) lp += m->t[k - 1].backoff[prev[k - 1]];
    *matched = L;
    return lp;
}

static double add_alpha_logp(const fl_ngram_model *m, const int64_t *e, const int64_t *prev, int o, int *matched) {
    const fl_ngram_order *t = &m->t[o - 1];
    const double c = e[o - 1] >= 0 ? (double)t->count[e[o - 1]] : 0.0;
    const double ch = o == 1 ? m->unigram_total : (prev[o - 2] >= 0 ? (double)t->total[prev[o - 2]] : 0.0);
    int L = o;
    while (L > 0 && (e[L - 1] < 0 || m->t[L - 1].count[e[L - 1]] == 0)) L--;
    *matched = L;
    return log(c + m->alpha) - log(ch + m->alpha * m->vocab);
}

/* Scores tokens[starts[s] + skip .. starts[s+1]) of every sequence s (the first `skip` are context only).
 * logp/matched/unseen (per token of tokens, NULL to skip; positions not scored get 0) and seq_logp /
 * seq_unseen (per sequence). Returns 0, or -1 without memory. */
int fl_ngram_score(const fl_ngram_model *m, const uint32_t *tokens, const int64_t *starts, int64_t nseq,
                   int64_t skip, double *logp, int32_t *matched, uint8_t *unseen, double *seq_logp,
                   int64_t *seq_unseen) {
    const int n = m->order;
    int64_t *e = malloc(2 * (size_t)n * sizeof *e);
    if (!e) return -1;
    int64_t *prev = e + n;
    for (int64_t s = 0; s < nseq; s++) {
        double sum = 0.0;
        int64_t n_unseen = 0;
        for (int k = 0; k < n; k++) prev[k] = -1;
        for (int64_t i = starts[s]; i < starts[s + 1]; i++) {
            const uint32_t w = tokens[i];
            e[0] = find(&m->t[0], w);
            const int oov = e[0] < 0 || (int64_t)w == m->unk_word;
            if (e[0] < 0) e[0] = m->unk_index;
            const int avail = (int)(i - starts[s] + 1 < n ? i - starts[s] + 1 : n);
            for (int k = 1; k < avail; k++)
                e[k] = prev[k - 1] >= 0 ? find(&m->t[k], (uint64_t)prev[k - 1] << 32 | w) : -1;
            for (int k = avail; k < n; k++) e[k] = -1;
            if (i - starts[s] >= skip) {
                int L;
                const double lp = m->add_alpha ? add_alpha_logp(m, e, prev, avail, &L)
                                               : backoff_logp(m, e, prev, avail, &L);
                const int miss = m->add_alpha ? L == 0 : oov;
                sum += lp;
                n_unseen += miss;
                if (logp) logp[i] = lp;
                if (matched) matched[i] = L;
                if (unseen) unseen[i] = (uint8_t)miss;
            } else {
                if (logp) logp[i] = 0.0;
                if (matched) matched[i] = 0;
                if (unseen) unseen[i] = 0;
            }
            int64_t *t = prev; prev = e; e = t;
        }
        seq_logp[s] = sum;
        seq_unseen[s] = n_unseen;
    }
    free(e < prev ? e : prev);
    return 0;
}
