/* atexit handlers (run in reverse order, after main returns or exit() is called) and exit
   codes 0-255. argv[1] = the exit code; argv[2] = "exit" calls exit() from a nested function
   instead of returning from main. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hexo_check_migrate(void);

static int code;

static void first(void) { printf("atexit: first registered, runs last (code %d)\n", code); }
static void second(void) { printf("atexit: second registered, runs first\n"); }

__attribute__((noinline)) static void leave(int c)
{
    hexo_check_migrate();
    printf("leaving with exit(%d)\n", c);
    exit(c);
}

int main(int argc, char **argv)
{
    code = argc > 1 ? atoi(argv[1]) : 0;
    atexit(first);
    atexit(second);
    hexo_check_migrate();
    if (argc > 2 && strcmp(argv[2], "exit") == 0)
        leave(code);
    printf("returning %d from main\n", code);
    return code;
}
