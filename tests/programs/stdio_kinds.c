/* What the C library sees of its stdio files: isatty and the fstat type of fds 0-2, then of
   fd 0 once closed. Reported on stderr after one migration point, so that a job restored
   elsewhere reports the files of the machine it resumed on. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migration_point.h"

static void report(int fd)
{
    struct stat st;
    int ok = fstat(fd, &st) == 0;
    fprintf(stderr, "fd %d: isatty %d fstat %d chr %d reg %d fifo %d\n", fd, isatty(fd), ok,
            ok && S_ISCHR(st.st_mode), ok && S_ISREG(st.st_mode), ok && S_ISFIFO(st.st_mode));
}

int main(void)
{
    hexo_check_migrate();
    for (int fd = 0; fd < 3; fd++)
        report(fd);
    close(0);
    report(0);
    return 0;
}
