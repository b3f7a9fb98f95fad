/*
 * montecarlo.c - Monte-Carlo integration: pi from random points in the
 * unit square, and the integral of x^2 y over it, in batches.
 *
 * Verification from the analytic answers (pi and 1/6): each estimate must
 * lie within 5 standard errors of the true value, the standard errors
 * computed from the samples themselves.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"

#define BATCHES BY_CLASS(32, 64, 256)
#define PER_BATCH BY_CLASS(16384, 262144, 1048576)
#define TRUE_PI 3.14159265358979323846

int main(void)
{
    unsigned long long seed = 314159265ULL;
    long inside = 0, n = 0, k;
    double sum = 0.0, sum2 = 0.0, x, y, f, pi, pi_err, mean, mean_err, p;
    int b, ok;

    printf(" Monte Carlo: %d batches of %d points\n", BATCHES, PER_BATCH);
    for (b = 0; b < BATCHES; b++) {
        hexo_check_migrate();
        for (k = 0; k < PER_BATCH; k++) {
            x = corpus_uniform(&seed);
            y = corpus_uniform(&seed);
            inside += x * x + y * y < 1.0;
            f = x * x * y;
            sum += f;
            sum2 += f * f;
        }
        n += PER_BATCH;
    }
    p = (double)inside / (double)n;
    pi = 4.0 * p;
    pi_err = 4.0 * sqrt(p * (1.0 - p) / (double)n);
    mean = sum / (double)n;
    mean_err = sqrt((sum2 / (double)n - mean * mean) / (double)n);
    printf(" %ld of %ld points inside: pi ~ %.10f +- %.2e (error %.2e)\n", inside, n, pi, pi_err,
           fabs(pi - TRUE_PI));
    printf(" integral of x^2 y ~ %.10f +- %.2e (error %.2e)\n", mean, mean_err,
           fabs(mean - 1.0 / 6.0));
    ok = fabs(pi - TRUE_PI) < 5.0 * pi_err && fabs(mean - 1.0 / 6.0) < 5.0 * mean_err;
    return corpus_verdict("MONTECARLO", ok);
}
