/* <sys/resource.h> for hexo guests. newlib's struct rusage has only the two times; programs
   written for Linux also read ru_maxrss and the fault and switch counters, so the structure
   here has Linux's fields (libos/posix.c fills them). */
#ifndef _SYS_RESOURCE_H_
#define _SYS_RESOURCE_H_

#include <sys/time.h>

#define RUSAGE_SELF 0
#define RUSAGE_CHILDREN (-1)
#define RUSAGE_THREAD 1

struct rusage {
    struct timeval ru_utime;    /* user CPU time */
    struct timeval ru_stime;    /* system CPU time */
    long ru_maxrss;             /* peak memory in use, KiB */
    long ru_ixrss;
    long ru_idrss;
    long ru_isrss;
    long ru_minflt;
    long ru_majflt;
    long ru_nswap;
    long ru_inblock;
    long ru_oublock;
    long ru_msgsnd;
    long ru_msgrcv;
    long ru_nsignals;
    long ru_nvcsw;
    long ru_nivcsw;
};

int getrusage(int who, struct rusage *usage);

#endif
