/* Variadic definitions, va_copy and functions taking a va_list, with migration points before,
   inside (in a callback the variadic function is handed: migration waits until it returns)
   and after them. argv[1] = rounds. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hexo_check_migrate(void);

static long progress;

__attribute__((noinline)) static long step(long x)
{
    hexo_check_migrate();
    progress += x;
    return progress;
}

/* The sum of n ints; the running total goes through `each` (step(), a migration point,
   handed over by main as a callback). */
__attribute__((noinline)) long sum_ints(long (*each)(long), int n, ...)
{
    va_list ap;
    va_start(ap, n);
    long s = 0;
    for (int i = 0; i < n; i++)
        s += va_arg(ap, int);
    va_end(ap);
    return s + each(s) % 7;
}

/* Mixed types: a format of 'i' (int), 'l' (long), 'd' (double), 's' (string). */
__attribute__((noinline)) double mixed(const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    double acc = 0;
    for (const char *f = fmt; *f; f++) {
        switch (*f) {
        case 'i': acc += va_arg(ap, int); break;
        case 'l': acc += (double)va_arg(ap, long); break;
        case 'd': acc += va_arg(ap, double); break;
        case 's': acc += (double)strlen(va_arg(ap, const char *)); break;
        }
    }
    va_end(ap);
    double second = 0;                  /* the copy walks the same arguments again */
    for (const char *f = fmt; *f; f++) {
        switch (*f) {
        case 'i': second += va_arg(again, int); break;
        case 'l': second += (double)va_arg(again, long); break;
        case 'd': second += va_arg(again, double); break;
        case 's': second += (double)strlen(va_arg(again, const char *)); break;
        }
    }
    va_end(again);
    return acc + second / 1024;
}

/* A function taking a va_list, and the logging wrapper that most code bases have. */
__attribute__((noinline)) static int vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    return vsnprintf(buf, size, fmt, ap);
}

__attribute__((noinline)) void log_msg(const char *fmt, ...)
{
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("[log %2d] %s\n", n, buf);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 4;
    for (int r = 0; r < rounds; r++) {
        hexo_check_migrate();
        long s = sum_ints(step, 5, r, 2 * r, 3, -4, 5 + r);
        double m = mixed("idlsd", r, 0.25 * r, (long)r << 33, "hexo", -1.5);
        log_msg("round %d: sum %ld mixed %.6f progress %ld %s", r, s, m, progress,
                r % 2 ? "odd" : "even");
        hexo_check_migrate();
    }
    printf("done %ld\n", progress);
    return 0;
}
