/* ngram.c: n-gram counting and lookup over packed keys.
 *
 * A k-gram (t_0, ..., t_{k-1}) of ids below 2^bits is the key sum_i t_i << (bits (k-1-i)) (k bits <= 64),
 * so that the keys' order is the lexicographic order of the k-grams and the key of the (k-1)-gram
 * context is key >> bits. Counting: the keys of every window are generated, sorted by an LSD radix
 * sort (16-bit digits over the bits in use) and run-length encoded. Lookup: an open-addressing hash
 * index (multiplicative hash, linear probing) over the sorted keys, probed in batches with the next
 * slots prefetched, so that the cache misses of many queries overlap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dispatch.h"

/* keys of the k-grams of every sequence (tokens[starts[s] .. starts[s+1])), skipping those whose last
 * token is skip_last (>= 0; the BOS padding is context only). Returns the number written to keys. */
int64_t fl_ngram_keys(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, int bits,
                      int64_t skip_last, uint64_t *keys) {
    int64_t m = 0;
    for (int64_t s = 0; s < nseq; s++) {
        const int64_t lo = starts[s], hi = starts[s + 1];
        for (int64_t i = lo; i + k <= hi; i++) {
            if (skip_last >= 0 && tokens[i + k - 1] == (uint32_t)skip_last) continue;
            uint64_t key = 0;
            for (int j = 0; j < k; j++) key = (key << bits) | tokens[i + j];
            keys[m++] = key;
        }
    }
    return m;
}

/* Sorts keys[0..n) ascending: LSD radix sort over the low `bits` bits, in as few digits as possible of
 * at most 16 bits (one read pass counts every digit, then one scatter pass per digit that varies);
 * tmp: n entries; count: 4 x 65536 entries. */
static void radix_sort(uint64_t *keys, uint64_t *tmp, int64_t n, int bits, int64_t *count) {
    const int passes = (bits + 15) / 16, width = (bits + passes - 1) / passes;
    const uint64_t dmask = ((uint64_t)1 << width) - 1;
    memset(count, 0, sizeof(int64_t) * 4 * 65536);
    for (int64_t i = 0; i < n; i++)
        for (int p = 0; p < passes; p++) count[p * 65536 + ((keys[i] >> (p * width)) & dmask)]++;
    uint64_t *src = keys, *dst = tmp;
    for (int p = 0; p < passes; p++) {
        int64_t total = 0, *c = count + p * 65536;
        int single = 0;
        for (uint64_t d = 0; d <= dmask; d++) {
            single |= c[d] == n;
            int64_t t = c[d];
            c[d] = total;
            total += t;
        }
        if (single) continue; /* every key has the same digit here: nothing moves */
        for (int64_t i = 0; i < n; i++) dst[c[(src[i] >> (p * width)) & dmask]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != keys) memcpy(keys, src, (size_t)n * sizeof *keys);
}

/* Sorts keys[0..n) (tmp: n entries) and writes the distinct keys and their counts; returns how many,
 * or -1 without memory. Small key spaces (2^bits <= max(n, 2^16)) are counted directly. */
int64_t fl_ngram_count(uint64_t *keys, int64_t n, int bits, uint64_t *tmp, uint64_t *unique, int64_t *counts) {
    if (bits <= 24 && ((int64_t)1 << bits) <= (n > 65536 ? n : 65536)) {
        int64_t *c = calloc((size_t)1 << bits, sizeof *c);
        if (!c) return -1;
        for (int64_t i = 0; i < n; i++) c[keys[i]]++;
        int64_t m = 0;
        for (uint64_t k = 0; k < ((uint64_t)1 << bits); k++)
            if (c[k]) {
                unique[m] = k;
                counts[m++] = c[k];
            }
        free(c);
        return m;
    }
    int64_t *count = malloc(sizeof(int64_t) * 4 * 65536);
    if (!count) return -1;
    radix_sort(keys, tmp, n, bits, count);
    free(count);
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

static inline uint64_t slot_of(uint64_t key, int log2cap) {
    return (key * 0x9e3779b97f4a7c15ULL) >> (64 - log2cap);
}

/* table[0 .. 2^log2cap): -1 or an index into keys; m < 2^log2cap, m < 2^31. */
void fl_ngram_index(const uint64_t *keys, int64_t m, int log2cap, int32_t *table) {
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    memset(table, 0xff, sizeof(int32_t) << log2cap);
    for (int64_t i = 0; i < m; i++) {
        uint64_t s = slot_of(keys[i], log2cap);
        while (table[s] >= 0) s = (s + 1) & mask;
        table[s] = (int32_t)i;
    }
}

/* out[q] = counts[i] where keys[i] == queries[q], else 0. Two prefetch stages: the slot of query
 * q + 16, then the key its slot points to for query q + 8. */
void fl_ngram_lookup(const uint64_t *keys, const int64_t *counts, int log2cap, const int32_t *table,
                     const uint64_t *queries, int64_t nq, int64_t *out) {
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    for (int64_t q = 0; q < nq; q++) {
        if (q + 16 < nq) __builtin_prefetch(&table[slot_of(queries[q + 16], log2cap)]);
        if (q + 8 < nq) {
            int32_t i = table[slot_of(queries[q + 8], log2cap)];
            if (i >= 0) __builtin_prefetch(&keys[i]);
        }
        uint64_t s = slot_of(queries[q], log2cap);
        int64_t found = 0;
        for (int32_t i; (i = table[s]) >= 0; s = (s + 1) & mask)
            if (keys[i] == queries[q]) {
                found = counts[i];
                break;
            }
        out[q] = found;
    }
}
