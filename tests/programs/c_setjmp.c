/* setjmp/longjmp for error recovery, with migration points before, inside (in code that runs
   while the setjmp frame is on the stack: migration waits until it returns) and after.
   argv[1] = rounds. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

static jmp_buf recover;
static long checksum;

__attribute__((noinline)) static void parse(int depth, int fail_at)
{
    hexo_check_migrate();
    checksum = checksum * 31 + depth;
    if (depth == fail_at)
        longjmp(recover, depth + 100);
    if (depth < 6)
        parse(depth + 1, fail_at);
}

/* Runs parse() and catches its error; volatile locals keep their values across longjmp. */
__attribute__((noinline)) int attempt(int round)
{
    volatile int tries = 0;
    volatile double weight = 0.5 * round;
    int code = setjmp(recover);
    tries++;
    if (code == 0) {
        parse(0, round % 8);
        return 0;
    }
    sigjmp_buf again;
    if (sigsetjmp(again, 1) == 0)
        siglongjmp(again, 0);              /* value 0 comes back as 1 */
    return code * 10 + tries + (int)weight;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 4;
    for (int r = 0; r < rounds; r++) {
        hexo_check_migrate();
        int result = attempt(r);
        hexo_check_migrate();
        printf("round %d: %d checksum %ld\n", r, result, checksum);
    }
    return 0;
}
