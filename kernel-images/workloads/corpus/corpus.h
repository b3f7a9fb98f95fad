/*
 * corpus.h - what hexo's corpus programs share: the problem class, the
 * migration point, a deterministic random generator and the verdict line.
 *
 * Build with exactly one of -DCLASS_S (seconds under emulation, for tests),
 * -DCLASS_W or -DCLASS_A (benchmarks).
 */
#ifndef HEXO_CORPUS_H
#define HEXO_CORPUS_H

#include <stdio.h>

#if defined(CLASS_S) + defined(CLASS_W) + defined(CLASS_A) != 1
#error "define exactly one of CLASS_S, CLASS_W, CLASS_A"
#endif

#if defined(CLASS_S)
#define CORPUS_CLASS 'S'
#define BY_CLASS(s, w, a) (s)
#elif defined(CLASS_W)
#define CORPUS_CLASS 'W'
#define BY_CLASS(s, w, a) (w)
#else
#define CORPUS_CLASS 'A'
#define BY_CLASS(s, w, a) (a)
#endif

/* Migration points: in a hexo unikernel hexo_check_migrate() may checkpoint the job; in a
   native build it does nothing. */
#if defined(__has_include)
#if __has_include(<hexo.h>)
#include <hexo.h>
#define CORPUS_HAVE_HEXO 1
#endif
#endif
#ifndef CORPUS_HAVE_HEXO
static inline void hexo_check_migrate(void) {}
#endif

/* 64-bit linear congruential generator (Knuth's MMIX constants); the top 53 bits. */
static inline unsigned long long corpus_rand53(unsigned long long *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 11;
}

/* a uniform deviate in [0, 1) */
static inline double corpus_uniform(unsigned long long *state)
{
    return (double)corpus_rand53(state) * (1.0 / 9007199254740992.0);
}

/* The last line of every corpus program; the exit status says the same. */
static inline int corpus_verdict(const char *name, int ok)
{
    printf(" %s class %c: VERIFICATION %s\n", name, CORPUS_CLASS, ok ? "SUCCESSFUL" : "FAILED");
    return ok ? 0 : 1;
}

#endif /* HEXO_CORPUS_H */
