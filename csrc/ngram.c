/* ngram.c: n-gram counting and lookup (csrc/README.md, "N-gram tables").
 *
 * Packed keys (the fast path): a k-gram (t_0, ..., t_{k-1}) of ids below 2^bits is the key
 * sum_i t_i << (bits (k-1-i)) (k bits <= 64), so that the keys' order is the lexicographic order of the
 * k-grams and the key of the (k-1)-gram context is key >> bits. The keys of every window are generated,
 * sorted by a radix sort (one most-significant 8-bit split, then byte-wise LSD passes inside each
 * bucket) and run-length encoded; small key spaces are counted directly.
 * Rank keys (any order): a k-gram is (rank of its (k-1)-prefix among the sorted (k-1)-grams) << 32 | its
 * last id; order k is counted from the ranks of order k-1 at every window start still in the count
 * (fl_ngram_count_ranks).
 * Lookup: an open-addressing hash index (multiplicative hash, linear probing) over sorted keys, each slot
 * holding the entry's index and its key, probed in batches with the next slots prefetched.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ngram.h"

/* keys of the k-grams of every sequence (tokens[starts[s] .. starts[s+1])) whose first id is in [lo, hi).
 * Returns the number written to keys. */
static int64_t fl_ngram_keys(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, int bits,
                             uint64_t lo, uint64_t hi, uint64_t *keys) {
    int64_t m = 0;
    for (int64_t s = 0; s < nseq; s++) {
        for (int64_t i = starts[s]; i + k <= starts[s + 1]; i++) {
            if (tokens[i] < lo || tokens[i] >= hi) continue;
            uint64_t key = 0;
            for (int j = 0; j < k; j++) key = (key << bits) | tokens[i + j];
            keys[m++] = key;
        }
    }
    return m;
}

/* count[d] = the first output slot of digit d of the byte at `shift` of a[0..n); 0 when every key has
 * the same digit there (the pass can be skipped), else 1. */
static int digit_starts(const uint64_t *a, int64_t n, int shift, int64_t count[256]) {
    memset(count, 0, 256 * sizeof *count);
    for (int64_t i = 0; i < n; i++) count[(a[i] >> shift) & 255]++;
    int64_t total = 0, same = 0;
    for (int d = 0; d < 256; d++) {
        same |= count[d] == n;
        int64_t t = count[d];
        count[d] = total;
        total += t;
    }
    return !same;
}

/* LSD radix sort of src[0..n) on the low `bits` bits, digits of at most 8 bits (cache-resident buckets),
 * passes over a digit every key shares skipped; the result lands in dst (src is scratch). */
static void lsd_sort(uint64_t *src, uint64_t *dst, int64_t n, int bits) {
    uint64_t *a = src, *b = dst;
    int64_t count[256];
    for (int shift = 0; shift < bits; shift += 8) {
        if (!digit_starts(a, n, shift, count)) continue;
        for (int64_t i = 0; i < n; i++) b[count[(a[i] >> shift) & 255]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    if (a != dst) memcpy(dst, a, (size_t)n * sizeof *a);
}

/* Sorts keys[0..n) ascending on their low `bits` bits (tmp: n entries): one MSD pass splits the keys
 * into 2^8 buckets by their top 8 bits, then each bucket (usually cache-sized) is LSD-sorted. */
static void radix_sort(uint64_t *keys, uint64_t *tmp, int64_t n, int bits) {
    if (bits <= 16) {
        lsd_sort(keys, tmp, n, bits);
        memcpy(keys, tmp, (size_t)n * sizeof *keys);
        return;
    }
    const int low = bits - 8;
    int64_t start[(1 << 8) + 1], next[1 << 8];
    memset(start, 0, sizeof start);
    for (int64_t i = 0; i < n; i++) start[(keys[i] >> low) + 1]++;
    for (int d = 0; d < (1 << 8); d++) start[d + 1] += start[d];
    memcpy(next, start, sizeof next);
    for (int64_t i = 0; i < n; i++) tmp[next[keys[i] >> low]++] = keys[i];
    for (int d = 0; d < (1 << 8); d++) /* each bucket from tmp back into keys, sorted */
        lsd_sort(tmp + start[d], keys + start[d], start[d + 1] - start[d], low);
}

/* Sorts keys[0..n) (tmp: n entries) and writes the distinct keys and their counts; returns how many, or
 * -1 without memory. unique may be keys and counts may be tmp (each distinct key is written at or before
 * its first occurrence, after the sort is done with tmp). Small key spaces (2^bits <= max(n, 2^16)) are
 * counted directly, and there a key with bits above `bits` returns -2 (callers pass ids < 2^bits). */
static int64_t fl_ngram_count(uint64_t *keys, int64_t n, int bits, uint64_t *tmp, uint64_t *unique,
                              int64_t *counts) {
    if (bits <= 24 && ((int64_t)1 << bits) <= (n > 65536 ? n : 65536)) {
        int64_t *c = calloc((size_t)1 << bits, sizeof *c);
        if (!c) return -1;
        for (int64_t i = 0; i < n; i++) {
            if (keys[i] >> bits) {
                free(c);
                return -2;
            }
            c[keys[i]]++;
        }
        int64_t m = 0;
        for (uint64_t k = 0; k < ((uint64_t)1 << bits); k++)
            if (c[k]) {
                unique[m] = k;
                counts[m++] = c[k];
            }
        free(c);
        return m;
    }
    radix_sort(keys, tmp, n, bits);
    int64_t m = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i + 1;
        while (j < n && keys[j] == keys[i]) j++;
        unique[m] = keys[i];
        counts[m++] = j - i;
        i = j;
    }
    return m;
}

/* The hash index of keys[0..m) (m < 2^log2cap, m < 2^31): slot s holds a key and its index, or index -1
 * (one 16-byte slot, so that a probe reads one cache line). */
void fl_ngram_index(const uint64_t *keys, int64_t m, int log2cap, fl_ngram_slot *slots) {
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    for (uint64_t s = 0; s <= mask; s++) slots[s] = (fl_ngram_slot){0, -1};
    for (int64_t i = 0; i < m; i++) {
        uint64_t s = fl_ngram_slot_of(keys[i], log2cap);
        while (slots[s].index >= 0) s = (s + 1) & mask;
        slots[s] = (fl_ngram_slot){keys[i], i};
    }
}

/* The index stored with key, else -1 (linear probing from the home slot). */
static int64_t probe(const fl_ngram_slot *slots, int log2cap, uint64_t key) {
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    for (uint64_t s = fl_ngram_slot_of(key, log2cap);; s = (s + 1) & mask) {
        if (slots[s].index < 0) return -1;
        if (slots[s].key == key) return slots[s].index;
    }
}

/* out[q] = the index of queries[q] in the indexed keys, else -1. The slot of query q + 8 is prefetched,
 * so that the cache misses of many queries overlap. */
void fl_ngram_find(int log2cap, const fl_ngram_slot *slots, const uint64_t *queries, int64_t nq, int64_t *out) {
    for (int64_t q = 0; q < nq; q++) {
        if (q + 8 < nq) __builtin_prefetch(&slots[fl_ngram_slot_of(queries[q + 8], log2cap)]);
        out[q] = probe(slots, log2cap, queries[q]);
    }
}

/* The distinct k-grams of every sequence whose first id is in [lo, hi) (as fl_ngram_keys) and their
 * counts. keys and tmp are scratch of starts[nseq] entries each; on return keys[0..m) hold the distinct
 * keys, ascending, and ((int64_t *)tmp)[0..m) their counts. Returns m, or an error of fl_ngram_count.
 * Ids must be < 2^bits. */
int64_t fl_ngram_count_windows(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, int bits,
                               uint64_t lo, uint64_t hi, uint64_t *keys, uint64_t *tmp) {
    const int64_t nk = fl_ngram_keys(tokens, starts, nseq, k, bits, lo, hi, keys);
    return fl_ngram_count(keys, nk, k * bits, tmp, keys, (int64_t *)tmp);
}

/* LSD radix sort of (key, pos) pairs by key, byte digits, passes over a digit every key shares skipped;
 * the result lands in k/p (k2/p2: scratch of n entries). */
static void sort_pairs(uint64_t *k, uint32_t *p, uint64_t *k2, uint32_t *p2, int64_t n) {
    uint64_t *ka = k, *kb = k2;
    uint32_t *pa = p, *pb = p2;
    int64_t count[256];
    for (int shift = 0; shift < 64; shift += 8) {
        if (!digit_starts(ka, n, shift, count)) continue;
        for (int64_t i = 0; i < n; i++) {
            int64_t j = count[(ka[i] >> shift) & 255]++;
            kb[j] = ka[i];
            pb[j] = pa[i];
        }
        uint64_t *tk = ka; ka = kb; kb = tk;
        uint32_t *tp = pa; pa = pb; pb = tp;
    }
    if (ka != k) {
        memcpy(k, ka, (size_t)n * sizeof *k);
        memcpy(p, pa, (size_t)n * sizeof *p);
    }
}

/* Order k by ranks, over the live windows: live[0..*nlive) are ascending positions whose (k-1)-gram was
 * counted (for k = 1: the positions whose id is in the range counted), rank[j] the rank of that (k-1)-gram
 * (0 for k = 1). Windows that do not fit order k in their sequence leave; on return live, rank and *nlive
 * hold the rest with the ranks of their k-grams. keys, tmp and idx (twice as long): scratch of *nlive
 * entries; keys[0..m) then hold the distinct keys rank << 32 | last id, ascending, and
 * ((int64_t *)tmp)[0..m) their counts. Returns m, or -2 when positions or ranks do not fit in 32 bits. */
int64_t fl_ngram_count_ranks(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k,
                             uint32_t *live, int64_t *nlive, uint32_t *rank, uint64_t *keys, uint64_t *tmp,
                             uint32_t *idx) {
    if (starts[nseq] > (int64_t)UINT32_MAX) return -2;
    const int64_t cap = *nlive;
    int64_t n = 0, s = 0;
    for (int64_t j = 0; j < cap; j++) {
        const int64_t i = live[j];
        while (starts[s + 1] <= i) s++;
        if (i + k > starts[s + 1]) continue;
        live[n] = (uint32_t)i;
        rank[n] = rank[j];
        keys[n] = (uint64_t)rank[j] << 32 | tokens[i + k - 1];
        idx[n] = (uint32_t)n;
        n++;
    }
    *nlive = n;
    sort_pairs(keys, idx, tmp, idx + cap, n);
    int64_t m = 0, *counts = (int64_t *)tmp;
    for (int64_t i = 0; i < n;) { /* each distinct key written at or before its first occurrence */
        if (m > (int64_t)UINT32_MAX) return -2;
        int64_t j = i;
        const uint64_t key = keys[i];
        for (; j < n && keys[j] == key; j++) rank[idx[j]] = (uint32_t)m;
        keys[m] = key;
        counts[m++] = j - i;
        i = j;
    }
    return m;
}

/* One step down from packed keys of order k + 1 (sorted keys[0..m) of ids below 2^bits, with counts):
 * their distinct prefixes key >> bits with the summed counts (returned: how many), and each key's rank
 * key run << 32 | last id, run being the index of its prefix among the distinct ones. */
int64_t fl_ngram_prefixes(const uint64_t *keys, const int64_t *counts, int64_t m, int bits, uint64_t *prefix,
                          int64_t *prefix_count, uint64_t *rank) {
    const uint64_t low = ((uint64_t)1 << bits) - 1;
    int64_t r = -1;
    for (int64_t i = 0; i < m; i++) {
        const uint64_t p = keys[i] >> bits;
        if (r < 0 || prefix[r] != p) {
            prefix[++r] = p;
            prefix_count[r] = 0;
        }
        prefix_count[r] += counts[i];
        rank[i] = (uint64_t)r << 32 | (keys[i] & low);
    }
    return r + 1;
}

/* The merge key of entry i of run u: its parent p re-keyed to remap[p] (remap NULL: the key as it is).
 * 0 when p falls outside the remap. */
static int run_key(const fl_ngram_run *u, int64_t i, uint64_t *key) {
    const uint64_t k = u->keys[i];
    if (!u->remap) {
        *key = k;
        return 1;
    }
    const int64_t p = (int64_t)(k >> 32);
    if (p >= u->nremap) return 0;
    *key = (uint64_t)u->remap[p] << 32 | (k & 0xFFFFFFFFu);
    return 1;
}

/* Merges nruns <= FL_NGRAM_MERGE_MAX ascending runs (each re-keyed on the fly, see fl_ngram_run) into the
 * distinct keys, ascending, and their summed counts; run r's rank[i] = the output index of its entry i.
 * Each step takes the least of the runs' heads (a linear scan: the runs are few; an exhausted run's head is
 * UINT64_MAX). Returns the number of distinct keys, or -1 for a parent outside its remap or a key equal
 * to UINT64_MAX (no table holds one: parents are below 2^31). */
int64_t fl_ngram_merge(const fl_ngram_run *runs, int nruns, uint64_t *out_keys, int64_t *out_counts) {
    uint64_t head[FL_NGRAM_MERGE_MAX];
    int64_t pos[FL_NGRAM_MERGE_MAX];
    if (nruns < 0 || nruns > FL_NGRAM_MERGE_MAX) return -1;
    int64_t left = 0;
    for (int r = 0; r < nruns; r++) {
        pos[r] = 0;
        left += runs[r].n;
        head[r] = UINT64_MAX;
        if (runs[r].n > 0 && !run_key(&runs[r], 0, &head[r])) return -1;
    }
    int64_t m = 0;
    for (; left > 0; left--) {
        int r = 0;
        for (int q = 1; q < nruns; q++) r = head[q] < head[r] ? q : r;
        const fl_ngram_run *u = &runs[r];
        const int64_t i = pos[r]++;
        if (i >= u->n) return -1;
        if (m == 0 || out_keys[m - 1] != head[r]) {
            out_keys[m] = head[r];
            out_counts[m++] = 0;
        }
        out_counts[m - 1] += u->counts[i];
        if (u->rank) u->rank[i] = m - 1;
        head[r] = UINT64_MAX;
        if (i + 1 < u->n && !run_key(u, i + 1, &head[r])) return -1;
    }
    return m;
}
