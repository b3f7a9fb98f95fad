/* A job with state in every place a migration must carry: recursion, pointers into outer
   frames, function pointers, heap structures, and doubles live across migration points.
   argv[1] = rounds. The output depends only on the rounds, never on where it migrated. */
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

struct node { long value; struct node *next; };

static double harmonic(int n)
{
    double s = 0.0;
    for (int i = 1; i <= n; i++)
        s += 1.0 / i;
    return s;
}

static long depth_sum(int depth, long *outer_counter, double *outer_fp)
{
    long local = depth;
    if (depth == 0) {
        hexo_check_migrate();
        *outer_counter += 1;
        *outer_fp *= 1.0000001;
        return 0;
    }
    long below = depth_sum(depth - 1, outer_counter, outer_fp);
    return local + below;
}

static long square(long x) { return x * x; }
static long cube(long x) { return x * x * x; }

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    long (*ops[2])(long) = { square, cube };
    struct node *list = NULL;
    long counter = 0, checksum = 0;
    double fp = 1.0, h = 0.0;
    for (int r = 0; r < rounds; r++) {
        struct node *n = malloc(sizeof *n);
        n->value = ops[r % 2](r);
        n->next = list;
        list = n;
        h += harmonic(20000);
        checksum += depth_sum(r % 17, &counter, &fp);
        hexo_check_migrate();
    }
    long sum = 0;
    for (struct node *n = list; n; n = n->next)
        sum += n->value;
    printf("rounds=%d counter=%ld checksum=%ld list=%ld fp=%.15g h=%.15g\n",
           rounds, counter, checksum, sum, fp, h);
    return 0;
}
