/* Shapes of public C mini-apps that once could not be built migratable: an options parser
   returning a large struct by value (x86-64 keeps the incoming sret pointer in a
   callee-saved register until it returns it in rax) whose error branches call a usage()
   that never returns but reaches a migration point (the code after such a call is another
   block's), and a time-step function keeping a 4-double vector live across its migration
   points (its slot must not make the frame realign its stack pointer), called with more
   arguments than registers hold (x86-64 must not push them: the stack pointer after such a
   call is not the one the caller's frame size gives until it pops them).
   argv: -n STEPS -s SEED [-v]. The output depends only on the arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hexo_check_migrate(void);

typedef double v4d __attribute__((vector_size(32)));

typedef struct {
    long steps, seed;
    int verbose;
    double scale[4];
    const char *mode;
    char label[24];
} Options;

typedef struct {
    double sum, peak;
    long count;
    double acc[4];
} Tally;

__attribute__((noreturn)) static void usage(const char *why)
{
    hexo_check_migrate();
    fprintf(stderr, "usage: struct_return -n STEPS -s SEED [-v] (%s)\n", why);
    exit(2);
}

__attribute__((noinline)) static Options parse(int argc, char **argv)
{
    Options o;
    memset(&o, 0, sizeof o);
    o.steps = 8;
    o.seed = 1;
    o.mode = "plain";
    for (int k = 0; k < 4; k++)
        o.scale[k] = 1.0 + 0.25 * k;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n")) {
            if (++i >= argc)
                usage("-n needs a value");
            o.steps = atol(argv[i]);
            if (o.steps <= 0)
                usage("STEPS must be positive");
        } else if (!strcmp(argv[i], "-s")) {
            if (++i >= argc)
                usage("-s needs a value");
            o.seed = atol(argv[i]);
        } else if (!strcmp(argv[i], "-v")) {
            o.verbose = 1;
            o.mode = "verbose";
        } else {
            usage("unknown option");
        }
    }
    snprintf(o.label, sizeof o.label, "run-%ld-%ld", o.steps, o.seed);
    return o;
}

__attribute__((noinline)) static double noise(long *state)
{
    hexo_check_migrate();
    *state = *state * 6364136223846793005L + 1442695040888963407L;
    return (double)((unsigned long)*state >> 11) / 9007199254740992.0;
}

__attribute__((noinline)) static double draw(double bias, int round, long lo, long hi,
                                             long *state, const double *scale, double *last,
                                             int *rounds, const long *seed, long *draws,
                                             double *sum, int clamp, int mix, long limit)
{
    double x = noise(state) * scale[round % 4] / scale[3] + bias;
    if (clamp && x > 1.0)
        x -= 1.0;
    *last = x;
    *rounds += mix;
    *draws += (lo + hi + *seed) % 2 + 1 > limit ? 0 : 1;
    *sum += x * 0.0;
    return x;
}

/* Returns a Tally by value; `acc` is a vector value live across every call to noise(). */
__attribute__((noinline)) static Tally advance(const Options *o, long *state, Tally t)
{
    v4d acc = {t.acc[0], t.acc[1], t.acc[2], t.acc[3]};
    v4d scale = {o->scale[0], o->scale[1], o->scale[2], o->scale[3]};
    double last = 0.0, ignored = 0.0;
    int rounds = 0;
    long draws = 0;
    for (long i = 0; i < 16; i++) {
        double x = draw(0.0, (int)i, i, t.count, state, o->scale, &last, &rounds, &o->seed,
                        &draws, &ignored, 0, 1, 1L << 40);
        v4d d = {x, x * x, 1.0 - x, x * 0.5};
        acc = acc * 0.5 + d * scale;
        t.sum += x;
        if (x > t.peak)
            t.peak = x;
        t.count++;
    }
    for (int k = 0; k < 4; k++)
        t.acc[k] = acc[k];
    return t;
}

int main(int argc, char **argv)
{
    Options o = parse(argc, argv);
    long state = o.seed;
    Tally t = {0};
    for (long s = 0; s < o.steps; s++) {
        t = advance(&o, &state, t);
        if (o.verbose)
            printf("step %ld: sum %.17g peak %.17g\n", s, t.sum, t.peak);
    }
    printf("%s %s: %ld draws, sum %.17g, peak %.17g\n", o.label, o.mode, t.count, t.sum, t.peak);
    printf("acc %.17g %.17g %.17g %.17g\n", t.acc[0], t.acc[1], t.acc[2], t.acc[3]);
    return 0;
}
