/* ngram.h: the hash of the n-gram tables of lookup (ngram.c) and scoring (ngram_score.c). */
#ifndef FL_NGRAM_H
#define FL_NGRAM_H
#include <stdint.h>
#include "fastlm.h"

/* The home slot of a key: multiplicative (Fibonacci) hashing into 2^log2cap slots. */
static inline uint64_t fl_ngram_slot_of(uint64_t key, int log2cap) {
    return (key * 0x9e3779b97f4a7c15ULL) >> (64 - log2cap);
}

#endif
