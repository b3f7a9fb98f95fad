/*
 * is.c - NPB "Integer Sort" kernel (serial), written for hexo from the
 * NPB 3.3 specification.
 *
 * NUM_KEYS integer keys in [0, MAX_KEY) are generated as
 *     key = (int)((MAX_KEY/4) * (r1 + r2 + r3 + r4))
 * from four consecutive NPB deviates (seed 314159265, a = 5^13), giving an
 * approximately Gaussian distribution.  Each of MAX_ITERATIONS ranking
 * passes first modifies two keys,
 *     key[it] = it,  key[it + MAX_ITERATIONS] = MAX_KEY - it,
 * then ranks all keys with a bucket sort followed by a counting sort.
 * After ranking, rank_of(k) = #keys < k for five test keys is compared
 * against the published values (partial verification); after the last
 * pass the keys are permuted by their ranks and checked to be sorted
 * (full verification).  One untimed warm-up pass (it = 1) precedes the
 * timed ones; it changes the same two keys as the timed pass 1 does.
 *
 * Build with exactly one of -DCLASS_S, -DCLASS_W, -DCLASS_A.
 */
#include <stdio.h>
#include <stdlib.h>

#include "npb_common.h"

#if defined(CLASS_S)
#define LOG2_NUM_KEYS 16
#define LOG2_MAX_KEY 11
#define LOG2_NUM_BUCKETS 9
static const long test_index[5] = {48427, 17148, 23627, 62548, 4431};
static const long test_rank[5] = {0, 18, 346, 64917, 65463};
#elif defined(CLASS_W)
#define LOG2_NUM_KEYS 20
#define LOG2_MAX_KEY 16
#define LOG2_NUM_BUCKETS 10
static const long test_index[5] = {357773, 934767, 875723, 898999, 404505};
static const long test_rank[5] = {1249, 11698, 1039987, 1043896, 1048018};
#else
#define LOG2_NUM_KEYS 23
#define LOG2_MAX_KEY 19
#define LOG2_NUM_BUCKETS 10
static const long test_index[5] = {2112377, 662041, 5336171, 3642833, 4250760};
static const long test_rank[5] = {104, 17523, 123928, 8288932, 8388264};
#endif

#define NUM_KEYS (1L << LOG2_NUM_KEYS)
#define MAX_KEY (1L << LOG2_MAX_KEY)
#define NUM_BUCKETS (1L << LOG2_NUM_BUCKETS)
#define BUCKET_SHIFT (LOG2_MAX_KEY - LOG2_NUM_BUCKETS)
#define MAX_ITERATIONS 10
#define TEST_ARRAY_SIZE 5
#define SEED 314159265.0

typedef int key_t_;           /* keys and ranks fit in 32 bits for S/W/A */

static key_t_ keys[NUM_KEYS];         /* the keys (permuted at the end) */
static key_t_ bucketed[NUM_KEYS];     /* keys grouped by bucket */
static key_t_ key_le[MAX_KEY];        /* key_le[k] = #keys <= k */
static long bucket_count[NUM_BUCKETS];
static long bucket_end[NUM_BUCKETS];
static key_t_ test_vals[TEST_ARRAY_SIZE];

static int passed_verification;

static void generate_keys(void)
{
    double seed = SEED;
    double scale = (double)(MAX_KEY / 4);
    long i;

    for (i = 0; i < NUM_KEYS; i++) {
        double x = randlc(&seed, NPB_RAND_MULT);
        x += randlc(&seed, NPB_RAND_MULT);
        x += randlc(&seed, NPB_RAND_MULT);
        x += randlc(&seed, NPB_RAND_MULT);
        keys[i] = (key_t_)(scale * x);
    }
}

/* Expected rank of test key i during pass `it`, per the NPB tables. */
static long expected_rank(int i, int it)
{
#if defined(CLASS_S)
    return i <= 2 ? test_rank[i] + it : test_rank[i] - it;
#elif defined(CLASS_W)
    return i < 2 ? test_rank[i] + (it - 2) : test_rank[i] - it;
#else
    return i <= 2 ? test_rank[i] + (it - 1) : test_rank[i] - (it - 1);
#endif
}

static void rank_pass(int it)
{
    long i, k, start;

    keys[it] = (key_t_)it;
    keys[it + MAX_ITERATIONS] = (key_t_)(MAX_KEY - it);

    for (i = 0; i < TEST_ARRAY_SIZE; i++)
        test_vals[i] = keys[test_index[i]];

    /* bucket sort: histogram of the top key bits, then scatter */
    for (i = 0; i < NUM_BUCKETS; i++)
        bucket_count[i] = 0;
    for (i = 0; i < NUM_KEYS; i++)
        bucket_count[keys[i] >> BUCKET_SHIFT]++;
    start = 0;
    for (i = 0; i < NUM_BUCKETS; i++) {
        bucket_end[i] = start;          /* running insertion point */
        start += bucket_count[i];
    }
    for (i = 0; i < NUM_KEYS; i++) {
        key_t_ key = keys[i];
        bucketed[bucket_end[key >> BUCKET_SHIFT]++] = key;
    }
    /* bucket_end[b] is now one past the last key of bucket b */

    /*
     * Counting sort bucket by bucket: bucket b covers the key values
     * [b << shift, (b+1) << shift) and the keys bucketed[end(b-1), end(b)).
     * key_le[k] = (#keys in earlier buckets) + (#keys <= k in bucket b).
     */
    for (i = 0; i < NUM_BUCKETS; i++) {
        long lo = i << BUCKET_SHIFT;
        long hi = lo + (1L << BUCKET_SHIFT);
        long first = i > 0 ? bucket_end[i - 1] : 0;

        for (k = lo; k < hi; k++)
            key_le[k] = 0;
        for (k = first; k < bucket_end[i]; k++)
            key_le[bucketed[k]]++;
        key_le[lo] += (key_t_)first;
        for (k = lo + 1; k < hi; k++)
            key_le[k] += key_le[k - 1];
    }

    /* partial verification */
    for (i = 0; i < TEST_ARRAY_SIZE; i++) {
        long kv = test_vals[i];
        if (kv > 0 && kv <= NUM_KEYS - 1) {
            long rank = key_le[kv - 1];   /* #keys < kv */
            if (rank == expected_rank((int)i, it))
                passed_verification++;
            else
                printf("Failed partial verification: iteration %d, "
                       "test key %d\n", it, (int)i);
        }
    }
}

static void full_verify(void)
{
    long i, unsorted = 0;

    /*
     * bucketed[] holds every key and key_le[] their cumulative counts:
     * place each key at position --key_le[key] (stable for equal keys).
     * Walking bucketed[] backwards keeps the placement stable.
     */
    for (i = NUM_KEYS - 1; i >= 0; i--) {
        key_t_ key = bucketed[i];
        keys[--key_le[key]] = key;
    }
    for (i = 1; i < NUM_KEYS; i++)
        if (keys[i - 1] > keys[i])
            unsorted++;
    if (unsorted != 0)
        printf("Full_verify: number of keys out of sort: %ld\n", unsorted);
    else
        passed_verification++;
}

int main(void)
{
    int it, verified;
    double t, mops;

    printf("\n\n NAS Parallel Benchmarks (NPB3.3-SER, hexo C version)"
           " - IS Benchmark\n\n");
    printf(" Size:  %ld  (class %c)\n", (long)NUM_KEYS, NPB_CLASS);
    printf(" Iterations:   %d\n", MAX_ITERATIONS);

    npb_timer_clear(0);
    generate_keys();

    /* untimed warm-up pass; its verification count is discarded */
    rank_pass(1);
    passed_verification = 0;

    if (NPB_CLASS != 'S')
        printf("\n   iteration\n");

    npb_timer_start(0);
    for (it = 1; it <= MAX_ITERATIONS; it++) {
        hexo_check_migrate();
        if (NPB_CLASS != 'S')
            printf("        %d\n", it);
        rank_pass(it);
    }
    npb_timer_stop(0);
    t = npb_timer_read(0);

    full_verify();

    verified = passed_verification == 5 * MAX_ITERATIONS + 1;
    printf("\n Partial verification: %d of %d checks passed\n",
           passed_verification, 5 * MAX_ITERATIONS + 1);

    mops = t > 0.0 ? (double)MAX_ITERATIONS * (double)NUM_KEYS / t / 1000000.0
                   : 0.0;
    npb_print_results("IS", NPB_CLASS, (long)NUM_KEYS, MAX_ITERATIONS, t, mops,
                      "keys ranked", verified);
    return verified ? 0 : 1;
}
