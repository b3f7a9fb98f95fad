/* <time.h> for hexo guests: newlib's, with the POSIX clocks and sleeps that the library OS
   provides (libos/posix.c) declared. newlib declares them only for RTEMS; HPC codes time
   themselves with clock_gettime(CLOCK_MONOTONIC) and C11's timespec_get. */
#ifndef _POSIX_TIMERS
#define _POSIX_TIMERS 1
#endif
#ifndef _POSIX_MONOTONIC_CLOCK
#define _POSIX_MONOTONIC_CLOCK 200112L
#endif
#ifndef _POSIX_CPUTIME
#define _POSIX_CPUTIME 1
#endif
#ifndef _POSIX_THREAD_CPUTIME
#define _POSIX_THREAD_CPUTIME 1
#endif
#ifndef _POSIX_CLOCK_SELECTION
#define _POSIX_CLOCK_SELECTION 200112L
#endif

#include_next <time.h>

#ifndef HEXO_TIME_H
#define HEXO_TIME_H
#ifndef TIME_UTC
#define TIME_UTC 1
int timespec_get(struct timespec *ts, int base);
#endif
#endif
